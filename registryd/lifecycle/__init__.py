"""Repository lifecycle policies (issue 12): immutable tags, and the
``lifecycle`` configuration section they come from.

Policy lives here; the storage model enforces what it is handed
(L{registryd.storage.registry.Registry}'s C{immutable_tags}) and removes
through its vacuum.
"""

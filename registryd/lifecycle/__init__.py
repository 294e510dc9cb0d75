"""Repository lifecycle policies (issue 12): immutable tags, and the
``lifecycle`` configuration section they come from.

Policy lives here; the storage model enforces what it is handed
(``registryd.storage.registry.Registry``'s ``immutable_tags``) and removes
through its vacuum.
"""

"""Repository and tag patterns: ``*`` matches within one path component,
``**`` across components (``team/**`` is everything below ``team/``).

The access rules (registryd.auth.access) and the lifecycle rules
(registryd.lifecycle) speak this one language; it depends on nothing, so
both can use it without importing each other.
"""

import re


def compile_pattern(pattern):
    """A regex source for a repository pattern (without ``${user}``)."""
    parts = re.split(r"(\*\*|\*)", pattern)
    source = []
    for part in parts:
        if part == "**":
            source.append(".*")
        elif part == "*":
            source.append("[^/]*")
        else:
            source.append(re.escape(part))
    return "".join(source)

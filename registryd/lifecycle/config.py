"""The ``lifecycle`` configuration section (registryd's own), validated::

    lifecycle:
      immutable:
        - repository: "team/**"        # the access rules' patterns
          tags: ["v*", "release-*"]

Like ``registryd.auth.config``, it is handed the config module's helpers
(C{h}) so its errors name keys the same way.
"""

import re

import attr

from registryd.lifecycle.immutable import ImmutableRule, ImmutableTags

_REPOSITORY_PATTERN = re.compile(r"[a-z0-9._\-/*]+")
_TAG_PATTERN = re.compile(r"[A-Za-z0-9_.\-*]{1,128}")


@attr.s(frozen=True)
class LifecycleConfig:
    #: registryd.lifecycle.immutable.ImmutableTags
    immutable = attr.ib(factory=ImmutableTags)


def _join(path, key):
    return f"{path}.{key}" if path else key


def parse_lifecycle(value, path, h):
    found = {}

    def immutable(item, item_path):
        if not isinstance(item, list):
            raise h.ConfigError(item_path, f"expected a list of rules, got {h._describe(item)}")
        found["immutable"] = ImmutableTags(
            _parse_immutable_rule(h, rule, f"{item_path}[{index}]") for index, rule in enumerate(item)
        )

    h._walk(value, path, {"immutable": immutable})
    return LifecycleConfig(**found)


def _pattern(h, value, path, grammar, what):
    h._string(value, path)
    if not grammar.fullmatch(value):
        raise h.ConfigError(path, f"expected a {what} pattern ('*', '**' as in auth.access), got {value!r}")
    return value


def _parse_immutable_rule(h, value, path):
    found = {}

    def repository(item, item_path):
        found["repository"] = _pattern(h, item, item_path, _REPOSITORY_PATTERN, "repository name")

    def tags(item, item_path):
        if not isinstance(item, list) or not item:
            raise h.ConfigError(item_path, f"expected a list of tag patterns, got {h._describe(item)}")
        found["tags"] = [
            _pattern(h, tag, f"{item_path}[{index}]", _TAG_PATTERN, "tag")
            for index, tag in enumerate(item)
        ]

    h._walk(value, path, {"repository": repository, "tags": tags})
    for key in ("repository", "tags"):
        if key not in found:
            raise h.ConfigError(_join(path, key), "required")
    return ImmutableRule(where=path, **found)

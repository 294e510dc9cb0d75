"""The ``lifecycle`` configuration section (registryd's own), validated::

    lifecycle:
      immutable:
        - repository: "team/**"        # the access rules' patterns
          tags: ["v*", "release-*"]
      quotas:
        - {repository: "team/**", bytes: 50GiB, repositories: 100}
      quota: {bytes: 2TiB}             # the whole registry
      retention:
        interval: 24h                  # absent: only on demand
        rules:
          - repository: "ci/**"
            keep: {newest: 10, pushedwithin: 720h, pulledwithin: 168h, tags: [latest, "v*"]}
            untagged: delete           # or keep (the default)

Like ``registryd.auth.config``, it is handed the config module's helpers
(C{h}) so its errors name keys the same way.
"""

import re

import attr

from registryd.lifecycle.immutable import ImmutableRule, ImmutableTags
from registryd.lifecycle.quotas import Quota
from registryd.lifecycle.retention import Keep, RetentionConfig, RetentionRule

_REPOSITORY_PATTERN = re.compile(r"[a-z0-9._\-/*]+")
_TAG_PATTERN = re.compile(r"[A-Za-z0-9_.\-*]{1,128}")


@attr.s(frozen=True)
class LifecycleConfig:
    #: registryd.lifecycle.immutable.ImmutableTags
    immutable = attr.ib(factory=ImmutableTags)
    #: registryd.lifecycle.quotas.Quota, lifecycle.quota's (repository '**') last
    quotas = attr.ib(default=(), converter=tuple)
    #: registryd.lifecycle.retention.RetentionConfig
    retention = attr.ib(factory=RetentionConfig)


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

    def quotas(item, item_path):
        if not isinstance(item, list):
            raise h.ConfigError(item_path, f"expected a list of quotas, got {h._describe(item)}")
        found["quotas"] = [
            _parse_quota(h, quota, f"{item_path}[{index}]", True) for index, quota in enumerate(item)
        ]

    def quota(item, item_path):
        found["quota"] = _parse_quota(h, item, item_path, False)

    def retention(item, item_path):
        found["retention"] = _parse_retention(h, item, item_path)

    h._walk(value, path, {"immutable": immutable, "quotas": quotas, "quota": quota,
                          "retention": retention})
    every = list(found.pop("quotas", []))
    if "quota" in found:
        every.append(found.pop("quota"))
    return LifecycleConfig(quotas=every, **found)


#: SIZE: bytes as an integer, or a number with a unit (``500MB``, ``50GiB``).
_SIZE = re.compile(r"([0-9]{1,15})(?:\.([0-9]{1,6}))? ?([KMGTP]i?B|B)?", re.IGNORECASE)
_UNITS = {"B": 1}
for _power, _letter in enumerate("KMGTP", start=1):
    _UNITS[f"{_letter}B"] = 1000 ** _power
    _UNITS[f"{_letter}IB"] = 1024 ** _power


def parse_size(h, value, path):
    """A SIZE: a non-negative integer of bytes, or a string such as
    ``500MB`` or ``1.5GiB`` (KB, MB... are powers of 1000; KiB, MiB... of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise h.ConfigError(path, f"expected a size in bytes (0 or more), got {value}")
        return value
    if not isinstance(value, str):
        raise h.ConfigError(path, f"expected a size such as 500MB or 50GiB, got {h._describe(value)}")
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise h.ConfigError(path, f"expected a size such as 500MB or 50GiB, got {value!r}")
    whole, fraction, unit = match.groups()
    scale = _UNITS[(unit or "B").upper()]
    return int(whole) * scale + (int(fraction) * scale // 10 ** len(fraction) if fraction else 0)


def _positive(h, value, path):
    if h._integer(value, path) < 1:
        raise h.ConfigError(path, f"expected a positive number, got {value}")
    return value


def _parse_quota(h, value, path, with_repository):
    found = {}

    def repository(item, item_path):
        found["repository"] = _pattern(h, item, item_path, _REPOSITORY_PATTERN, "repository name")

    def size(item, item_path):
        found["bytes"] = parse_size(h, item, item_path)

    def repositories(item, item_path):
        found["repositories"] = _positive(h, item, item_path)

    handlers = {"bytes": size, "repositories": repositories}
    if with_repository:
        handlers["repository"] = repository
    h._walk(value, path, handlers)
    if with_repository and "repository" not in found:
        raise h.ConfigError(_join(path, "repository"), "required")
    if "bytes" not in found and "repositories" not in found:
        raise h.ConfigError(path, "expected bytes, repositories or both")
    return Quota(repository=found.pop("repository", "**"), where=path, **found)


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


def _parse_retention(h, value, path):
    found = {}

    def interval(item, item_path):
        seconds = h._duration(item, item_path)
        if 0 < seconds < 1:
            raise h.ConfigError(item_path, f"must be 0 (never) or at least 1s, got {item!r}")
        found["interval"] = seconds or None

    def rules(item, item_path):
        if not isinstance(item, list):
            raise h.ConfigError(item_path, f"expected a list of rules, got {h._describe(item)}")
        found["rules"] = [
            _parse_retention_rule(h, rule, f"{item_path}[{index}]") for index, rule in enumerate(item)
        ]

    h._walk(value, path, {"interval": interval, "rules": rules})
    return RetentionConfig(**found)


def _parse_retention_rule(h, value, path):
    found = {}

    def repository(item, item_path):
        found["repository"] = _pattern(h, item, item_path, _REPOSITORY_PATTERN, "repository name")

    def keep(item, item_path):
        found["keep"] = _parse_keep(h, item, item_path)

    def untagged(item, item_path):
        found["delete_untagged"] = h._choice(item, item_path, ("keep", "delete")) == "delete"

    h._walk(value, path, {"repository": repository, "keep": keep, "untagged": untagged})
    for key in ("repository", "keep"):
        if key not in found:
            raise h.ConfigError(_join(path, key), "required")
    return RetentionRule(where=path, **found)


def _parse_keep(h, value, path):
    found = {}

    def newest(item, item_path):
        found["newest"] = _positive(h, item, item_path)

    def within(key):
        def handler(item, item_path):
            found[key] = h._duration(item, item_path)

        return handler

    def tags(item, item_path):
        if not isinstance(item, list) or not item:
            raise h.ConfigError(item_path, f"expected a list of tag patterns, got {h._describe(item)}")
        found["tags"] = [
            _pattern(h, tag, f"{item_path}[{index}]", _TAG_PATTERN, "tag") for index, tag in enumerate(item)
        ]

    h._walk(value, path, {"newest": newest, "pushedwithin": within("pushed_within"),
                          "pulledwithin": within("pulled_within"), "tags": tags})
    if not found:
        raise h.ConfigError(path, "expected at least one of newest, pushedwithin, pulledwithin, tags "
                                  "(a rule keeping nothing would delete every tag)")
    return Keep(**found)

"""The ``lifecycle`` section (registryd's own): immutable tags, quotas and
retention (issue 12)::

    lifecycle:
      immutable:
        - repository: "team/**"        # the access rules' patterns
          tags: ["v*", "release-*"]
      quotas:
        - {repository: "team/**", bytes: 50GiB, repositories: 100}
      quota: {bytes: 2TiB}             # the whole registry
      retention:
        interval: 24h                  # absent or 0: only on demand
        rules:
          - repository: "ci/**"
            keep: {newest: 10, pushedwithin: 720h, pulledwithin: 168h, tags: [latest, "v*"]}
            untagged: delete           # or keep (the default)

Each section's finish builds the policy objects the registry uses
(registryd.lifecycle), each knowing where it is written
(``lifecycle.quotas[0]``) so refusals and reports can name it.
"""

import re

import attr

from registryd.config.errors import ConfigError, describe
from registryd.config.schema import ListOf, SectionOf, as_tuple, extra, section, setting
from registryd.config.types import Choice, Custom, Duration, Integer, Pattern
from registryd.lifecycle.immutable import ImmutableRule, ImmutableTags
from registryd.lifecycle.quotas import Quota
from registryd.lifecycle.retention import Keep, RetentionConfig, RetentionRule

_REPOSITORY = Pattern(
    r"[a-z0-9._\-/*]+",
    "expected a repository name pattern ('*', '**' as in auth.access), got {value!r}",
    name="repository pattern",
)
_TAG = Pattern(
    r"[A-Za-z0-9_.\-*]{1,128}",
    "expected a tag pattern ('*' as in auth.access), got {value!r}",
    name="tag pattern",
)
_TAGS = ListOf(_TAG, message="expected a list of tag patterns, got {got}", nonempty=True)

#: SIZE: bytes as an integer, or a number with a unit (``500MB``, ``50GiB``).
_SIZE = re.compile(r"([0-9]{1,15})(?:\.([0-9]{1,6}))? ?([KMGTP]i?B|B)?", re.IGNORECASE)
_UNITS = {"B": 1}
for _power, _letter in enumerate("KMGTP", start=1):
    _UNITS[f"{_letter}B"] = 1000**_power
    _UNITS[f"{_letter}IB"] = 1024**_power


def parse_size(value, path):
    """A SIZE: a non-negative integer of bytes, or a string such as
    ``500MB`` or ``1.5GiB`` (KB, MB... are powers of 1000; KiB, MiB... of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(path, f"expected a size in bytes (0 or more), got {value}")
        return value
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a size such as 500MB or 50GiB, got {describe(value)}")
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ConfigError(path, f"expected a size such as 500MB or 50GiB, got {value!r}")
    whole, fraction, unit = match.groups()
    scale = _UNITS[(unit or "B").upper()]
    return int(whole) * scale + (int(fraction) * scale // 10 ** len(fraction) if fraction else 0)


_BYTES = Custom(parse_size, "size")


def _interval(value, path):
    """0 (or absent): only on demand; else at least a second."""
    seconds = Duration().check(value, path)
    if 0 < seconds < 1:
        raise ConfigError(path, f"must be 0 (never) or at least 1s, got {value!r}")
    return seconds or None


@section(finish=lambda found: ImmutableRule(where=found.path, **found.values))
@attr.s(frozen=True, slots=True, eq=False)
class ImmutableRuleSection:
    """lifecycle.immutable[]: tags that may not move nor go once pushed."""

    repository = setting(
        "repository", _REPOSITORY, "The repositories (a pattern).", required="required"
    )
    tags = setting("tags", _TAGS, "The tags (patterns).", required="required")


def _quota(found, repository="**"):
    if "bytes" not in found.values and "repositories" not in found.values:
        raise ConfigError(found.path, "expected bytes, repositories or both")
    values = dict(found.values)
    return Quota(repository=values.pop("repository", repository), where=found.path, **values)


@section(finish=_quota)
@attr.s(frozen=True, slots=True, eq=False)
class QuotaSection:
    """lifecycle.quotas[]: a bound on the repositories matching a pattern."""

    repository = setting(
        "repository", _REPOSITORY, "The repositories (a pattern).", required="required"
    )
    bytes = setting("bytes", _BYTES, "Bytes they may hold together (deduplicated).", default=None)
    repositories = setting(
        "repositories", Integer(minimum=1), "How many there may be.", default=None
    )


@section(finish=_quota)
@attr.s(frozen=True, slots=True, eq=False)
class GlobalQuotaSection:
    """lifecycle.quota: a bound on the whole registry."""

    bytes = setting("bytes", _BYTES, "Bytes the registry may hold (deduplicated).", default=None)
    repositories = setting(
        "repositories", Integer(minimum=1), "How many repositories.", default=None
    )


def _keep(found):
    if not found.values:
        raise ConfigError(
            found.path,
            "expected at least one of newest, pushedwithin, pulledwithin, "
            "tags (a rule keeping nothing would delete every tag)",
        )
    return Keep(**found.values)


@section(finish=_keep)
@attr.s(frozen=True, slots=True, eq=False)
class KeepSection:
    """lifecycle.retention.rules[].keep: a tag stays if any clause holds."""

    newest = setting("newest", Integer(minimum=1), "The N most recently pushed tags.", default=None)
    pushed_within = setting("pushedwithin", Duration(), "Tags pushed that recently.", default=None)
    pulled_within = setting(
        "pulledwithin",
        Duration(),
        "Tags pulled (or whose digest was pulled) that recently.",
        default=None,
    )
    tags = setting("tags", _TAGS, "Tags with these names (patterns).", default=())


def _retention_rule(found):
    values = dict(found.values)
    delete_untagged = values.pop("untagged", "keep") == "delete"
    return RetentionRule(where=found.path, delete_untagged=delete_untagged, **values)


@section(finish=_retention_rule)
@attr.s(frozen=True, slots=True, eq=False)
class RetentionRuleSection:
    """lifecycle.retention.rules[]: the first rule matching a repository applies."""

    repository = setting(
        "repository", _REPOSITORY, "The repositories (a pattern).", required="required"
    )
    keep = setting("keep", SectionOf(KeepSection), "Which tags stay.", required="required")
    untagged = setting(
        "untagged",
        Choice("keep", "delete"),
        "delete: also manifests no remaining tag names.",
        default="keep",
    )


@section(finish=lambda found: RetentionConfig(**found.values))
@attr.s(frozen=True, slots=True, eq=False)
class RetentionSection:
    """lifecycle.retention: which tags and manifests go, and when."""

    interval = setting(
        "interval",
        Custom(_interval, "duration"),
        "Time between runs; 0 or absent: only on demand.",
        default=None,
    )
    rules = setting(
        "rules",
        ListOf(SectionOf(RetentionRuleSection), message="expected a list of rules, got {got}"),
        "The rules, tried in order.",
        default=(),
    )


def _lifecycle(found):
    quotas = list(found.values.get("quotas", ()))
    if found.extras.get("quota") is not None:
        quotas.append(found.extras["quota"])
    return found.build(
        immutable=ImmutableTags(found.values.get("immutable", ())),
        quotas=quotas,
    )


@section(
    extra("quota", SectionOf(GlobalQuotaSection), "A bound on the whole registry.", own=True),
    finish=_lifecycle,
)
@attr.s(frozen=True, slots=True)
class LifecycleConfig:
    """lifecycle (registryd's own): immutable tags, quotas, retention."""

    #: registryd.lifecycle.immutable.ImmutableTags
    immutable = setting(
        "immutable",
        ListOf(SectionOf(ImmutableRuleSection), message="expected a list of rules, got {got}"),
        "Tags that cannot be moved nor deleted once pushed.",
        factory=ImmutableTags,
        own=True,
    )
    #: registryd.lifecycle.quotas.Quota, lifecycle.quota's (repository '**') last
    quotas = setting(
        "quotas",
        ListOf(SectionOf(QuotaSection), message="expected a list of quotas, got {got}"),
        "Bounds on bytes and repositories per pattern.",
        default=(),
        converter=as_tuple,
        own=True,
    )
    #: registryd.lifecycle.retention.RetentionConfig
    retention = setting(
        "retention",
        SectionOf(RetentionSection),
        "Which tags and manifests go.",
        factory=RetentionConfig,
        own=True,
    )

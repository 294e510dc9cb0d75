"""Retention rules: which tags and manifests of a repository go.

``lifecycle.retention.rules`` are tried in order; the first whose
``repository`` pattern matches a repository applies to it.  A tag is kept
if any clause of the rule's ``keep`` holds for it (and always when it is
immutable, lifecycle.immutable):

- ``newest: N``: it is among the N most recently pushed tags;
- ``pushedwithin: DURATION``: it was pushed that recently;
- ``pulledwithin: DURATION``: it, or the digest it names, was pulled that
  recently;
- ``tags: [PATTERN...]``: its name matches.

Every other tag is deleted.  With ``untagged: delete``, so is each
manifest that no remaining tag names, unless it is a child of an index
that stays or a referrer of a manifest that stays (garbage collection's
rule for ``--delete-untagged``).  Blobs are garbage collection's.

This module decides only (``evaluate``, pure, from ``TagFacts`` and
``ManifestFacts``); ``registryd.lifecycle.retention_runner`` gathers the
facts through the storage model, applies the decisions and reports.
"""

import re

import attr

from registryd.patterns import compile_pattern


@attr.s(frozen=True)
class Keep:
    """A rule's ``keep`` clauses; None: the clause is absent."""

    newest = attr.ib(default=None)
    pushed_within = attr.ib(default=None)  # seconds
    pulled_within = attr.ib(default=None)  # seconds
    tags = attr.ib(default=(), converter=tuple)  # patterns as written

    def __attrs_post_init__(self):
        source = "|".join(f"(?:{compile_pattern(tag)})" for tag in self.tags)
        object.__setattr__(self, "_tags", re.compile(source) if self.tags else None)

    def matches_tag(self, tag):
        return self._tags is not None and bool(self._tags.fullmatch(tag))

    def __eq__(self, other):
        return isinstance(other, Keep) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def _key(self):
        return (self.newest, self.pushed_within, self.pulled_within, self.tags)


@attr.s(frozen=True, eq=False)
class RetentionRule:
    repository = attr.ib()  # the pattern as written
    keep = attr.ib()
    delete_untagged = attr.ib(default=False)
    where = attr.ib(default="lifecycle.retention.rules")

    def __attrs_post_init__(self):
        object.__setattr__(self, "_pattern", re.compile(compile_pattern(self.repository)))

    def applies_to(self, name):
        return bool(self._pattern.fullmatch(name))

    def _key(self):
        return (self.repository, self.keep, self.delete_untagged, self.where)

    def __eq__(self, other):
        return isinstance(other, RetentionRule) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())


@attr.s(frozen=True)
class RetentionConfig:
    #: seconds between scheduled runs; None: only on demand
    interval = attr.ib(default=None)
    rules = attr.ib(default=(), converter=tuple)

    def rule_for(self, name):
        for rule in self.rules:
            if rule.applies_to(name):
                return rule
        return None


@attr.s(frozen=True)
class TagFacts:
    tag = attr.ib()
    digest = attr.ib()  # str
    pushed = attr.ib()  # POSIX seconds, or None (unknown: counts as oldest)
    pulled = attr.ib(default=None)  # the latest pull of the tag or its digest
    protected = attr.ib(default=None)  # the immutable rule's description, or None


@attr.s(frozen=True)
class ManifestFacts:
    digest = attr.ib()  # str
    children = attr.ib(default=(), converter=tuple)  # digests (str) of an index's manifests
    subject = attr.ib(default=None)  # digest (str) this manifest refers to


@attr.s(frozen=True)
class Decision:
    """What happens to one tag or manifest, and why."""

    name = attr.ib()  # the tag, or the manifest's digest
    delete = attr.ib()
    reason = attr.ib()
    digest = attr.ib(default=None)  # for a tag: the digest it names


def _ago(seconds):
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{max(seconds, 0):.0f}s ago"


def _duration(seconds):
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"


def evaluate(rule, tags, manifests, now):
    """``(tag decisions, manifest decisions)``, each sorted by name, for a
    repository's ``tags`` (``TagFacts``) and ``manifests`` (``ManifestFacts``)
    under ``rule`` at time ``now``."""
    keep = rule.keep
    by_age = sorted(
        tags, key=lambda t: (-(t.pushed if t.pushed is not None else float("-inf")), t.tag)
    )
    rank = {facts.tag: index + 1 for index, facts in enumerate(by_age)}
    tag_decisions = []
    for facts in sorted(tags, key=lambda t: t.tag):
        reasons = []
        if facts.protected:
            reasons.append(f"immutable by {facts.protected}")
        if keep.newest is not None and rank[facts.tag] <= keep.newest:
            reasons.append(f"among the newest {keep.newest} (#{rank[facts.tag]})")
        if (
            keep.pushed_within is not None
            and facts.pushed is not None
            and now - facts.pushed <= keep.pushed_within
        ):
            reasons.append(
                f"pushed within {_duration(keep.pushed_within)} ({_ago(now - facts.pushed)})"
            )
        if (
            keep.pulled_within is not None
            and facts.pulled is not None
            and now - facts.pulled <= keep.pulled_within
        ):
            reasons.append(
                f"pulled within {_duration(keep.pulled_within)} ({_ago(now - facts.pulled)})"
            )
        if keep.matches_tag(facts.tag):
            reasons.append(f"tag matches {list(keep.tags)!r}")
        if reasons:
            tag_decisions.append(Decision(facts.tag, False, "; ".join(reasons), facts.digest))
            continue
        pushed = "unknown" if facts.pushed is None else _ago(now - facts.pushed)
        pulled = "never" if facts.pulled is None else _ago(now - facts.pulled)
        tag_decisions.append(
            Decision(
                facts.tag,
                True,
                f"no keep clause holds: #{rank[facts.tag]} newest, pushed {pushed}, pulled {pulled}",
                facts.digest,
            )
        )
    tagged = {}
    for decision in tag_decisions:
        if not decision.delete:
            tagged.setdefault(decision.digest, []).append(decision.name)
    manifest_decisions = _manifest_decisions(rule, manifests, tagged)
    return tag_decisions, manifest_decisions


def _manifest_decisions(rule, manifests, tagged):
    known = {facts.digest: facts for facts in manifests}
    staying = {}  # digest -> reason
    for digest, tag_names in tagged.items():
        if digest in known:
            staying[digest] = f"tagged {', '.join(sorted(tag_names))}"
    if not rule.delete_untagged:
        for digest in known:
            staying.setdefault(digest, "untagged: keep")
    # What stays keeps its children and its referrers, transitively.
    changed = True
    while changed:
        changed = False
        for facts in manifests:
            if facts.digest in staying:
                for child in facts.children:
                    if child in known and child not in staying:
                        staying[child] = f"child of {facts.digest}"
                        changed = True
            elif facts.subject is not None and facts.subject in staying:
                staying[facts.digest] = f"referrer of {facts.subject}"
                changed = True
    return [
        Decision(digest, False, staying[digest])
        if digest in staying
        else Decision(digest, True, "untagged")
        for digest in sorted(known)
    ]

"""Immutable tags: ``lifecycle.immutable`` rules.

A rule names repositories and tags with the access rules' patterns
(``*`` within a path component, ``**`` across; registryd.auth.access).  Once
a matching tag exists, it may not be moved to another digest nor deleted,
by a tag or digest DELETE, or with its repository; pushing the digest it
already names again succeeds, so clients that retry or re-push stay happy.
Every refusal is a 403 ``DENIED`` naming the rule, as written in the
configuration, so whoever hits it knows what to change.
"""

import re

import attr

from registryd import errors
from registryd.patterns import compile_pattern


@attr.s(frozen=True, eq=False)
class ImmutableRule:
    """One ``lifecycle.immutable`` entry."""

    repository = attr.ib()  # the pattern as written
    tags: tuple = attr.ib(converter=tuple)  # patterns as written
    #: where it is written, e.g. ``lifecycle.immutable[0]``
    where = attr.ib(default="lifecycle.immutable")

    def __attrs_post_init__(self):
        object.__setattr__(self, "_repository", re.compile(compile_pattern(self.repository)))
        object.__setattr__(
            self, "_tags", re.compile("|".join(f"(?:{compile_pattern(tag)})" for tag in self.tags))
        )

    def _key(self):
        return (self.repository, self.tags, self.where)

    def __eq__(self, other):
        return isinstance(other, ImmutableRule) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def protects(self, repository, tag):
        return bool(self._repository.fullmatch(repository) and self._tags.fullmatch(tag))

    def describe(self):
        return f"{self.where} (repository {self.repository!r}, tags {list(self.tags)!r})"


@attr.s(frozen=True)
class ImmutableTags:
    """All the rules; a tag is protected when any one matches it."""

    rules = attr.ib(default=(), converter=tuple)

    def __bool__(self):
        return bool(self.rules)

    def rule_for(self, repository, tag):
        """The first rule protecting ``tag`` of ``repository``, or None."""
        for rule in self.rules:
            if rule.protects(repository, tag):
                return rule
        return None

    def refusal(self, repository, tag, current, rule, wanted=None):
        """The DENIED error for changing protected tag ``tag``, which names
        ``current``: to ``wanted`` (a digest), or deleting it when None."""
        change = "deleted" if wanted is None else f"moved to {wanted}"
        detail = {
            "repository": repository,
            "tag": tag,
            "digest": str(current),
            "rule": rule.describe(),
        }
        return errors.Denied(
            f"tag {tag!r} of {repository} is immutable by {rule.describe()}: "
            f"it names {current} and cannot be {change}",
            detail=detail,
        )

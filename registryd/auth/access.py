"""Access control: which user may do what on which repository.

Distribution's htpasswd mode lets every authenticated user do everything;
that is :class:`AuthenticatedUsers`, the policy when no ``auth.access``
section is configured.  :class:`AccessRules` is registryd's own, so a small
team needs no separate token server: rules map users, groups and anonymous
callers to repository patterns and actions, and only grant (never deny), so
the actions a caller has on a repository are the union over every rule
that matches.

Patterns: ``*`` matches within one path component, ``**`` across
components (``team/**`` is everything below ``team/``), and ``${user}``
stands for the caller's own name, so ``${user}/**`` gives each user a
namespace of their own.
"""

import re

import attr
from zope.interface import implementer

from registryd.auth.scope import REPOSITORY_ACTIONS, expand
from registryd.interfaces import IAccessPolicy
from registryd.patterns import compile_pattern

USER_PLACEHOLDER = "${user}"


@attr.s(frozen=True)
class Rule:
    """One ``auth.access.rules`` entry (validated by ``registryd.config.auth``)."""

    repositories: tuple = attr.ib(converter=tuple)
    actions: frozenset = attr.ib(converter=frozenset)
    users = attr.ib(default=(), converter=tuple)
    groups = attr.ib(default=(), converter=tuple)
    anonymous = attr.ib(default=False)

    def __attrs_post_init__(self):
        fixed, personal = [], []
        for pattern in self.repositories:
            if USER_PLACEHOLDER in pattern:
                pieces = pattern.split(USER_PLACEHOLDER)
                personal.append([compile_pattern(piece) for piece in pieces])
            else:
                fixed.append(compile_pattern(pattern))
        matcher = re.compile("(?:" + "|".join(fixed) + ")") if fixed else None
        object.__setattr__(self, "_fixed", matcher)
        object.__setattr__(self, "_personal", personal)

    def applies_to(self, user, user_groups):
        if self.anonymous:
            return True
        if user is None:
            return False
        return "*" in self.users or user in self.users or bool(user_groups & set(self.groups))

    def matches(self, user, repository):
        if self._fixed is not None and self._fixed.fullmatch(repository):
            return True
        if user is None:
            return False
        for pieces in self._personal:
            source = re.escape(user).join(pieces)
            if re.fullmatch(source, repository):
                return True
        return False


@implementer(IAccessPolicy)
class AuthenticatedUsers:
    """Distribution's htpasswd semantics: any authenticated user may do
    anything; anonymous callers nothing."""

    def actions(self, user, repository):
        return frozenset(REPOSITORY_ACTIONS) if user is not None else frozenset()

    def may_list_catalog(self, user):
        return user is not None


@implementer(IAccessPolicy)
class AccessRules:
    """``auth.access``: ``rules`` (:class:`Rule` entries) and ``groups`` (name -> users)."""

    def __init__(self, rules, groups=None):
        self.rules = tuple(rules)
        self._groups_of = {}
        for group, members in (groups or {}).items():
            for member in members:
                self._groups_of.setdefault(member, set()).add(group)

    def groups_of(self, user):
        return frozenset(self._groups_of.get(user, ()))

    def actions(self, user, repository):
        user_groups = self.groups_of(user) if user is not None else frozenset()
        granted = set()
        for rule in self.rules:
            if rule.applies_to(user, user_groups) and rule.matches(user, repository):
                granted |= expand(rule.actions)
                if len(granted) == len(REPOSITORY_ACTIONS):
                    break
        return frozenset(granted)

    def may_list_catalog(self, user):
        """Any caller some rule applies to may list (a filtered) catalog."""
        user_groups = self.groups_of(user) if user is not None else frozenset()
        return any(rule.applies_to(user, user_groups) for rule in self.rules)

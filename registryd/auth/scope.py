"""Access requests and grants in the token specification's terms.

A request to the registry needs some *actions* on some *resources*: a blob
``GET`` needs ``pull`` on ``repository:<name>``, a push needs ``pull`` and
``push``, ``/v2/_catalog`` needs ``*`` on ``registry:catalog``.  The same
triples appear in three places, so they are one value type here:

* the ``scope`` of a ``WWW-Authenticate: Bearer`` challenge and of a token
  request (``repository:samalba/my-app:pull,push``; Distribution's scope
  grammar, where a name may hold one ``:`` for a registry port);
* the ``access`` claim of a JWT (``{"type", "name", "actions"}``);
* the actions an access policy grants a user on a repository.
"""

import re

import attr

PULL = "pull"
PUSH = "push"
DELETE = "delete"
ALL = "*"

#: The actions a repository has; ``*`` stands for all of them.
REPOSITORY_ACTIONS = (PULL, PUSH, DELETE)

REPOSITORY = "repository"
REGISTRY = "registry"
CATALOG = "catalog"

# Distribution's resource scope grammar (spec-auth-scope.md), each part
# matched whole: resourcetype [ '(' class ')' ] ':' resourcename ':'
# actions.  The name may contain one ':' (a hostname's port), so the scope
# is split on the first and the last ':'.
TYPE_PATTERN = r"[a-z0-9]+(?:\([a-z0-9]+\))?"
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# The grammar's separator ``-*`` written ``-+``: the same language, without
# a repeat nested in a repeat (which backtracks exponentially).
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*"
NAME_PATTERN = (
    rf"(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*(?::[0-9]+)?/)?"
    rf"{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*"
)
#: ``*`` is not in the grammar, but is what a token grants for the catalog.
ACTION_PATTERN = r"[a-z]*|\*"
_TYPE = re.compile(TYPE_PATTERN)
_NAME = re.compile(NAME_PATTERN)
_ACTION = re.compile(ACTION_PATTERN)


class ScopeInvalid(ValueError):
    """A scope string that does not follow the scope grammar."""


@attr.s(frozen=True, slots=True)
class Access:
    """Actions on one resource: ``Access("repository", "a/b", {"pull"})``."""

    type = attr.ib()
    name = attr.ib()
    actions: frozenset = attr.ib(converter=frozenset)

    @classmethod
    def repository(cls, name, *actions):
        return cls(REPOSITORY, name, actions)

    @classmethod
    def catalog(cls):
        return cls(REGISTRY, CATALOG, (ALL,))

    def scope(self):
        """``type:name:a,b`` with actions in a stable order (pull before push)."""
        order = {PULL: 0, PUSH: 1, DELETE: 2, ALL: 3}
        actions = sorted(self.actions, key=lambda a: (order.get(a, 9), a))
        return f"{self.type}:{self.name}:{','.join(actions)}"

    def claim(self):
        """The JWT ``access`` claim entry."""
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


def parse_scope(text):
    """One resource scope (``repository:a/b:pull,push``) as an :class:`Access`.

    A resource class (``repository(plugin)``) is dropped: Distribution treats
    it as the plain type.
    :raises ScopeInvalid: for anything off the grammar.
    """
    if not isinstance(text, str) or text.count(":") < 2:
        raise ScopeInvalid(f"scope {str(text)[:200]!r} is not type:name:actions")
    kind, rest = text.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    if not _TYPE.fullmatch(kind) or not _NAME.fullmatch(name):
        raise ScopeInvalid(f"scope {text[:200]!r} is not type:name:actions")
    kind = kind.split("(", 1)[0]
    parsed = [action for action in actions.split(",") if action]
    if any(not _ACTION.fullmatch(action) for action in parsed):
        raise ScopeInvalid(f"scope {text[:200]!r} has an invalid action")
    return Access(kind, name, parsed)


def parse_scopes(values):
    """Every scope in ``values``, each of which may hold several separated by
    spaces (the OAuth2 form); empty strings are skipped."""
    found = []
    for value in values:
        for item in value.split():
            found.append(parse_scope(item))
    return found


def parse_access_claim(claim):
    """A JWT ``access`` claim as a list of :class:`Access`.

    :raises ValueError: when it is not a list of {type, name, actions} objects.
    """
    if claim is None:
        return []
    if not isinstance(claim, list):
        raise ValueError("the access claim is not a list")
    found = []
    for entry in claim:
        if not isinstance(entry, dict):
            raise ValueError("an access claim entry is not an object")
        kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions", [])
        if not isinstance(kind, str) or not isinstance(name, str):
            raise ValueError("an access claim entry lacks a type or name")
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise ValueError("an access claim entry's actions are not a list of strings")
        found.append(Access(kind.split("(", 1)[0], name, actions))
    return found


def expand(actions):
    """Concrete repository actions, with ``*`` spelled out."""
    actions = frozenset(actions)
    if ALL in actions:
        return frozenset(REPOSITORY_ACTIONS)
    return actions


class AccessSet:
    """What a token grants: resource -> actions, ``*`` meaning all."""

    def __init__(self, accesses=()):
        self._granted = {}
        for access in accesses:
            key = (access.type, access.name)
            self._granted[key] = self._granted.get(key, frozenset()) | access.actions

    def allows(self, kind, name, action):
        actions = self._granted.get((kind, name), frozenset())
        return action in actions or ALL in actions

    def missing(self, needed):
        """The accesses of ``needed`` (:class:`Access` list) not fully granted,
        each reduced to the actions it lacks."""
        lacking = []
        for access in needed:
            absent = [a for a in access.actions if not self.allows(access.type, access.name, a)]
            if absent:
                lacking.append(Access(access.type, access.name, absent))
        return lacking

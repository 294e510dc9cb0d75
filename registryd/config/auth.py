"""The ``auth`` section (pure: no file is read).

Distribution's keys, with their meaning::

    auth:
      htpasswd: {realm, path}
      token: {realm, service, issuer, rootcertbundle, jwks, signingalgorithms,
              autoredirect, autoredirectpath}

and registryd's own, for a registry that is its own token server::

    auth:
      tokenserver: {key, certificate, expiration, refreshexpiration}
      access:
        groups: {name: [user, ...]}
        rules:
          - repositories: [pattern, ...]
            users: [user or "*", ...]     # "*": any authenticated user
            groups: [group, ...]
            anonymous: true               # everyone, logged in or not
            actions: [pull, push, delete] # or ["*"]

Allowed combinations: ``htpasswd`` (Basic; ``access`` optional),
``token`` (an external token server decides; no ``access``), or
``token`` + ``htpasswd`` + ``tokenserver`` (registryd issues the tokens
for its htpasswd users; ``access`` optional).  Files are loaded, and their
problems reported under the same key paths, by ``registryd.auth.create``.
The rules themselves are ``registryd.auth.access.Rule`` objects, imported
only when a file has rules, so that start-up without auth stays light.
"""

import re

import attr

from registryd.config.errors import ConfigError, join
from registryd.config.schema import (
    ListOf,
    SectionOf,
    as_tuple,
    extra,
    not_yet,
    section,
    setting,
)
from registryd.config.types import Boolean, Custom, Duration, Mapping, String

_REQUIRED_STRING = String(nonempty=True)


@section()
@attr.s(frozen=True)
class HtpasswdConfig:
    realm = setting(
        "realm", _REQUIRED_STRING, "The realm of the Basic challenge.", required="required"
    )
    path = setting(
        "path", _REQUIRED_STRING, "The htpasswd file (bcrypt entries).", required="required"
    )


def _algorithms(value, path):
    from registryd.auth.keys import ASYMMETRIC_ALGORITHMS, UNSUPPORTED_ALGORITHMS

    if not isinstance(value, list) or not value:
        raise ConfigError(path, "expected a list of algorithm names such as [RS256, ES256]")
    for index, name in enumerate(value):
        name_path = f"{path}[{index}]"
        String().check(name, name_path)
        if name in UNSUPPORTED_ALGORITHMS:
            raise ConfigError(
                name_path,
                f"{name} (a shared secret) is not supported; "
                "sign tokens with an RSA, EC or Ed25519 key",
            )
        if name not in ASYMMETRIC_ALGORITHMS:
            raise ConfigError(
                name_path, f"expected one of {', '.join(ASYMMETRIC_ALGORITHMS)}, got {name!r}"
            )
    return tuple(value)


def _absolute_path(value, path):
    String().check(value, path)
    if not value.startswith("/"):
        raise ConfigError(path, f"expected a path starting with '/', got {value!r}")
    return value


def _finish_token(found):
    realm = None if found.extras.get("autoredirect") else found.values.get("realm")
    return found.build(realm=realm)


@section(
    extra(
        "autoredirect",
        Boolean(),
        "The realm is this registry's own autoredirectpath.",
        default=False,
    ),
    finish=_finish_token,
)
@attr.s(frozen=True)
class TokenConfig:
    #: The token server URL, or None to point at registryd's own
    #: ``/auth/token`` at the request's base URL (autoredirect/tokenserver).
    realm = setting("realm", _REQUIRED_STRING, "The token server's URL.")
    service = setting(
        "service", _REQUIRED_STRING, "The audience of the tokens.", required="required"
    )
    issuer = setting("issuer", _REQUIRED_STRING, "The issuer of the tokens.", required="required")
    rootcertbundle = setting(
        "rootcertbundle", _REQUIRED_STRING, "PEM certificates whose keys sign tokens.", default=None
    )
    jwks = setting(
        "jwks", _REQUIRED_STRING, "A JWKS file of the keys that sign tokens.", default=None
    )
    algorithms = setting(
        "signingalgorithms",
        Custom(_algorithms, "list of algorithm names"),
        "The algorithms accepted; default: every supported one.",
        default=None,
    )
    autoredirectpath = setting(
        "autoredirectpath",
        Custom(_absolute_path, "path"),
        "The path of registryd's own token endpoint.",
        default="/auth/token",
    )


@section()
@attr.s(frozen=True)
class TokenServerConfig:
    key = setting(
        "key",
        String(),
        "PEM private key tokens are signed with.",
        required="required: the PEM private key tokens are signed with",
        own=True,
    )
    certificate = setting(
        "certificate", String(), "Adds x5c to tokens, for Distribution.", default=None, own=True
    )
    # The spec: never less than 60 seconds, for older clients.
    expiration = setting(
        "expiration",
        Duration(60, numbers="seconds", whole=True),
        "How long an access token lives.",
        default=300,
        own=True,
    )
    refreshexpiration = setting(
        "refreshexpiration",
        Duration(60, numbers="seconds", whole=True),
        "How long a refresh token lives.",
        default=30 * 24 * 3600,
        own=True,
    )


#: auth.access lists of names: users, groups, members.
_NAMES = ListOf(String(nonempty=True), "expected a list of strings, got {got}", nullable=False)
_PATTERN = re.compile(r"[a-z0-9._\-/*]+")


def _repositories(value, path):
    from registryd.auth.access import USER_PLACEHOLDER

    patterns = _NAMES.read(value, path)
    if not patterns:
        raise ConfigError(path, "expected at least one repository pattern")
    for index, pattern in enumerate(patterns):
        if not _PATTERN.fullmatch(pattern.replace(USER_PLACEHOLDER, "u")):
            raise ConfigError(
                f"{path}[{index}]",
                f"expected a repository name pattern ([a-z0-9._-/], '*', '**', '${{user}}'), got {pattern!r}",
            )
    return tuple(patterns)


def _actions(value, path):
    from registryd.auth.scope import ALL, REPOSITORY_ACTIONS

    names = _NAMES.read(value, path)
    allowed = REPOSITORY_ACTIONS + (ALL,)
    for index, name in enumerate(names):
        if name not in allowed:
            raise ConfigError(
                f"{path}[{index}]", f"expected one of {', '.join(allowed)}, got {name!r}"
            )
    if not names:
        raise ConfigError(path, "expected at least one action")
    return tuple(names)


def _finish_rule(found):
    from registryd.auth.access import Rule

    if not (
        found.values.get("users") or found.values.get("groups") or found.values.get("anonymous")
    ):
        raise ConfigError(found.path, "names nobody: add users, groups or anonymous: true")
    return Rule(**found.values)


@section(finish=_finish_rule)
@attr.s(frozen=True, eq=False)
class RuleSettings:
    """auth.access.rules[]: read into a registryd.auth.access.Rule."""

    repositories = setting(
        "repositories",
        Custom(_repositories, "list of patterns"),
        "Repository patterns: * within a component, ** across, ${user}.",
        required="required",
    )
    actions = setting(
        "actions",
        Custom(_actions, "list of actions"),
        "pull, push, delete or *.",
        required="required",
    )
    users = setting("users", _NAMES, 'Users granted ("*": any authenticated user).', default=())
    groups = setting("groups", _NAMES, "Groups granted.", default=())
    anonymous = setting("anonymous", Boolean(), "Everyone, logged in or not.", default=False)


def _groups(value, path):
    groups = {}
    for name, members in Mapping().check(value, path).items():
        member_path = join(path, name)
        if not isinstance(name, str) or not name:
            raise ConfigError(member_path, "group names must be non-empty strings")
        groups[name] = tuple(_NAMES.read(members, member_path))
    return groups


def _finish_access(found):
    groups = found.values.get("groups", {})
    for index, rule in enumerate(found.values.get("rules", ())):
        for group in rule.groups:
            if group not in groups:
                raise ConfigError(
                    f"{found.path_of('rules')}[{index}].groups",
                    f"group {group!r} is not defined under {found.path_of('groups')}",
                )
    return found.build()


@section(finish=_finish_access)
@attr.s(frozen=True)
class AccessConfig:
    rules = setting(
        "rules",
        ListOf(SectionOf(RuleSettings), "expected a list of rules, got {got}", nullable=False),
        "Rules granting actions on repositories; a caller gets their union.",
        default=(),
        converter=as_tuple,
        own=True,
    )
    groups = setting(
        "groups",
        Custom(_groups, "mapping of group to users"),
        "Groups of users.",
        factory=dict,
        own=True,
    )


def _finish_auth(found):
    htpasswd, token, server, access = (
        found.values.get(name) for name in ("htpasswd", "token", "tokenserver", "access")
    )
    if server is not None and (token is None or htpasswd is None):
        raise ConfigError(
            found.path_of("tokenserver"),
            "needs auth.token (what the tokens say) and auth.htpasswd (who may log in)",
        )
    if token is not None and htpasswd is not None and server is None:
        raise ConfigError(
            found.path,
            "configure one of htpasswd and token, or add auth.tokenserver to make registryd "
            "the token server for its htpasswd users",
        )
    if access is not None and htpasswd is None:
        raise ConfigError(
            found.path_of("access"),
            "access rules need auth.htpasswd users (with an external token server, "
            "the token server decides access)",
        )
    if token is not None and server is None:
        if token.realm is None:
            raise ConfigError(
                join(found.path, "token.realm"), "required (or set autoredirect: true)"
            )
        if token.rootcertbundle is None and token.jwks is None:
            raise ConfigError(
                join(found.path, "token"),
                "required: rootcertbundle or jwks (the keys tokens are signed with)",
            )
    if not found.raw:
        return None
    return found.build()


@section(not_yet("silly"), not_yet("none"), finish=_finish_auth)
@attr.s(frozen=True)
class AuthConfig:
    htpasswd = setting(
        "htpasswd", SectionOf(HtpasswdConfig), "HTTP Basic against an htpasswd file.", default=None
    )
    token = setting("token", SectionOf(TokenConfig), "Docker's token flow.", default=None)
    tokenserver = setting(
        "tokenserver",
        SectionOf(TokenServerConfig),
        "registryd issues the tokens itself.",
        default=None,
        own=True,
    )
    access = setting(
        "access",
        SectionOf(AccessConfig),
        "Access rules for htpasswd users.",
        default=None,
        own=True,
    )

"""The ``auth`` configuration section, validated (pure: no file is read).

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
"""

import re

import attr

from registryd.auth.access import USER_PLACEHOLDER, Rule
from registryd.auth.keys import ASYMMETRIC_ALGORITHMS, UNSUPPORTED_ALGORITHMS
from registryd.auth.scope import ALL, REPOSITORY_ACTIONS


@attr.s(frozen=True)
class HtpasswdConfig:
    realm = attr.ib()
    path = attr.ib()


@attr.s(frozen=True)
class TokenConfig:
    #: The token server URL, or None to point at registryd's own
    #: ``/auth/token`` at the request's base URL (autoredirect/tokenserver).
    realm = attr.ib()
    service = attr.ib()
    issuer = attr.ib()
    rootcertbundle = attr.ib(default=None)
    jwks = attr.ib(default=None)
    algorithms = attr.ib(default=None)  # tuple, or None for all supported
    autoredirectpath = attr.ib(default="/auth/token")


@attr.s(frozen=True)
class TokenServerConfig:
    key = attr.ib()
    certificate = attr.ib(default=None)
    expiration = attr.ib(default=300)
    refreshexpiration = attr.ib(default=30 * 24 * 3600)


@attr.s(frozen=True)
class AccessConfig:
    rules = attr.ib(converter=tuple)
    groups = attr.ib(factory=dict)


@attr.s(frozen=True)
class AuthConfig:
    htpasswd = attr.ib(default=None)
    token = attr.ib(default=None)
    tokenserver = attr.ib(default=None)
    access = attr.ib(default=None)


_PATTERN = re.compile(r"[a-z0-9._\-/*]+")


def parse_auth(value, path, helpers):
    """Validate the ``auth`` mapping at C{path} into an L{AuthConfig}.

    @param helpers: ``registryd.config`` (its checking helpers; passed in
        so that this module does not import it back).
    """
    h = helpers
    found = {}

    def htpasswd(value, path):
        required = _required(h, value, path, ("realm", "path"))
        found["htpasswd"] = (HtpasswdConfig(**required), path)

    def token(value, path):
        found["token"] = (_parse_token(h, value, path), path)

    def tokenserver(value, path):
        found["tokenserver"] = (_parse_tokenserver(h, value, path), path)

    def access(value, path):
        found["access"] = (_parse_access(h, value, path), path)

    handlers = dict(htpasswd=htpasswd, token=token, tokenserver=tokenserver, access=access)
    h._walk(value, path, handlers, {"silly", "none"})
    htpasswd_config, token_config, server_config, access_config = (
        found.get(name, (None, None))[0] for name in ("htpasswd", "token", "tokenserver", "access")
    )
    if server_config is not None and (token_config is None or htpasswd_config is None):
        raise h.ConfigError(
            found["tokenserver"][1],
            "needs auth.token (what the tokens say) and auth.htpasswd (who may log in)",
        )
    if token_config is not None and htpasswd_config is not None and server_config is None:
        raise h.ConfigError(
            path,
            "configure one of htpasswd and token, or add auth.tokenserver to make registryd "
            "the token server for its htpasswd users",
        )
    if access_config is not None and htpasswd_config is None:
        raise h.ConfigError(
            found["access"][1],
            "access rules need auth.htpasswd users (with an external token server, "
            "the token server decides access)",
        )
    if token_config is not None and server_config is None:
        if token_config.realm is None:
            raise h.ConfigError(_join(path, "token.realm"), "required (or set autoredirect: true)")
        if token_config.rootcertbundle is None and token_config.jwks is None:
            raise h.ConfigError(
                _join(path, "token"), "required: rootcertbundle or jwks (the keys tokens are signed with)"
            )
    if not found:
        return None
    return AuthConfig(htpasswd_config, token_config, server_config, access_config)


def _join(path, key):
    return f"{path}.{key}" if path else key


def _required(h, value, path, keys, optional=()):
    found = {}

    def setter(key):
        def handler(item, item_path):
            found[key] = h._string(item, item_path)
        return handler

    h._walk(value, path, {key: setter(key) for key in keys + tuple(optional)})
    for key in keys:
        if key not in found:
            raise h.ConfigError(_join(path, key), "required")
        if not found[key]:
            raise h.ConfigError(_join(path, key), "must not be empty")
    return found


def _parse_token(h, value, path):
    found = {}
    autoredirect = [False]

    def string(key):
        def handler(item, item_path):
            found[key] = h._string(item, item_path)
            if not found[key]:
                raise h.ConfigError(item_path, "must not be empty")
        return handler

    def algorithms(item, item_path):
        if not isinstance(item, list) or not item:
            raise h.ConfigError(item_path, "expected a list of algorithm names such as [RS256, ES256]")
        names = []
        for index, name in enumerate(item):
            name_path = f"{item_path}[{index}]"
            h._string(name, name_path)
            if name in UNSUPPORTED_ALGORITHMS:
                raise h.ConfigError(name_path, f"{name} (a shared secret) is not supported; "
                                    "sign tokens with an RSA, EC or Ed25519 key")
            if name not in ASYMMETRIC_ALGORITHMS:
                raise h.ConfigError(
                    name_path, f"expected one of {', '.join(ASYMMETRIC_ALGORITHMS)}, got {name!r}"
                )
            names.append(name)
        found["algorithms"] = tuple(names)

    def redirect(item, item_path):
        autoredirect[0] = h._boolean(item, item_path)

    def redirect_path(item, item_path):
        h._string(item, item_path)
        if not item.startswith("/"):
            raise h.ConfigError(item_path, f"expected a path starting with '/', got {item!r}")
        found["autoredirectpath"] = item

    handlers = dict(
        realm=string("realm"), service=string("service"), issuer=string("issuer"),
        rootcertbundle=string("rootcertbundle"), jwks=string("jwks"),
        signingalgorithms=algorithms, autoredirect=redirect, autoredirectpath=redirect_path,
    )
    h._walk(value, path, handlers)
    for key in ("service", "issuer"):
        if key not in found:
            raise h.ConfigError(_join(path, key), "required")
    if autoredirect[0]:
        found["realm"] = None  # built from each request
    else:
        found.setdefault("realm", None)
    return TokenConfig(**found)


def _parse_tokenserver(h, value, path):
    found = {}

    def string(key):
        def handler(item, item_path):
            found[key] = h._string(item, item_path)
        return handler

    def seconds(key, minimum):
        def handler(item, item_path):
            h._integer(item, item_path)
            if item < minimum:
                raise h.ConfigError(item_path, f"expected at least {minimum} seconds, got {item}")
            found[key] = item
        return handler

    handlers = dict(
        key=string("key"), certificate=string("certificate"),
        # The spec: never less than 60 seconds, for older clients.
        expiration=seconds("expiration", 60), refreshexpiration=seconds("refreshexpiration", 60),
    )
    h._walk(value, path, handlers)
    if "key" not in found:
        raise h.ConfigError(_join(path, "key"), "required: the PEM private key tokens are signed with")
    return TokenServerConfig(**found)


def _string_list(h, value, path):
    if not isinstance(value, list):
        raise h.ConfigError(path, f"expected a list of strings, got {h._describe(value)}")
    for index, item in enumerate(value):
        h._string(item, f"{path}[{index}]")
        if not item:
            raise h.ConfigError(f"{path}[{index}]", "must not be empty")
    return tuple(value)


def _parse_access(h, value, path):
    found = {"groups": {}, "rules": ()}

    def groups(item, item_path):
        for name, members in h._mapping(item, item_path).items():
            member_path = _join(item_path, name)
            if not isinstance(name, str) or not name:
                raise h.ConfigError(member_path, "group names must be non-empty strings")
            found["groups"][name] = _string_list(h, members, member_path)

    def rules(item, item_path):
        if not isinstance(item, list):
            raise h.ConfigError(item_path, f"expected a list of rules, got {h._describe(item)}")
        found["rules"] = tuple(
            _parse_rule(h, rule, f"{item_path}[{index}]") for index, rule in enumerate(item)
        )
        found["rules_path"] = item_path

    h._walk(value, path, {"groups": groups, "rules": rules})
    for index, rule in enumerate(found["rules"]):
        for group in rule.groups:
            if group not in found["groups"]:
                raise h.ConfigError(
                    f"{found['rules_path']}[{index}].groups",
                    f"group {group!r} is not defined under {_join(path, 'groups')}",
                )
    return AccessConfig(rules=found["rules"], groups=found["groups"])


def _parse_rule(h, value, path):
    found = {}

    def repositories(item, item_path):
        patterns = _string_list(h, item, item_path)
        if not patterns:
            raise h.ConfigError(item_path, "expected at least one repository pattern")
        for index, pattern in enumerate(patterns):
            if not _PATTERN.fullmatch(pattern.replace(USER_PLACEHOLDER, "u")):
                raise h.ConfigError(
                    f"{item_path}[{index}]",
                    f"expected a repository name pattern ([a-z0-9._-/], '*', '**', '${{user}}'), "
                    f"got {pattern!r}",
                )
        found["repositories"] = patterns

    def actions(item, item_path):
        names = _string_list(h, item, item_path)
        allowed = REPOSITORY_ACTIONS + (ALL,)
        for index, name in enumerate(names):
            if name not in allowed:
                raise h.ConfigError(
                    f"{item_path}[{index}]", f"expected one of {', '.join(allowed)}, got {name!r}"
                )
        if not names:
            raise h.ConfigError(item_path, "expected at least one action")
        found["actions"] = names

    def users(item, item_path):
        found["users"] = _string_list(h, item, item_path)

    def groups(item, item_path):
        found["groups"] = _string_list(h, item, item_path)

    def anonymous(item, item_path):
        found["anonymous"] = h._boolean(item, item_path)

    h._walk(value, path, dict(
        repositories=repositories, actions=actions, users=users, groups=groups, anonymous=anonymous,
    ))
    for key in ("repositories", "actions"):
        if key not in found:
            raise h.ConfigError(_join(path, key), "required")
    if not (found.get("users") or found.get("groups") or found.get("anonymous")):
        raise h.ConfigError(path, "names nobody: add users, groups or anonymous: true")
    return Rule(**found)

"""Authentication and access control.

``create(config)`` turns the validated ``auth`` section into the pieces the
HTTP application uses: an ``IAuthorizer`` (every route asks it before any
storage work) and, when registryd is its own token server, a
``TokenIssuer`` for ``/auth/token``.  Files named in the configuration
(htpasswd, keys, certificates, JWKS) are read here, and every problem is a
``ConfigError`` naming the key, so start-up fails with one clear line.

Modules: ``scope`` (access triples, scope strings), ``headers``
(``Authorization``/``WWW-Authenticate``), ``htpasswd`` (users, bcrypt
off the reactor with a short cache), ``keys`` (key files and ids),
``token`` (JWT verification), ``issuer`` (the token server), ``access``
(rules), ``authorizers`` (the three modes).
"""

from registryd.config import ConfigError


def create(config, shared_state=None):
    """``(authorizer, issuer or None)`` for a :class:`registryd.config.Config`;
    ``shared_state``: the nodes' ISharedState (the login brake uses it when
    it is shared with other nodes).

    :raises ConfigError: a file that cannot be read or used, naming its key.
    """
    from registryd.auth.authorizers import BasicAuthorizer, BearerAuthorizer, OpenAuthorizer

    auth = config.auth
    if auth is None:
        return OpenAuthorizer(), None
    checker = htfile = policy = None
    if auth.htpasswd is not None:
        checker, htfile = _htpasswd(auth.htpasswd, shared_state)
        policy = _policy(auth.access)
    if auth.token is None:
        return BasicAuthorizer(auth.htpasswd.realm, checker, policy), None
    issuer = None
    if auth.tokenserver is not None:
        issuer = _issuer(auth, checker, htfile, policy)
    verifier = _verifier(auth.token, issuer)
    realm = auth.token.realm
    if realm is None:
        from registryd.http.urls import URLBuilder

        urls = URLBuilder(config.http.host, prefix=config.http.prefix)
        path = auth.token.autoredirectpath

        def realm(request):
            return urls.base(request) + path

    authorizer = BearerAuthorizer(
        realm, auth.token.service, verifier, policy if issuer is not None else None
    )
    return authorizer, issuer


def _htpasswd(section, shared_state=None):
    from registryd.auth.htpasswd import HtpasswdChecker, HtpasswdError, HtpasswdFile

    try:
        htfile = HtpasswdFile(section.path)
    except HtpasswdError as error:
        raise ConfigError("auth.htpasswd.path", str(error)) from None
    return HtpasswdChecker(htfile, shared_state=shared_state), htfile


def _policy(section):
    from registryd.auth.access import AccessRules, AuthenticatedUsers

    if section is None:
        return AuthenticatedUsers()
    return AccessRules(section.rules, section.groups)


def _issuer(auth, checker, htfile, policy):
    from registryd.auth.issuer import TokenIssuer
    from registryd.auth.keys import (
        KeyFileError,
        load_certificates,
        load_private_key,
        signing_algorithm,
    )

    server = auth.tokenserver
    try:
        key = load_private_key(server.key)
        signing_algorithm(key)
    except KeyFileError as error:
        raise ConfigError("auth.tokenserver.key", str(error)) from None
    certificates = ()
    if server.certificate is not None:
        try:
            certificates = load_certificates(server.certificate)
        except KeyFileError as error:
            raise ConfigError("auth.tokenserver.certificate", str(error)) from None
        if certificates[0].public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(
            *_SPKI
        ):
            raise ConfigError(
                "auth.tokenserver.certificate",
                "does not hold the public key of auth.tokenserver.key",
            )
    return TokenIssuer(
        key,
        auth.token.issuer,
        auth.token.service,
        checker,
        htfile,
        policy,
        certificates=certificates,
        expiration=server.expiration,
        refresh_expiration=server.refreshexpiration,
        basic_realm=auth.htpasswd.realm,
    )


def _verifier(token, issuer):
    from registryd.auth.keys import KeyFileError, load_certificates, load_jwks
    from registryd.auth.token import TokenVerifier

    roots, keys = [], []
    if token.rootcertbundle is not None:
        try:
            roots = load_certificates(token.rootcertbundle)
        except KeyFileError as error:
            raise ConfigError("auth.token.rootcertbundle", str(error)) from None
    if token.jwks is not None:
        try:
            keys = load_jwks(token.jwks)
        except KeyFileError as error:
            raise ConfigError("auth.token.jwks", str(error)) from None
    if issuer is not None:
        keys.append((issuer.kid, issuer.public_key))
        if token.algorithms is not None and issuer.algorithm not in token.algorithms:
            raise ConfigError(
                "auth.token.signingalgorithms",
                f"does not include {issuer.algorithm}, which auth.tokenserver.key signs with",
            )
    return TokenVerifier(token.issuer, token.service, keys, roots, token.algorithms)


def _spki():
    from cryptography.hazmat.primitives import serialization

    return (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


_SPKI = _spki()

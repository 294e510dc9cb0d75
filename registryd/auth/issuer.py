"""registryd as its own token server: Docker's token flow, no extra service.

``GET /auth/token`` (Docker's token endpoint: HTTP Basic credentials,
``service``, ``scope`` parameters, ``offline_token=true`` for a refresh
token) and ``POST /auth/token`` (the OAuth2 form: ``grant_type=password``
or ``refresh_token``) authenticate against the htpasswd users, then grant
the intersection of the requested scopes and what the access policy allows
(an anonymous caller gets what anonymous rules allow).  A scope that is off
the grammar, or names a repository the API would refuse, is a 400.  Asking
for more than one may have is not an error: the token just carries less,
and the registry refuses what it lacks.

Tokens are JWTs in Distribution's profile, signed with
``auth.tokenserver.key`` (RS256 for RSA, ES256/384/512 for EC, EdDSA) with
the key's JWK thumbprint as ``kid`` and, when ``auth.tokenserver.certificate``
is set, the certificate as ``x5c``, so Distribution registries configured
with that certificate as ``rootcertbundle`` accept them too.

Refresh tokens are signed JWTs as well (nothing to store, so several
registryd processes can share the work); they carry a digest of the user's
htpasswd entry, so changing a password or removing a user revokes them.
"""

import base64
import datetime
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization

from registryd import errors
from registryd.auth.keys import jwk_thumbprint, public_jwk, signing_algorithm
from registryd.auth.scope import (
    ALL,
    CATALOG,
    REGISTRY,
    REPOSITORY,
    REPOSITORY_ACTIONS,
    Access,
    ScopeInvalid,
    parse_scopes,
)
from registryd.auth.token import TOKEN_USE, InvalidToken, TokenVerifier
from registryd.names import check_repository_name


def _rfc3339(timestamp):
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenIssuer:
    """Signs access and refresh tokens for ``service``."""

    def __init__(
        self,
        private_key,
        issuer,
        service,
        checker,
        htfile,
        policy,
        certificates=(),
        expiration=300,
        refresh_expiration=30 * 24 * 3600,
        basic_realm=None,
        clock=time.time,
    ):
        self.private_key = private_key
        self.basic_realm = basic_realm or service
        self.public_key = private_key.public_key()
        self.algorithm = signing_algorithm(private_key)
        self.issuer = issuer
        self.service = service
        self.checker = checker
        self.htfile = htfile
        self.policy = policy
        self.expiration = expiration
        self.refresh_expiration = refresh_expiration
        self._clock = clock
        self.kid = jwk_thumbprint(public_jwk(self.public_key))
        self._headers = {"kid": self.kid}
        if certificates:
            self._headers["x5c"] = [
                base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
                for c in certificates
            ]
        self._refresh_verifier = TokenVerifier(issuer, service, [(self.kid, self.public_key)])

    # what to grant

    def grant(self, user, requested):
        """The part of ``requested`` (:class:`Access` list) that ``user`` (None:
        anonymous) may have, as a list of :class:`Access`."""
        granted = []
        for access in requested:
            if access.type == REPOSITORY:
                allowed = self.policy.actions(user, access.name)
                wanted = set(REPOSITORY_ACTIONS) if ALL in access.actions else set(access.actions)
                actions = wanted & allowed
            elif access.type == REGISTRY and access.name == CATALOG:
                actions = access.actions & {ALL} if self.policy.may_list_catalog(user) else set()
            else:
                actions = set()
            if actions:
                granted.append(Access(access.type, access.name, actions))
        return granted

    # signing

    def _sign(self, claims):
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=self._headers)

    def access_token(self, user, granted):
        """``(token, issued_at, expires_in)`` for ``granted`` accesses."""
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.expiration,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [access.claim() for access in granted],
        }
        return self._sign(claims), _rfc3339(now), self.expiration

    def refresh_token(self, user):
        now = int(self._clock())
        return self._sign(
            {
                "iss": self.issuer,
                "sub": user,
                "aud": self.service,
                "exp": now + self.refresh_expiration,
                "iat": now,
                "jti": uuid.uuid4().hex,
                TOKEN_USE: "refresh",
                "pwd": self.htfile.fingerprint(user),
            }
        )

    def user_from_refresh_token(self, token):
        """The user a refresh token was issued to, if it is still good."""
        try:
            verified = self._refresh_verifier.verify(token, purpose="refresh")
        except InvalidToken as error:
            raise errors.Unauthorized(f"invalid refresh token: {error}") from None
        user = verified.subject
        fingerprint = self.htfile.fingerprint(user) if user else None
        if fingerprint is None or fingerprint != verified.claims.get("pwd"):
            raise errors.Unauthorized("invalid refresh token: the user or password changed")
        return user

    # request parsing

    def requested(self, values):
        """The accesses the ``scope`` parameters ask for.  A repository
        scope must also name a repository the API could serve (the rule
        of URLs, registryd.names): the scope grammar allows a registry
        host prefix (``localhost:5000/a``), uppercase in it and any
        length, and such a name could match an access rule's pattern
        (``${user}/**``) and be granted.  The request is then refused as a
        whole (400 NAME_INVALID), as an OAuth2 server refuses an invalid
        scope, rather than answered with less."""
        try:
            requested = parse_scopes(values)
        except ScopeInvalid as error:
            raise errors.BadRequest(str(error)) from None
        for access in requested:
            if access.type == REPOSITORY:
                try:
                    check_repository_name(access.name)
                except errors.NameInvalid as error:
                    raise errors.NameInvalid(
                        f"scope {access.scope()[:300]!r}: {error.message}", detail=error.detail
                    ) from None
        return requested

    def check_service(self, service):
        if service is not None and service != self.service:
            raise errors.BadRequest(
                f"this token server issues tokens for service {self.service!r}, not {service!r}"
            )

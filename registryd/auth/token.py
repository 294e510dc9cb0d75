"""Verifying registry bearer tokens (Distribution's JWT profile).

A token is trusted when its signature verifies with a trusted key and its
claims say it is for this registry, now:

* the signing key comes from the header's ``x5c`` chain (which must lead to
  a certificate of ``auth.token.rootcertbundle``), else from its ``jwk``
  (which must be a trusted key), else from its ``kid`` (an id of a trusted
  key: see ``registryd.auth.keys``); the algorithm must be one of
  ``signingalgorithms`` and fit the key, never ``none`` or HMAC;
* ``iss`` is ``auth.token.issuer``; ``aud`` (a string or a list) contains
  ``auth.token.service``; ``exp`` is required; ``exp`` and ``nbf`` are
  checked with a minute of leeway for clock skew, as Distribution does;
* ``access`` is a list of ``{type, name, actions}``.

Anything else makes the token invalid (:class:`InvalidToken`), and the
caller gets a 401 with ``error="invalid_token"`` in the challenge.
"""

import base64
import binascii
import datetime
import time
from collections import OrderedDict

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from registryd.auth import keys as keylib
from registryd.auth.scope import AccessSet, parse_access_claim

#: Seconds of clock skew tolerated on exp and nbf (Distribution's leeway).
LEEWAY = 60

#: Claim that marks registryd's refresh tokens, which are no access tokens.
TOKEN_USE = "token_use"


class InvalidToken(ValueError):
    """A bearer token that must not be honoured; the message says why."""


class VerifiedToken:
    """A token that passed verification: its claims and what it grants."""

    def __init__(self, claims, access):
        self.claims = claims
        self.access = access  # an AccessSet
        self.subject = claims.get("sub") or None


class TokenVerifier:
    """Checks bearer tokens for one registry (issuer, service, keys).

    A client sends the same token with every request until it expires, and
    checking its signature costs more than the rest of a small request
    (100-150 us), so tokens that verified are kept, by their exact text,
    until their ``exp`` (plus the leeway) passes; at most ``max_kept_bytes``
    of token text, least recently used out.  What a token grants is in
    its signed claims, so a kept one cannot grant more than it did.
    """

    #: bound of the kept tokens' text, in bytes
    max_kept_bytes = 4 * 1024 * 1024

    def __init__(
        self, issuer, service, trusted_keys=(), roots=(), algorithms=None, clock=time.time
    ):
        """
        :param trusted_keys: ``[(kid or None, public key)]``; each key is
            also found by its thumbprint and libtrust id.
        :param roots: ``cryptography`` certificates trusted for ``x5c``
            chains (their keys are trusted keys as well).
        :param algorithms: allowed algorithm names (default: every
            asymmetric one).
        :param clock: when kept tokens expire (``exp`` is checked against
            the real time when a token is verified).
        """
        self.issuer = issuer
        self.service = service
        self.algorithms = frozenset(algorithms or keylib.ASYMMETRIC_ALGORITHMS)
        self.roots = list(roots)
        self._root_der = {root.public_bytes(_DER) for root in self.roots}
        self._keys = {}
        for kid, key in list(trusted_keys) + [(None, root.public_key()) for root in self.roots]:
            self.trust(key, kid)
        self._clock = clock
        #: (token, purpose, audience) -> (VerifiedToken, time it expires)
        self._kept = OrderedDict()
        self._kept_bytes = 0
        #: signature checks made (kept tokens need none)
        self.verifications = 0

    def trust(self, public_key, kid=None):
        """Trust ``public_key`` (under ``kid`` too, if given)."""
        for key_id in keylib.key_ids(public_key) | ({kid} if kid else set()):
            self._keys[key_id] = public_key

    def verify(self, token, purpose="access", audience=None):
        """Verify ``token``; return a :class:`VerifiedToken`.

        :param purpose: ``"access"`` for bearer tokens presented to the
            registry (refresh tokens are refused), ``"refresh"`` for the
            token server's refresh tokens (only those are accepted).
        :raises InvalidToken: naming the first problem found.
        """
        key = (token, purpose, audience)
        kept = self._kept.get(key)
        if kept is not None:
            if self._clock() < kept[1]:
                self._kept.move_to_end(key)
                return kept[0]
            self._forget(key)
        verified = self._verify(token, purpose, audience)
        self._keep(key, verified)
        return verified

    def _keep(self, key, verified):
        size = len(key[0])
        if size > self.max_kept_bytes:
            return
        # exp is required and numeric (PyJWT checked); the leeway is PyJWT's.
        self._kept[key] = (verified, verified.claims["exp"] + LEEWAY)
        self._kept_bytes += size
        while self._kept_bytes > self.max_kept_bytes:
            old, _ = self._kept.popitem(last=False)
            self._kept_bytes -= len(old[0])

    def _forget(self, key):
        if self._kept.pop(key, None) is not None:
            self._kept_bytes -= len(key[0])

    def _verify(self, token, purpose, audience):
        self.verifications += 1
        try:
            # PyJWT checks kid and crit here too, raising InvalidTokenError
            # (not a DecodeError) for a kid that is no string or a bad crit.
            header = jwt.get_unverified_header(token)
        except jwt.exceptions.PyJWTError as error:
            raise InvalidToken(f"malformed token: {error}") from None
        algorithm = header.get("alg")
        # Any JSON value may come here: a list or object is unhashable.
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise InvalidToken(f"signing algorithm {_shorten(algorithm)} is not accepted")
        key = self._signing_key(header)
        if algorithm not in keylib.algorithms_for(key):
            raise InvalidToken(
                f"signing algorithm {_shorten(algorithm)} does not fit the signing key"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=audience or self.service,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.exceptions.ExpiredSignatureError:
            raise InvalidToken("token has expired") from None
        except jwt.exceptions.ImmatureSignatureError:
            raise InvalidToken("token is not valid yet (nbf)") from None
        except jwt.exceptions.InvalidAudienceError:
            raise InvalidToken(f"token is not for service {self.service!r} (aud)") from None
        except jwt.exceptions.InvalidIssuerError:
            raise InvalidToken("token is from an untrusted issuer (iss)") from None
        except jwt.exceptions.InvalidSignatureError:
            raise InvalidToken("token signature is invalid") from None
        except jwt.exceptions.PyJWTError as error:
            raise InvalidToken(f"invalid token: {error}") from None
        for claim in _NUMERIC_DATES:
            value = claims.get(claim)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                # PyJWT compares int(value): "99999999999" passes, and the
                # kept-token bound (exp + leeway) then fails on a string.
                raise InvalidToken(f"claim {claim} is not a number: {_shorten(value)}")
        is_refresh = claims.get(TOKEN_USE) == "refresh"
        if is_refresh != (purpose == "refresh"):
            raise InvalidToken(
                "a refresh token is no access token" if is_refresh else "not a refresh token"
            )
        try:
            access = AccessSet(parse_access_claim(claims.get("access")))
        except ValueError as error:
            raise InvalidToken(f"invalid access claim: {error}") from None
        return VerifiedToken(claims, access)

    # finding the key

    def _signing_key(self, header):
        if header.get("x5c"):
            return self._key_from_chain(header["x5c"])
        if header.get("jwk") is not None:
            jwk = header["jwk"]
            try:
                thumbprint = keylib.jwk_thumbprint(jwk) if isinstance(jwk, dict) else None
            except keylib.KeyFileError:
                thumbprint = None
            key = self._keys.get(thumbprint)
            if key is None:
                raise InvalidToken("token signed by an untrusted key (jwk)")
            return key
        kid = header.get("kid")
        if isinstance(kid, str) and kid:
            key = self._keys.get(kid)
            if key is None:
                raise InvalidToken(f"token signed by an untrusted key (kid {_shorten(kid)})")
            return key
        raise InvalidToken("token names no signing key (x5c, jwk or kid)")

    def _key_from_chain(self, x5c):
        """The leaf's key, if the chain leads to a configured root."""
        if not isinstance(x5c, list) or not all(isinstance(c, str) for c in x5c) or len(x5c) > 10:
            raise InvalidToken("malformed x5c header")
        try:
            chain = [
                x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c
            ]
        except (ValueError, binascii.Error):
            raise InvalidToken("malformed certificate in the x5c header") from None
        now = datetime.datetime.now(datetime.timezone.utc)
        for certificate in chain:
            if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
                raise InvalidToken("a certificate of the x5c chain is expired or not valid yet")
        for index, certificate in enumerate(chain):
            if certificate.public_bytes(_DER) in self._root_der:
                return chain[0].public_key()
            for root in self.roots:
                if _issued_by(certificate, root):
                    return chain[0].public_key()
            if index + 1 == len(chain):
                break
            issuer = chain[index + 1]
            if not _is_ca(issuer) or not _issued_by(certificate, issuer):
                break
        raise InvalidToken("the x5c chain does not lead to a trusted root certificate")


_DER = serialization.Encoding.DER

#: Claims that are JSON numbers of seconds (RFC 7519's NumericDate), as
#: Distribution's Go structs read them: a string there is no time.
_NUMERIC_DATES = ("exp", "nbf", "iat")


def _shorten(value, limit=80):
    """``repr`` of a header value a client chose, cut to ``limit``
    characters: it goes into the error message and the log."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _issued_by(certificate, issuer):
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(certificate):
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca

"""The ``Authorization`` request header and ``WWW-Authenticate`` challenges.

Parsing is strict: a header that is present but malformed is an error the
client hears about (401), never a silent fall-back to anonymous access.
"""

import base64
import binascii
import re

from twisted.cred.credentials import UsernamePassword

#: token68 (RFC 7235), which a JWT's base64url parts and dots satisfy.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class MalformedAuthorization(ValueError):
    """An ``Authorization`` header that cannot be understood."""


def authorization(request):
    """``(scheme lower-cased, credentials)`` of the request's one
    ``Authorization`` header, or None when there is none.

    :raises MalformedAuthorization: several headers, or not "scheme value".
    """
    values = request.requestHeaders.getRawHeaders(b"authorization")
    if not values:
        return None
    if len(values) > 1:
        raise MalformedAuthorization("more than one Authorization header")
    try:
        text = values[0].decode("ascii")
    except UnicodeDecodeError:
        raise MalformedAuthorization("Authorization header is not ASCII") from None
    scheme, _, credentials = text.strip().partition(" ")
    credentials = credentials.strip()
    if not scheme or not credentials:
        raise MalformedAuthorization("Authorization header is not '<scheme> <credentials>'")
    return scheme.lower(), credentials


def basic_credentials(credentials):
    """A ``UsernamePassword`` from the value of a Basic header.

    :raises MalformedAuthorization: not base64 of ``user:password`` in UTF-8.
    """
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise MalformedAuthorization(
            "Basic credentials are not base64 of UTF-8 user:password"
        ) from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise MalformedAuthorization("Basic credentials are not user:password")
    return UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))


def bearer_token(credentials):
    """The token of a Bearer header, checked for the token68 syntax."""
    if not _TOKEN68.fullmatch(credentials):
        raise MalformedAuthorization("Bearer token has characters a token cannot have")
    return credentials


def client_host(request):
    """The peer's address (not X-Forwarded-For, which a client could set
    to dodge the login throttle), e.g. ``127.0.0.1``."""
    return getattr(request.getClientAddress(), "host", None) or "-"


def _quote(value):
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(scheme, **params):
    """``Scheme key="value",...`` with parameters in the given order;
    parameters whose value is None are left out."""
    pairs = [f"{key}={_quote(value)}" for key, value in params.items() if value is not None]
    return scheme + (" " + ",".join(pairs) if pairs else "")

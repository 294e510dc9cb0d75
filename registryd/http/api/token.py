"""``/auth/token``: registryd's built-in token server (see
``registryd.auth.issuer``), in Docker's ``GET`` form and the OAuth2 ``POST``
form.  Errors are registry errors like everywhere else (Docker's client
reads both that and the OAuth2 shape)."""

import json

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger

from registryd import errors
from registryd.auth.headers import (
    MalformedAuthorization,
    authorization,
    basic_credentials,
    challenge,
    client_host,
)
from registryd.http.api.base import query_arg, query_args, respond

log = Logger()


def _one(request, name):
    """A token request parameter, given at most once (else 400)."""
    return query_arg(request, name, unique=True)


def _unauthorized(issuer, message):
    return errors.Unauthorized(
        message, headers={"WWW-Authenticate": challenge("Basic", realm=issuer.basic_realm)}
    )


async def _check_password(issuer, credentials, request):
    try:
        return await issuer.checker.authenticate(credentials, client_host(request))
    except UnauthorizedLogin:
        log.info(
            "failed token server login for {user!r}",
            user=credentials.username.decode("utf-8", "replace")[:100],
        )
        raise _unauthorized(issuer, "invalid username or password") from None


async def get_token(issuer, request):
    """Docker's token request: Basic credentials (or none: anonymous)."""
    issuer.check_service(_one(request, "service"))
    requested = issuer.requested(query_args(request, "scope"))
    user = None
    try:
        header = authorization(request)
        if header is not None:
            if header[0] != "basic":
                raise MalformedAuthorization("the token server takes Basic credentials")
            user = await _check_password(issuer, basic_credentials(header[1]), request)
    except MalformedAuthorization as error:
        raise _unauthorized(issuer, str(error)) from None
    granted = issuer.grant(user, requested)
    token, issued_at, expires_in = issuer.access_token(user, granted)
    body = {"token": token, "access_token": token, "expires_in": expires_in, "issued_at": issued_at}
    if user is not None and (_one(request, "offline_token") or "").lower() == "true":
        body["refresh_token"] = issuer.refresh_token(user)
    return _answer(request, body)


async def post_token(issuer, request):
    """The OAuth2 form: ``grant_type=password`` or ``refresh_token``."""
    content_type = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise errors.BadRequest("expected an application/x-www-form-urlencoded body")
    issuer.check_service(_one(request, "service"))
    requested = issuer.requested(query_args(request, "scope"))
    grant_type = _one(request, "grant_type")
    refresh_token = None
    if grant_type == "password":
        from twisted.cred.credentials import UsernamePassword

        username, password = _one(request, "username"), _one(request, "password")
        if not username or password is None:
            raise errors.BadRequest("grant_type=password needs username and password")
        user = await _check_password(
            issuer, UsernamePassword(username.encode("utf-8"), password.encode("utf-8")), request
        )
        if _one(request, "access_type") == "offline":
            refresh_token = issuer.refresh_token(user)
    elif grant_type == "refresh_token":
        given = _one(request, "refresh_token")
        if not given:
            raise errors.BadRequest("grant_type=refresh_token needs refresh_token")
        user = issuer.user_from_refresh_token(given)
        refresh_token = given
    else:
        raise errors.BadRequest(f"grant_type must be password or refresh_token, got {grant_type!r}")
    granted = issuer.grant(user, requested)
    token, issued_at, expires_in = issuer.access_token(user, granted)
    body = {
        "access_token": token,
        "token": token,
        "expires_in": expires_in,
        "issued_at": issued_at,
        "scope": " ".join(access.scope() for access in granted),
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return _answer(request, body)


def _answer(request, body):
    request.setHeader("Cache-Control", "no-store")
    request.setHeader("Pragma", "no-cache")
    return respond(
        request, 200, body=json.dumps(body).encode("utf-8"), content_type="application/json"
    )

"""The three ways a request gets authorized, as ``IAuthorizer`` providers.

* :class:`OpenAuthorizer` -- no ``auth`` section: everyone may do anything
  (the registry is meant to sit on a private network or behind a proxy).
* :class:`BasicAuthorizer` -- ``auth.htpasswd``: HTTP Basic credentials,
  checked against the htpasswd users, and an access policy (every user may
  do everything, as in Distribution, unless ``auth.access`` rules say
  otherwise; those may also let anonymous callers pull).
* :class:`BearerAuthorizer` -- ``auth.token``: JWT bearer tokens from a
  token server (an external one, or registryd's own ``/auth/token``).

Refusals follow RFC 7235/6750 and Distribution: no or bad credentials get
401 ``UNAUTHORIZED`` with a ``WWW-Authenticate`` challenge naming exactly
the scope the request needs; a known caller lacking an action gets 403
``DENIED`` (with ``error="insufficient_scope"`` in the bearer challenge).
"""

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from registryd import errors
from registryd.auth.headers import (
    MalformedAuthorization,
    authorization,
    basic_credentials,
    bearer_token,
    challenge,
    client_host,
)
from registryd.auth.scope import ALL, CATALOG, PULL, REGISTRY, REPOSITORY, REPOSITORY_ACTIONS
from registryd.auth.token import InvalidToken
from registryd.interfaces import IAuthorizer, IGrant

log = Logger()


def _detail(accesses):
    """Distribution's error detail: one entry per needed action."""
    return [
        {"Type": access.type, "Name": access.name, "Action": action}
        for access in accesses
        for action in sorted(access.actions)
    ] or None


def _scope(accesses):
    return " ".join(access.scope() for access in accesses) or None


# --- grants ---------------------------------------------------------------


@implementer(IGrant)
class OpenGrant:
    """Everything, for everyone (no ``auth`` configured)."""

    user = None

    def allows(self, type, name, action):
        return True

    def may_list(self, name):
        return True


@implementer(IGrant)
class PolicyGrant:
    """What an access policy gives ``user`` (None: anonymous)."""

    def __init__(self, policy, user):
        self.policy = policy
        self.user = user

    def allows(self, type, name, action):
        if type == REPOSITORY:
            actions = self.policy.actions(self.user, name)
            return action in actions or (action == ALL and set(REPOSITORY_ACTIONS) <= actions)
        if type == REGISTRY and name == CATALOG:
            return self.policy.may_list_catalog(self.user)
        return False

    def may_list(self, name):
        return PULL in self.policy.actions(self.user, name)

    def missing(self, needed):
        lacking = []
        for access in needed:
            absent = [a for a in access.actions if not self.allows(access.type, access.name, a)]
            if absent:
                lacking.append(access)
        return lacking


@implementer(IGrant)
class TokenGrant:
    """What a verified token grants.

    The request's own needs are checked against the token alone.  Reads
    beyond them (the source of a cross-repository mount, catalog entries)
    may also come from the access policy when registryd issued the token
    itself: the policy is then the authority the token was cut from, and the
    caller could get a token for those reads anyway.
    """

    def __init__(self, token, policy=None):
        self.token = token
        self.user = token.subject
        self.policy = policy

    def allows(self, type, name, action):
        if self.token.access.allows(type, name, action):
            return True
        return (
            self.policy is not None
            and type == REPOSITORY
            and action == PULL
            and PULL in self.policy.actions(self.user, name)
        )

    def may_list(self, name):
        if self.policy is not None:
            return PULL in self.policy.actions(self.user, name)
        # An external token server that grants the catalog shows it whole,
        # as Distribution does.
        return self.token.access.allows(REGISTRY, CATALOG, ALL)


_OPEN_GRANT = OpenGrant()


# --- authorizers ----------------------------------------------------------


@implementer(IAuthorizer)
class OpenAuthorizer:
    """No authentication, no access control."""

    def authorize(self, request, needed):
        return defer.succeed(_OPEN_GRANT)


@implementer(IAuthorizer)
class BasicAuthorizer:
    """``auth.htpasswd``: HTTP Basic against a credentials checker."""

    def __init__(self, realm, checker, policy):
        self.realm = realm
        self.checker = checker
        self.policy = policy

    def _unauthorized(self, message, needed):
        return errors.Unauthorized(
            message,
            detail=_detail(needed),
            headers={"WWW-Authenticate": challenge("Basic", realm=self.realm)},
        )

    def authorize(self, request, needed):
        return defer.ensureDeferred(self._authorize(request, list(needed)))

    async def _authorize(self, request, needed):
        try:
            header = authorization(request)
            if header is not None and header[0] != "basic":
                raise MalformedAuthorization("only Basic authentication is accepted here")
            credentials = basic_credentials(header[1]) if header is not None else None
        except MalformedAuthorization as error:
            raise self._unauthorized(str(error), needed) from None
        user = None
        if credentials is not None:
            try:
                user = await self.checker.authenticate(credentials, client_host(request))
            except UnauthorizedLogin:
                log.info(
                    "failed login for {user!r} from {client}",
                    user=credentials.username.decode("utf-8", "replace")[:100],
                    client=request.getClientAddress(),
                )
                raise self._unauthorized("invalid username or password", needed) from None
        grant = PolicyGrant(self.policy, user)
        lacking = grant.missing(needed)
        if user is None and (lacking or not needed):
            raise self._unauthorized("authentication required", needed)
        if lacking:
            raise errors.Denied(detail=_detail(lacking), user=user)
        return grant


@implementer(IAuthorizer)
class BearerAuthorizer:
    """``auth.token``: bearer tokens checked by a ``TokenVerifier``.

    :param realm: the token server's URL, or a callable ``request -> URL``
        (registryd's own token server, reached at the request's base URL).
    :param policy: the access policy when registryd issues the tokens
        itself (see :class:`TokenGrant`), else None.
    """

    def __init__(self, realm, service, verifier, policy=None):
        self.realm = realm
        self.service = service
        self.verifier = verifier
        self.policy = policy

    def _challenge(self, request, needed, error=None):
        realm = self.realm(request) if callable(self.realm) else self.realm
        return challenge(
            "Bearer", realm=realm, service=self.service, scope=_scope(needed), error=error
        )

    def _unauthorized(self, request, message, needed, error=None):
        return errors.Unauthorized(
            message,
            detail=_detail(needed),
            headers={"WWW-Authenticate": self._challenge(request, needed, error)},
        )

    def authorize(self, request, needed):
        try:
            return defer.succeed(self._authorize(request, list(needed)))
        except errors.RegistryError:
            return defer.fail()

    def _authorize(self, request, needed):
        try:
            header = authorization(request)
            if header is None or header[0] != "bearer":
                raise self._unauthorized(request, "authentication required", needed)
            token = bearer_token(header[1])
        except MalformedAuthorization as error:
            raise self._unauthorized(request, str(error), needed, "invalid_token") from None
        try:
            verified = self.verifier.verify(token)
        except InvalidToken as error:
            raise self._unauthorized(request, str(error), needed, "invalid_token") from None
        grant = TokenGrant(verified, self.policy)
        lacking = verified.access.missing(needed)
        if lacking:
            raise errors.Denied(
                "the token does not grant the access this request needs",
                detail=_detail(lacking),
                user=grant.user,
                headers={
                    "WWW-Authenticate": self._challenge(request, needed, "insufficient_scope")
                },
            )
        return grant

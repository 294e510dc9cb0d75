"""Who is using the web interface, and what they may see and do.

The interface makes no authorization decisions of its own: it asks the
same grants the API's authorizers make (``registryd.auth.authorizers``),
built from the same access policy, so a page shows exactly what the user
could pull with ``docker pull`` and offers only what they could do.

* No ``auth`` section: everyone may do everything; there is no sign-in.
* ``auth.htpasswd``, with or without registryd's own token server: the
  sign-in form's password goes through the same htpasswd checker as a
  ``docker login`` (bcrypt off the reactor, and the same guessing brake
  per user and client address), and the session's user then gets the
  policy's grant (the one a token from ``/auth/token`` would carry).
  Anonymous visitors get what anonymous rules allow.
* Tokens from an external token server only: the interface cannot sign
  anyone in (it has no passwords to check); it shows nothing.
"""

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from zope.interface import implementer

from registryd import errors
from registryd.auth.authorizers import BasicAuthorizer, OpenAuthorizer, OpenGrant, PolicyGrant
from registryd.interfaces import IGrant

#: Longest user name or password the sign-in form takes (bcrypt reads 72
#: bytes of a password anyway).
MAX_CREDENTIAL = 256


@implementer(IGrant)
class NothingGrant:
    """Nothing at all: the interface without a way to sign in."""

    user = None

    def allows(self, type, name, action):
        return False

    def may_list(self, name):
        return False


class UIAccess:
    """Sign-in and grants for the web interface.

    :param checker: the htpasswd checker (registryd.auth.htpasswd), or
        None when there is nothing to sign in with.
    :param policy: the access policy (registryd.auth.access) the checker's
        users are judged by; None with no checker.
    :param open: no authentication at all (everyone may do everything).
    """

    def __init__(self, checker=None, policy=None, open=False):
        self.checker = checker
        self.policy = policy
        self.open = open

    @classmethod
    def of(cls, authorizer, issuer):
        """The interface's access for the API's ``authorizer`` and token
        ``issuer`` (None unless registryd is its own token server)."""
        if isinstance(authorizer, OpenAuthorizer):
            return cls(open=True)
        if isinstance(authorizer, BasicAuthorizer):
            return cls(authorizer.checker, authorizer.policy)
        if issuer is not None:
            return cls(issuer.checker, issuer.policy)
        return cls()

    @property
    def can_sign_in(self):
        return self.checker is not None

    async def sign_in(self, user, password, address):
        """The user's htpasswd fingerprint (for the session) once
        ``password`` is theirs.

        :raises errors.Unauthorized: wrong user or password.
        :raises errors.TooManyRequests: the guessing brake (registryd.auth.throttle).
        """
        if not self.can_sign_in:
            raise errors.Unsupported(
                "signing in is not available: tokens come from an external token server"
            )
        if not user or len(user) > MAX_CREDENTIAL or len(password) > MAX_CREDENTIAL:
            raise errors.Unauthorized("invalid username or password")
        credentials = UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
        try:
            found = await self.checker.authenticate(credentials, address)
        except UnauthorizedLogin:
            raise errors.Unauthorized("invalid username or password") from None
        return self.checker.htfile.fingerprint(found)

    def current_user(self, session):
        """The session's user while their password is unchanged, else None."""
        if session is None or session.user is None or not self.can_sign_in:
            return None
        if self.checker.htfile.fingerprint(session.user) != session.fingerprint:
            return None  # password changed or user removed: signed out
        return session.user

    def grant(self, user):
        """What ``user`` (None: anonymous) may do: an IGrant."""
        if self.open:
            return OpenGrant()
        if self.policy is None:
            return NothingGrant()
        return PolicyGrant(self.policy, user)

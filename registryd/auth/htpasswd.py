"""Users from an Apache htpasswd file, checked with bcrypt.

Like Distribution, only bcrypt entries count (``htpasswd -B`` writes
``user:$2y$05$...``); lines with other hash types are skipped with a
warning.  Unlike Distribution, the file is re-read when it changes (checked
at most once a second), so adding or removing a user needs no restart; a
file that became unreadable or invalid is reported and the last good
contents stay in force.

bcrypt is deliberately slow (tens of milliseconds at the usual costs), and
a ``docker push`` sends its credentials with every request.  So the check
runs in a thread, never on the reactor, and a success is remembered for
:attr:`HtpasswdChecker.cache_seconds`, keyed on a keyed hash of the user,
password and stored hash: a changed password or a removed user is never
served from the cache, and the cache holds no password.  Concurrent checks
of the same credentials share one bcrypt run.

:class:`HtpasswdChecker` is a ``twisted.cred`` credentials checker, so it
plugs into any Twisted authentication machinery as well.
"""

import hashlib
import hmac
import os
import time

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from registryd.auth.throttle import LoginThrottle

log = Logger()

_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")

#: bcrypt only reads the first 72 bytes of a password (and the bcrypt
#: module refuses longer ones); htpasswd hashed exactly those.
_BCRYPT_MAX_PASSWORD = 72


class HtpasswdError(ValueError):
    """The htpasswd file cannot be read or has a malformed line."""


def parse_htpasswd(text, source="htpasswd"):
    """``{user: bcrypt hash bytes}`` from the file's text.

    Blank lines and ``#`` comments are skipped; a line without ``:`` or
    with an empty user is an error (a truncated file must not silently lose
    users); a non-bcrypt entry is skipped with a warning.
    """
    users = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise HtpasswdError(f"{source} line {number}: expected user:hash")
        if not hashed.startswith(_BCRYPT_PREFIXES):
            log.warn(
                "{source} line {number}: user {user!r} has no bcrypt hash "
                "(create it with htpasswd -B); ignored",
                source=source,
                number=number,
                user=user,
            )
            continue
        users[user] = hashed.encode("ascii", "replace")
    return users


class HtpasswdFile:
    """The users of one htpasswd file, re-read when the file changes."""

    #: Seconds between checks of the file's modification time.
    stat_interval = 1.0

    def __init__(self, path, clock=time.monotonic):
        self.path = path
        self._clock = clock
        self._signature = None
        self._next_check = 0.0
        self.users = {}
        self.reload(initial=True)

    def _stat(self):
        info = os.stat(self.path)
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def reload(self, initial=False):
        """Read the file if it changed.  At start-up a problem raises
        :class:`HtpasswdError`; later it is logged and the old users stay."""
        try:
            signature = self._stat()
            if signature == self._signature:
                return
            with open(self.path, encoding="utf-8", errors="replace") as stream:
                users = parse_htpasswd(stream.read(), self.path)
        except (OSError, HtpasswdError) as error:
            message = (
                error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            )
            if initial:
                raise HtpasswdError(f"cannot read {self.path}: {message}") from None
            log.error(
                "htpasswd {path}: {message}; keeping the previous users",
                path=self.path,
                message=message,
            )
            self._signature = None
            return
        if not initial:
            log.info("htpasswd {path} reloaded: {count} users", path=self.path, count=len(users))
        self.users = users
        self._signature = signature

    def entry(self, user):
        """The stored bcrypt hash of ``user``, or None."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.stat_interval
            self.reload()
        return self.users.get(user)

    def fingerprint(self, user):
        """A short digest of ``user``'s stored hash, or None if there is no
        such user: refresh tokens carry it, so a password change or removal
        invalidates them."""
        entry = self.entry(user)
        if entry is None:
            return None
        return hashlib.sha256(entry).hexdigest()[:16]


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """Checks user names and passwords against an :class:`HtpasswdFile`."""

    credentialInterfaces = (IUsernamePassword,)

    #: How long a successful check is remembered (and so answered without
    #: bcrypt and never braked by ``throttle``): the key covers the stored
    #: hash, so a changed password or a removed user is not served from it.
    cache_seconds = 24 * 3600.0
    #: Bound on remembered successes (expired ones are pruned first).
    cache_size = 10000

    def __init__(self, htfile, clock=time.monotonic, run_in_thread=None, shared_state=None):
        """``shared_state``: the nodes' ISharedState when it is shared with
        other nodes (Redis): the brake then counts failures across them."""
        self.htfile = htfile
        self._clock = clock
        if run_in_thread is None:
            from twisted.internet.threads import deferToThread as run_in_thread
        self._run_in_thread = run_in_thread
        self._secret = os.urandom(32)
        self._verified = {}  # key -> expiry time
        self._running = {}  # key -> [(Deferred, user)] waiting for a bcrypt run
        # Unknown users are checked against this hash, so that the time an
        # answer takes does not tell whether a user exists.
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(self._typical_cost()))
        self.bcrypt_runs = 0  # for tests and the curious
        #: the guessing brake per (client address, user): registryd.auth.throttle
        self.throttle = LoginThrottle(clock=clock)
        #: the same brake across nodes (registryd.auth.shared_brake), or None
        self.shared_brake = None
        if shared_state is not None and shared_state.shared:
            from registryd.auth.shared_brake import SharedLoginBrake

            self.shared_brake = SharedLoginBrake(shared_state, self.throttle)

    def _typical_cost(self):
        for entry in self.htfile.users.values():
            try:
                return min(max(int(entry.split(b"$")[2]), 4), 31)
            except (IndexError, ValueError):
                continue
        return 10

    def _key(self, user, password, entry):
        message = b"\0".join([user, password, entry or b"-"])
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def _credentials(self, credentials):
        """(user as str, password as bytes, stored entry, cache key)."""
        user = credentials.username
        password = credentials.password
        if isinstance(user, bytes):
            user = user.decode("utf-8", "replace")
        if isinstance(password, str):
            password = password.encode("utf-8")
        entry = self.htfile.entry(user)
        return user, password, entry, self._key(user.encode("utf-8"), password, entry)

    def _known(self, key):
        """Whether the credentials behind ``key`` were verified lately."""
        expiry = self._verified.get(key)
        if expiry is not None:
            if expiry > self._clock():
                return True
            del self._verified[key]
        return False

    def requestAvatarId(self, credentials):
        """Deferred firing with the user name (str), or failing with
        :class:`UnauthorizedLogin`."""
        user, password, entry, key = self._credentials(credentials)
        if self._known(key):
            return defer.succeed(user)
        return self._verify(user, password, entry, key)

    def _verify(self, user, password, entry, key, guard=None):
        """Join the running check of the same credentials, or start one.
        ``guard``: an async callable taken before bcrypt runs and released
        after (the nodes' one-check-per-pair lock,
        :meth:`registryd.auth.shared_brake.SharedLoginBrake.checking`); its
        refusal answers everyone waiting."""
        result = defer.Deferred()
        if key in self._running:
            self._running[key].append((result, user))
        elif guard is None:
            self._running[key] = [(result, user)]
            self._check(key, password, entry)
        else:
            self._running[key] = [(result, user)]
            defer.ensureDeferred(self._guarded_check(key, password, entry, guard))
        return result

    async def _guarded_check(self, key, password, entry, guard):
        try:
            release = await guard()
        except Exception as refusal:  # TOOMANYREQUESTS, for every waiter
            for waiter, _ in self._running.pop(key, ()):
                if not waiter.called:
                    waiter.errback(refusal)
            return
        try:
            await self._check(key, password, entry)
        finally:
            release()

    async def authenticate(self, credentials, address):
        """The user name, for credentials sent from client ``address``:
        credentials verified lately are answered from the cache, never
        braked; others are checked behind the guessing brake (``throttle``):
        UnauthorizedLogin for wrong ones, TOOMANYREQUESTS while the
        (address, user) pair has to wait."""
        user, password, entry, key = self._credentials(credentials)
        if self._known(key):
            return user
        shared = self.shared_brake
        with self.throttle.attempt(address, user, key):
            guard = None
            if shared is not None:
                await shared.check(address, user)

                def guard():
                    return shared.checking(address, user)

            try:
                found = await self._verify(user, password, entry, key, guard)
            except UnauthorizedLogin:
                self.throttle.failed(address, user)
                if shared is not None:
                    await shared.failed(address, user)
                raise
            self.throttle.succeeded(address, user)
            if shared is not None:
                await shared.succeeded(address, user)
        return found

    def _check(self, key, password, entry):
        """Run bcrypt in a thread; answer everyone waiting on ``key``.
        A Deferred firing once they are answered."""
        self.bcrypt_runs += 1
        stored = entry if entry is not None else self._dummy
        checking = self._run_in_thread(_checkpw, password, stored)

        def failed(reason):
            log.failure("bcrypt check failed", reason)
            return False

        def answer(ok):
            ok = bool(ok) and entry is not None
            if ok:
                self._remember(key)
            for waiter, user in self._running.pop(key, ()):
                if waiter.called:  # cancelled: its client went away
                    continue
                if ok:
                    waiter.callback(user)
                else:
                    waiter.errback(UnauthorizedLogin("invalid username or password"))

        return checking.addErrback(failed).addCallback(answer)

    def _remember(self, key):
        now = self._clock()
        if len(self._verified) >= self.cache_size:
            for stale in [k for k, expiry in self._verified.items() if expiry <= now]:
                del self._verified[stale]
            while len(self._verified) >= self.cache_size:  # the oldest go
                del self._verified[next(iter(self._verified))]
        self._verified[key] = now + self.cache_seconds


def _checkpw(password, stored):
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], stored)
    except ValueError:  # a malformed stored hash
        return False

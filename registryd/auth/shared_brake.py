"""The login brake across nodes: failures counted in the shared state.

Each node's :class:`registryd.auth.throttle.LoginThrottle` brakes the guesses
it sees; behind a load balancer a guesser spreads them over the nodes and
gets ``free`` free failures from each.  This adds one count per (client
address, user) pair in the nodes' shared state (Redis): every failure
through any node increments it, and once it passes the free ones the pair
is closed *for all nodes* for the throttle's delay (a key that expires on
Redis's clock, so the nodes' clocks do not matter).  An attempt checks
that key first and gets 429 TOOMANYREQUESTS with ``Retry-After`` while it
exists, before any bcrypt.  A success clears the pair everywhere.

Credentials a node verified lately are still answered from its cache
before any of this (``registryd.auth.htpasswd``), so a right password
that worked before is never braked.

The "one check at a time per pair" rule spans the nodes too: a node
runs bcrypt for a pair only while it holds the pair's lock in the shared
state (``brake:checking:<pair>``, :meth:`SharedLoginBrake.checking`), so
a guesser sending guesses for one user to every node at once gets them
checked one after the other, each after the brake's count of the one
before.  A check that finds the lock taken waits for it (at most
``wait`` seconds, then 429 TOOMANYREQUESTS) rather than being refused at
once as a different password on the same node is: the nodes cannot tell
a repeat of the same password from a new guess (the credentials' cache
keys are per-node secrets, and nothing derived from a password is put in
Redis), and ``docker push`` sends the same credentials to every node at
once, which must not be refused.  The node then checks the brake again:
it may have closed while it waited.

When the shared state does not answer (Redis down or slow, within its
timeouts), the brake and the one-check rule are per node only, as with
one node: a login is never refused or delayed because Redis is away.
"""

import hashlib
import uuid

from twisted.internet import task
from twisted.logger import Logger

from registryd.auth.throttle import _refusal
from registryd.shared.errors import SharedStateUnavailable

log = Logger()


class SharedLoginBrake:
    #: seconds a node's check holds the pair's lock unless released (a
    #: node that dies while checking frees the pair after this)
    lease = 30.0
    #: longest a check waits for another node's check of the same pair
    wait = 5.0
    #: longest pause between two tries for the pair's lock
    longest_retry = 0.1

    def __init__(self, state, throttle, reactor=None):
        """``state``: the nodes' :class:`registryd.interfaces.ISharedState`;
        ``throttle``: this node's throttle, whose delays and forget time
        the shared count follows; ``reactor``: the clock of the waits (the
        global reactor by default)."""
        self.state = state
        self.throttle = throttle
        self._reactor = reactor

    @staticmethod
    def _pair(address, user):
        # hashed: a user name is client input of any length and bytes
        return hashlib.sha256(f"{address}\0{user}".encode("utf-8", "surrogatepass")).hexdigest()

    async def check(self, address, user):
        """Raise TOOMANYREQUESTS while the pair is closed on any node."""
        try:
            wait = await self.state.remaining("brake:closed:" + self._pair(address, user))
        except SharedStateUnavailable:
            return
        if wait is not None and wait > 0:
            raise _refusal("too many failed logins for this user from this address", wait)

    async def checking(self, address, user):
        """Take the pair's check lock, waiting while another node checks
        the pair; returns the callable that lets it go.  Raises
        TOOMANYREQUESTS after ``wait`` seconds, or when the pair closed
        meanwhile.  Without the shared state: a no-op release at once."""
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        name, token = "brake:checking:" + self._pair(address, user), uuid.uuid4().hex
        deadline, pause = reactor.seconds() + self.wait, 0.01
        while True:
            try:
                if await self.state.acquire(name, token, self.lease):
                    break
            except SharedStateUnavailable:
                return lambda: None  # per node only, as with one node
            if reactor.seconds() + pause > deadline:
                raise _refusal("a login for this user from this address is being checked", 1)
            await task.deferLater(reactor, pause, lambda: None)
            pause = min(pause * 2, self.longest_retry)

        def release():
            self.state.release(name, token).addErrback(lambda _: None)

        try:
            await self.check(address, user)
        except BaseException:
            release()
            raise
        return release

    async def failed(self, address, user):
        pair = self._pair(address, user)
        try:
            failures = await self.state.incr("brake:failures:" + pair, 1, ttl=self.throttle.forget)
            delay = self.throttle.delay(failures)
            if delay > 0:
                await self.state.set("brake:closed:" + pair, b"1", ttl=delay)
        except SharedStateUnavailable:
            pass

    async def succeeded(self, address, user):
        pair = self._pair(address, user)
        try:
            await self.state.delete("brake:failures:" + pair)
            await self.state.delete("brake:closed:" + pair)
        except SharedStateUnavailable:
            pass

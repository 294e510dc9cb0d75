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
that worked before is never braked.  The "one check at a time per pair"
rule stays per node (the credentials' cache keys are per-node secrets, so
nodes cannot tell a repeat of the same password from a new guess).

When the shared state does not answer (Redis down or slow, within its
timeouts), the brake is per node only, as with one node: a login is never
refused or delayed because Redis is away.
"""

import hashlib

from twisted.logger import Logger

from registryd.auth.throttle import _refusal
from registryd.shared.errors import SharedStateUnavailable

log = Logger()


class SharedLoginBrake:
    def __init__(self, state, throttle):
        """``state``: the nodes' :class:`registryd.interfaces.ISharedState`;
        ``throttle``: this node's throttle, whose delays and forget time
        the shared count follows."""
        self.state = state
        self.throttle = throttle

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

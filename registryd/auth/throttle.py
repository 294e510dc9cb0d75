"""Slowing down password guessing: failed logins counted per client
address and user name.

After C{limit} failed logins for one user from one address within
C{window} seconds, further attempts for that pair are refused with 429
TOOMANYREQUESTS (and ``Retry-After``) until the oldest failure leaves the
window -- *before* any bcrypt runs, so guessing costs neither the user's
account nor the server's CPU (each bcrypt check takes tens of
milliseconds of a core).  Successful logins are never counted, and a
success clears the pair's failures.  The pair, not the user alone, is
counted so that a guesser cannot lock a user out from everywhere (behind
a reverse proxy every client has the proxy's address; the user name still
separates users).
"""

import collections
import math
import time

from registryd import errors

#: Failed logins for one (address, user) pair tolerated within WINDOW seconds.
LIMIT = 10
WINDOW = 60.0
#: Pairs remembered at most (stale ones are dropped first; then the oldest).
MAX_PAIRS = 10000


class LoginThrottle:
    def __init__(self, limit=LIMIT, window=WINDOW, clock=time.monotonic, max_pairs=MAX_PAIRS):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_pairs = max_pairs
        self._failures = collections.OrderedDict()  # (address, user) -> deque of times

    def _recent(self, key, now):
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def check(self, address, user):
        """Raise TOOMANYREQUESTS if this pair failed too often lately."""
        now = self.clock()
        failures = self._recent((address, user), now)
        if failures is not None and len(failures) >= self.limit:
            wait = max(1, math.ceil(self.window - (now - failures[0])))
            raise errors.TooManyRequests(
                f"too many failed logins for this user from this address; retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )

    def failed(self, address, user):
        now = self.clock()
        key = (address, user)
        failures = self._recent(key, now)
        if failures is None:
            if len(self._failures) >= self.max_pairs:
                self._prune(now)
            failures = self._failures[key] = collections.deque(maxlen=self.limit)
        failures.append(now)
        self._failures.move_to_end(key)

    def succeeded(self, address, user):
        self._failures.pop((address, user), None)

    def _prune(self, now):
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= self.max_pairs:
            self._failures.popitem(last=False)

    def __len__(self):
        return len(self._failures)

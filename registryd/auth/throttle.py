"""Slowing down password guessing without locking anyone out.

The brake works per (client address, user) pair and only on credentials
that are not already known to be right: the checker
(``registryd.auth.htpasswd``) answers credentials it verified lately from
its cache *before* asking this throttle, so a correct password that worked
before is never slowed or refused, however hard someone behind the same
NAT or proxy guesses at the same user.

For the other attempts:

- The first ``free`` failures of a pair cost nothing extra (typos).  After
  that each failure closes the pair for an exponentially growing time
  (``base``, twice that, ... up to ``cap`` seconds); an attempt while it is
  closed gets 429 TOOMANYREQUESTS with ``Retry-After`` *before* any bcrypt
  runs.  So a guesser gets about one try per ``cap`` seconds per pair and
  the server's CPU is not spent on the rest.  Nothing is locked for good:
  once the delay has passed the next attempt is checked, so a correct new
  password gets in at the latest ``cap`` seconds later.
- One check at a time per pair: while the bcrypt of one password runs, a
  *different* password for the same pair gets 429 (a guesser cannot
  parallelise), while the same password joins the running check (docker
  sends its layers in parallel with the same credentials).
- A success clears the pair's failures; failures are forgotten after
  ``forget`` quiet seconds.

The pair, not the user alone, is counted so that a guesser elsewhere
cannot slow a user down everywhere.  Memory is bounded by ``max_pairs``
(quiet pairs are dropped first, then the longest-unused of those with the
fewest failures).
"""

import collections
import contextlib
import math
import time

import attr

from registryd import errors

#: Failures of one pair that cost no delay.
FREE = 5
#: The delay after the first failure beyond the free ones, doubled after each further one.
BASE = 1.0
#: The longest delay between two checks of one pair.
CAP = 60.0
#: Seconds without a failure after which a pair's failures are forgotten.
FORGET = 900.0
#: Pairs remembered at most.
MAX_PAIRS = 10000


@attr.s(slots=True)
class _Pair:
    failures = attr.ib(default=0)
    last_failure = attr.ib(default=0.0)
    #: the credentials key being checked now, and how many attempts share it
    checking = attr.ib(default=None)
    sharing = attr.ib(default=0)


class LoginThrottle:
    def __init__(
        self,
        free=FREE,
        base=BASE,
        cap=CAP,
        forget=FORGET,
        clock=time.monotonic,
        max_pairs=MAX_PAIRS,
    ):
        self.free = free
        self.base = base
        self.cap = cap
        self.forget = forget
        self.clock = clock
        self.max_pairs = max_pairs
        self._pairs = collections.OrderedDict()  # (address, user) -> _Pair

    def delay(self, failures):
        """Seconds a pair with ``failures`` recent failures waits between checks."""
        if failures < self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - self.free, 64))

    def _current(self, key, now):
        pair = self._pairs.get(key)
        if pair is not None and pair.failures and now - pair.last_failure >= self.forget:
            pair.failures = 0
        if pair is not None and not pair.failures and pair.checking is None:
            del self._pairs[key]
            return None
        return pair

    @contextlib.contextmanager
    def attempt(self, address, user, credentials_key):
        """Around the check of credentials (``credentials_key``: any
        hashable naming them) that are not known to be right: raises
        TOOMANYREQUESTS while the pair is closed or checking other
        credentials."""
        key = (address, user)
        now = self.clock()
        pair = self._current(key, now)
        if pair is not None:
            if pair.checking is not None and pair.checking != credentials_key:
                raise _refusal("a login for this user from this address is being checked", 1)
            wait = pair.last_failure + self.delay(pair.failures) - now
            if pair.failures and wait > 0:
                raise _refusal("too many failed logins for this user from this address", wait)
        else:
            pair = self._add(key, now)
        pair.checking = credentials_key
        pair.sharing += 1
        self._pairs.move_to_end(key)
        try:
            yield
        finally:
            pair.sharing -= 1
            if not pair.sharing:
                pair.checking = None
                if not pair.failures and self._pairs.get(key) is pair:
                    del self._pairs[key]

    def failed(self, address, user):
        now = self.clock()
        key = (address, user)
        pair = self._current(key, now) or self._add(key, now)
        pair.failures += 1
        pair.last_failure = now
        self._pairs.move_to_end(key)

    def succeeded(self, address, user):
        pair = self._pairs.get((address, user))
        if pair is not None:
            pair.failures = 0
            if pair.checking is None:
                del self._pairs[(address, user)]

    def _add(self, key, now):
        if len(self._pairs) >= self.max_pairs:
            for stale in list(self._pairs):
                self._current(stale, now)
            while len(self._pairs) >= self.max_pairs:
                # the longest-unused of the pairs with the fewest failures:
                # a flood of new pairs (user names cost nothing) must not
                # wipe out the count of the pair being guessed at
                del self._pairs[min(self._pairs, key=lambda k: self._pairs[k].failures)]
        pair = self._pairs[key] = _Pair()
        return pair

    def __len__(self):
        return len(self._pairs)


def _refusal(why, wait):
    wait = max(1, math.ceil(wait))
    return errors.TooManyRequests(f"{why}; retry in {wait}s", headers={"Retry-After": str(wait)})

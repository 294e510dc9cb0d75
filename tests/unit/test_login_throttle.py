"""registryd.auth.throttle: failed logins counted per (address, user)."""

import pytest

from registryd import errors
from registryd.auth.throttle import LoginThrottle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_limit_applies_to_one_pair_within_the_window():
    clock = Clock()
    throttle = LoginThrottle(limit=3, window=60, clock=clock)
    for _ in range(3):
        throttle.check("10.0.0.1", "alice")
        throttle.failed("10.0.0.1", "alice")
        clock.now += 1
    with pytest.raises(errors.TooManyRequests) as info:
        throttle.check("10.0.0.1", "alice")
    assert info.value.headers == {"Retry-After": "57"}  # at 1003; the first failure leaves at 1060
    throttle.check("10.0.0.2", "alice")  # another address
    throttle.check("10.0.0.1", "bob")  # another user
    clock.now = 1060.0
    throttle.check("10.0.0.1", "alice")  # the first failure aged out


def test_a_success_clears_and_memory_is_bounded():
    clock = Clock()
    throttle = LoginThrottle(limit=2, window=60, clock=clock, max_pairs=3)
    throttle.failed("a", "alice")
    throttle.failed("a", "alice")
    throttle.succeeded("a", "alice")
    throttle.check("a", "alice")
    for user in ("u1", "u2", "u3", "u4"):
        throttle.failed("a", user)
    assert len(throttle) == 3  # the oldest pair went
    clock.now += 61
    throttle.failed("a", "u5")
    assert len(throttle) == 1  # stale pairs are pruned first

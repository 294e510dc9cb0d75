"""Unit tests run on the one reactor of the whole session: a timer one
leaves behind fires later in whichever test is running then (a channel's
60 s idle timeout on a test transport once logged "Cannot unregister a
producer" into an API test's hypothesis examples a minute later)."""

import pytest


@pytest.fixture(autouse=True)
def no_timer_left_on_the_reactor():
    """Fail a unit test that leaves a delayed call on the global reactor
    (and cancel it): unit tests use clocks of their own."""
    from twisted.internet import reactor

    before = set(reactor.getDelayedCalls())
    yield
    left = [c for c in reactor.getDelayedCalls() if c not in before and c.active()]
    # Described before cancelling: a cancelled call forgets its function.
    described = ", ".join(
        f"{call.func!r:.100} in {call.getTime() - reactor.seconds():.0f} s" for call in left
    )
    for call in left:
        call.cancel()
    assert not left, "timers left on the global reactor: " + described

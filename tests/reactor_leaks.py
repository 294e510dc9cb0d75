"""What a test left running on the session's one reactor.

Every test of a pytest run shares one reactor (pytest-twisted's).  A timer
a test leaves behind fires later inside whichever test runs then (a
channel's 60 s idle timeout once logged "Cannot unregister a producer"
into an API test's hypothesis examples a minute later), and a listening
port or connection left open keeps answering, or holds a file, in tests
that never asked for it.  The conftests of ``tests/unit`` and
``tests/integration`` fail a test that leaves one, naming it, and clean it
up so that the next test starts clean.

Nothing here imports the reactor at module level: pytest-twisted
installs its reactor in ``pytest_configure``, after conftests are imported.
"""

import time

import attr


def reactor_own(selectable):
    """The reactor's own wakers, which it adds when it starts running (in
    whichever test runs first): the thread waker (``callFromThread``) and
    the ``SIGCHLD`` waker of child processes."""
    return type(selectable).__module__ == "twisted.internet._signals"


@attr.s(frozen=True)
class Snapshot:
    """The reactor's timers and selectables (ports, connections, pipes) at
    one moment."""

    timers = attr.ib()
    selectables = attr.ib()

    @classmethod
    def of(cls, reactor):
        return cls(
            timers=frozenset(reactor.getDelayedCalls()),
            selectables=frozenset(reactor.getReaders()) | frozenset(reactor.getWriters()),
        )


@attr.s(frozen=True)
class Leftovers:
    """What is on the reactor now and was not in ``before``, but for what
    ``allowed`` accepts."""

    timers = attr.ib()
    selectables = attr.ib()

    @classmethod
    def since(cls, reactor, before, allowed=lambda thing: False):
        now = Snapshot.of(reactor)
        return cls(
            timers=[
                call for call in now.timers - before.timers if call.active() and not allowed(call)
            ],
            selectables=[
                selectable
                for selectable in now.selectables - before.selectables
                if not reactor_own(selectable) and not allowed(selectable)
            ],
        )

    def __bool__(self):
        return bool(self.timers or self.selectables)

    def describe(self, reactor):
        """One line naming each leftover (before :meth:`clean_up`: a
        cancelled call forgets its function)."""
        parts = [
            f"timer {call.func!r:.100}{call.args!r:.100} in {call.getTime() - reactor.seconds():.0f} s"
            for call in self.timers
        ]
        parts += [f"{selectable!r:.120}" for selectable in self.selectables]
        return ", ".join(parts)

    def clean_up(self):
        """Cancel the timers, close the ports and connections."""
        for call in self.timers:
            if call.active():
                call.cancel()
        for selectable in self.selectables:
            if hasattr(selectable, "stopListening"):
                selectable.stopListening()
            elif hasattr(selectable, "abortConnection"):
                selectable.abortConnection()
            elif hasattr(selectable, "loseConnection"):
                selectable.loseConnection()


def check_now(reactor, before, allowed=lambda thing: False):
    """Fail (after cleaning up) when the reactor holds what it did not at
    ``before``: for tests that never turn the reactor, so nothing they
    started can still be ending."""
    left = Leftovers.since(reactor, before, allowed)
    described = left.describe(reactor)
    left.clean_up()
    assert not left, "left on the session's reactor: " + described


#: Seconds ahead a timer left at a test's end may be due and still be
#: waited for (a short timeout the test set, about to fire or be
#: cancelled) rather than count as left behind.
TIMER_PATIENCE = 5.0


async def check_settled(reactor, before, allowed=lambda thing: False, timeout=60.0):
    """Like :func:`check_now`, for tests on real ports: a connection whose
    ends were closed leaves the reactor only once the close is seen, and
    cancels its timers then; and a timer due within :data:`TIMER_PATIENCE`
    seconds ends the test's own business when it fires.  So before
    anything counts as left behind, the reactor turns until no port or
    connection is left and no timer left is due that soon (up to
    ``timeout`` seconds: far beyond a close on a busy machine).  A test
    that left nothing pays nothing."""
    from twisted.internet import task

    deadline = time.monotonic() + timeout
    while True:
        left = Leftovers.since(reactor, before, allowed)
        remaining = deadline - time.monotonic()
        soon = min(remaining, TIMER_PATIENCE)
        due_soon = [call for call in left.timers if call.getTime() - reactor.seconds() <= soon]
        if remaining <= 0 or not (left.selectables or due_soon):
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    check_now(reactor, before, allowed)


def nothing_left_by_a_unit_test():
    """A fixture for ``tests/unit`` (autouse there): fail a test that leaves a
    delayed call, a port or a connection on the reactor (and clean it up).
    Unit tests use clocks and transports of their own."""
    from twisted.internet import reactor

    before = Snapshot.of(reactor)
    yield
    check_now(reactor, before)


async def nothing_left_by_an_api_test():
    """An async fixture for tests on real ports (autouse in
    ``tests/integration``): fail a test that leaves a timer, a listening
    port or a connection on the reactor once its fixtures are torn down
    and what it closed has closed (:func:`check_settled`), and clean it
    up, so the next test starts clean.  This fixture is set up before, and so torn down after, the
    test's own fixtures (pytest runs autouse fixtures first)."""
    from twisted.internet import reactor

    before = Snapshot.of(reactor)
    yield
    await check_settled(reactor, before)

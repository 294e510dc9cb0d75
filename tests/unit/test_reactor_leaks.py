"""The guard of the tests' shared reactor (:mod:`tests.reactor_leaks`): it
names what a test left, cleans it up, and waits for what is closing."""

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor, task

from tests.reactor_leaks import Snapshot, check_now, check_settled


def test_a_timer_left_behind_is_named_and_cancelled():
    before = Snapshot.of(reactor)
    call = reactor.callLater(60, print, "too late")
    with pytest.raises(
        AssertionError, match=r"left on the session's reactor: timer .*print.* in 60 s"
    ):
        check_now(reactor, before)
    assert not call.active()


def test_a_timer_allowed_by_name_is_not_a_leak():
    before = Snapshot.of(reactor)
    call = reactor.callLater(60, print, "allowed")
    try:
        check_now(reactor, before, allowed=lambda thing: thing is call)
        assert call.active()
    finally:
        call.cancel()


@pytest_twisted.ensureDeferred
async def test_a_listening_port_left_behind_is_named_and_closed():
    before = Snapshot.of(reactor)
    port = reactor.listenTCP(
        0, protocol.Factory.forProtocol(protocol.Protocol), interface="127.0.0.1"
    )
    with pytest.raises(AssertionError, match="left on the session's reactor: <.*Port"):
        check_now(reactor, before)
    assert port not in reactor.getReaders()
    await task.deferLater(reactor, 0, lambda: None)  # the port's close is told next turn


async def connected_pair():
    """A real loopback connection: (server protocol, client protocol, port)."""
    from twisted.internet.endpoints import TCP4ClientEndpoint

    accepted = []

    class Accepting(protocol.Protocol):
        def connectionMade(self):
            accepted.append(self)

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Accepting), interface="127.0.0.1")
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client = await endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
    from tests.service_support import wait_for

    await wait_for(lambda: accepted, timeout=60)
    return accepted[0], client, port


@pytest_twisted.ensureDeferred
async def test_a_connection_being_closed_is_waited_for_not_reported():
    """Both ends closed at the test's end are still on the reactor until
    the close is seen: that is no leak."""
    before = Snapshot.of(reactor)
    server, client, port = await connected_pair()
    await port.stopListening()
    client.transport.loseConnection()
    await check_settled(reactor, before)


@pytest_twisted.ensureDeferred
async def test_a_connection_left_open_is_named_and_closed_after_the_wait():
    before = Snapshot.of(reactor)
    server, client, port = await connected_pair()
    await port.stopListening()
    with pytest.raises(AssertionError, match="left on the session's reactor: <.*Client"):
        await check_settled(reactor, before, timeout=0.5)
    # Aborted by the guard: both ends go.
    await check_settled(reactor, before)

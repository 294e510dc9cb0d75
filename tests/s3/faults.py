"""A TCP proxy in front of the real S3 store that can be made to fail.

Modes: ``forward`` (bytes pass both ways), ``refuse`` (nothing listens:
connections are refused), ``error`` (every request gets the 503 "SlowDown"
an overloaded S3 sends), ``hang`` (connections are accepted and never
answered).  Switching modes drops the connections open at the time, as a
store that goes away would, so pooled client connections see it at once.

Runs in the test process's reactor; import it only inside tests.
"""

from twisted.internet import defer, protocol
from twisted.protocols import portforward

SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\n"
    b"Content-Type: application/xml\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n\r\n"
)
SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
)


class _Tracked:
    """Mixin: registers live connections with the factory."""

    def connectionMade(self):
        self.factory.live.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        self.factory.live.discard(self)
        super().connectionLost(reason)


class _Forward(_Tracked, portforward.ProxyServer):
    pass


class _Error(_Tracked, protocol.Protocol):
    def connectionMade(self):
        super().connectionMade()
        self.received = b""

    def dataReceived(self, data):
        self.received += data
        if b"\r\n\r\n" in self.received:
            self.transport.write(SLOW_DOWN % len(SLOW_DOWN_BODY) + SLOW_DOWN_BODY)
            self.transport.loseConnection()


class _Hang(_Tracked, protocol.Protocol):
    pass


class _Factory(protocol.ServerFactory):
    def __init__(self, store):
        self.store = store
        self.live = set()
        self.host, self.port = store.target

    def buildProtocol(self, address):
        cls = {"forward": _Forward, "error": _Error, "hang": _Hang}[self.store.mode]
        built = cls()
        built.factory = self
        return built


class FaultyStore:
    """``endpoint`` is what the registry under test should use."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.mode = "forward"
        self.port = None
        self._listening = None
        self._factory = _Factory(self)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def _listen(self):
        from twisted.internet import reactor

        self._listening = reactor.listenTCP(self.port or 0, self._factory, interface="127.0.0.1")
        self.port = self._listening.getHost().port

    def start(self):
        self._listen()
        return self

    async def set_mode(self, mode):
        assert mode in ("forward", "refuse", "error", "hang"), mode
        self.mode = mode
        for connection in list(self._factory.live):
            connection.transport.abortConnection()
            peer = getattr(connection, "peer", None)
            if peer is not None and peer.transport is not None:
                peer.transport.abortConnection()
        if mode == "refuse" and self._listening is not None:
            await self._listening.stopListening()
            self._listening = None
        elif mode != "refuse" and self._listening is None:
            self._listen()

    async def stop(self):
        await self.set_mode("refuse")
        await defer.succeed(None)

"""Test support for the whole RegistryService (health, metrics, logs,
notifications): a configuration file in, a running service on real
loopback ports out; and a real webhook receiver.

Nothing here imports the reactor at module level (pytest-twisted installs
it in pytest_configure).
"""

import contextlib
import json
import textwrap
import time

import attr

from tests.e2e.tools import free_port, free_ports


@attr.s
class RunningService:
    service = attr.ib()
    url = attr.ib()
    debug_url = attr.ib()
    config_path = attr.ib()
    client = attr.ib()
    pool = attr.ib()

    def v2(self, path):
        return f"{self.url}/v2/{path}"

    async def stop(self):
        await self.pool.closeCachedConnections()
        await self.service.stopService()


async def start_service(tmp_path, text, **values):
    """Write ``text`` (YAML; ``{port}``, ``{debug_port}``, ``{root}`` and any
    ``values`` are substituted) to a file, load it, start a RegistryService."""
    from twisted.internet import reactor

    from registryd.config import load_config
    from registryd.runtime.composition import compose
    from registryd.runtime.service import RegistryService
    from registryd.runtime.startup import from_config
    from tests.support import make_client

    port, debug_port = free_ports(2)
    values.setdefault("port", port)
    values.setdefault("debug_port", debug_port)
    values.setdefault("root", str(tmp_path / "registry-data"))
    path = tmp_path / "registryd.yaml"
    path.write_text(textwrap.dedent(text).format(**values))
    config = load_config(str(path))
    service = RegistryService(compose(from_config(config, config_path=str(path))))
    service.privilegedStartService()
    service.startService()
    client, pool = make_client(reactor)
    return RunningService(
        client=client,
        pool=pool,
        service=service,
        url=f"http://127.0.0.1:{values['port']}",
        debug_url=f"http://127.0.0.1:{values['debug_port']}",
        config_path=str(path),
    )


@contextlib.asynccontextmanager
async def running_nodes(tmp_path, text, labels="ab", **values):
    """One service per label (nodes of one registry: each its own
    directory and ports, all on the storage root ``tmp_path/registry-data``),
    started in order and stopped afterwards."""
    started = []
    try:
        for label in labels:
            directory = tmp_path / label
            directory.mkdir()
            started.append(
                await start_service(directory, text, root=str(tmp_path / "registry-data"), **values)
            )
        yield started
    finally:
        for node in started:
            await node.stop()


async def wait_for(predicate, timeout=10.0, interval=0.02):
    """Poll ``predicate`` (sync) on the reactor until it is true."""
    from twisted.internet import reactor, task

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        await task.deferLater(reactor, interval, lambda: None)


class Receiver:
    """A real webhook receiver: a twisted.web server on a loopback port.

    Records every POSTed envelope with its headers.  ``statuses`` lists the
    answers to give, in order (then 200); ``hang`` keeps requests open
    forever.  ``stop`` and ``start`` take it down and up on the same port.
    """

    def __init__(self, port=None):
        self.port = port or free_port()
        self.requests = []  # (headers dict, parsed body)
        self.statuses = []
        self.hang = False
        self._listening = None
        self._open = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/events"

    @property
    def events(self):
        return [event for _, body in self.requests for event in body["events"]]

    def start(self):
        from twisted.internet import reactor
        from twisted.web.resource import Resource
        from twisted.web.server import NOT_DONE_YET, Site

        receiver = self

        class Events(Resource):
            isLeaf = True

            def render_POST(self, request):
                if receiver.hang:
                    receiver._open.append(request)
                    return NOT_DONE_YET
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                request.setResponseCode(status)
                if 200 <= status < 400:
                    headers = {
                        name.decode().lower(): [v.decode() for v in values]
                        for name, values in request.requestHeaders.getAllRawHeaders()
                    }
                    receiver.requests.append((headers, json.loads(request.content.read())))
                return b"ok"

        connections = self._connections = []

        class RecordingSite(Site):
            def buildProtocol(self, addr):
                protocol = super().buildProtocol(addr)
                connections.append(protocol)
                return protocol

            def log(self, request):
                pass

        site = RecordingSite(Events())
        self._listening = reactor.listenTCP(self.port, site, interface="127.0.0.1")
        return self

    async def stop(self):
        self._open = []
        for protocol in getattr(self, "_connections", []):
            if getattr(protocol, "transport", None) is not None:
                protocol.transport.abortConnection()
        if self._listening is not None:
            listening, self._listening = self._listening, None
            await listening.stopListening()

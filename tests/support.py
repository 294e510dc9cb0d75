"""Test support: a real registryd on a real loopback port, a real HTTP client.

Nothing here imports the reactor at module level: pytest-twisted installs
its reactor in pytest_configure, after conftest modules are imported.
"""

import contextlib
import hashlib
import os

import attr
import pytest
import pytest_twisted
from twisted.web.client import HTTPConnectionPool


def registryd_command(*args, cwd):
    """``python -m registryd ARGS`` in a process of its own, in directory
    ``cwd`` and importing this tree; its CompletedProcess (text output)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-m", "registryd", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=root),
        cwd=cwd,
        timeout=60,
    )


@attr.s
class RunningRegistry:
    url = attr.ib()
    registry = attr.ib()
    root = attr.ib()
    port = attr.ib()
    client = attr.ib()

    def v2(self, path):
        return f"{self.url}/v2/{path}"


def make_client(reactor):
    """A treq client on a persistent :class:`ClosingPool`: (client, pool)."""
    import treq.client
    from twisted.web.client import Agent

    pool = ClosingPool(reactor)
    pool.maxPersistentPerHost = 8
    return treq.client.HTTPClient(Agent(reactor, pool=pool)), pool


class ClosingPool(HTTPConnectionPool):
    """A persistent connection pool whose ``closeCachedConnections``
    closes every connection it opened, idle or not, and returns once
    they are closed.

    Twisted's closes the idle ones only.  A connection whose response
    came before its request was sent whole (a ``403`` to a manifest
    ``PUT`` the server refused at once) becomes idle a moment after the
    response, so a test that stopped right after it left the connection
    open and the pool's 240 s timer on the reactor, for whichever test
    ran later (:mod:`tests.reactor_leaks`)."""

    def __init__(self, reactor):
        super().__init__(reactor, persistent=True)
        self._opened = []

    def getConnection(self, key, endpoint):
        def remember(protocol):
            # A reused connection comes wrapped (no transport): it was
            # remembered when it was opened.
            if getattr(protocol, "transport", None) is not None:
                self._opened.append(protocol)
            return protocol

        return super().getConnection(key, endpoint).addCallback(remember)

    def closeCachedConnections(self):
        from twisted.internet import defer

        opened, self._opened = self._opened, []
        closing = []
        for protocol in opened:
            transport = protocol.transport
            if transport is not None and transport.connected:
                # Fires once the close is seen: no connection can come
                # back to the pool after that, and the timers of those
                # that came back meanwhile are cancelled last.
                closing.append(protocol.abort())
                transport.abortConnection()  # abort() only asks nicely
        closed = defer.gatherResults(closing)
        return closed.addCallback(lambda _: super(ClosingPool, self).closeCachedConnections())


async def start_registry(
    root,
    delete_enabled=True,
    host=None,
    headers=None,
    accept_sparse=False,
    accept_sparse_images=False,
    driver=None,
    immutable_tags=None,
    pulls=None,
    quotas=(),
):
    """Serve a filesystem registry at ``root`` on 127.0.0.1:<free port>
    (or on ``driver``, when given: a wrapped or instrumented one).
    ``pulls``: called with the registry, returns the app's pull recorder."""
    from twisted.internet import reactor

    from registryd.http.app import RegistryApp
    from registryd.http.urls import URLBuilder
    from registryd.http.web import StreamingSite
    from registryd.storage.drivers.filesystem import FilesystemDriver
    from registryd.storage.registry import Registry

    registry = Registry(
        driver or FilesystemDriver(str(root)),
        delete_enabled=delete_enabled,
        accept_sparse_manifests=accept_sparse,
        accept_sparse_images=accept_sparse_images,
        immutable_tags=immutable_tags,
        quotas=quotas,
    )
    site = StreamingSite(
        RegistryApp(
            registry,
            urls=URLBuilder(host),
            headers=headers,
            pulls=pulls(registry) if pulls is not None else None,
        ).resource()
    )
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return registry, port


@contextlib.asynccontextmanager
async def serving(tmp_path, **options):
    """A filesystem registry on a loopback port (``start_registry``'s
    ``options``), with a treq client whose connections are closed afterwards."""
    from twisted.internet import reactor

    root = tmp_path / "registry-data"
    registry, port = await start_registry(root, **options)
    client, pool = make_client(reactor)
    running = RunningRegistry(
        url=f"http://127.0.0.1:{port.getHost().port}",
        registry=registry,
        root=root,
        port=port,
        client=client,
    )
    try:
        yield running
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.async_yield_fixture
async def server(tmp_path):
    """A filesystem registry (deletes enabled) on a loopback port, with a
    treq client whose connections are closed afterwards."""
    async with serving(tmp_path) as running:
        yield running


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data):
    return "sha512:" + hashlib.sha512(data).hexdigest()


def random_bytes(size):
    return os.urandom(size)


#: Seconds a test request may wait for its answer before the test fails
#: saying so: far beyond any answer on a busy machine, far below a hung
#: CI job's limit.
ANSWER_TIMEOUT = 120


def exchange(port, request_bytes, read_body=True, timeout=ANSWER_TIMEOUT):
    """Send ``request_bytes`` to 127.0.0.1:``port`` on a fresh blocking socket;
    return the response as (status, {lowercase header: first value}, body).
    Blocks: call it from a thread, never from the reactor's.

    :raises TimeoutError: no answer (or no more of it) within ``timeout``
        seconds of silence, naming the request."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request_bytes)
            status, headers, rest = read_response_head(sock)
            length = int(headers.get("content-length", "0"))
            if read_body:
                while len(rest) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
            return status, headers, rest
    except socket.timeout:
        line = request_bytes.split(b"\r\n", 1)[0][:200]
        raise TimeoutError(f"127.0.0.1:{port} did not answer {line!r} within {timeout} s") from None


def read_response_head(sock):
    """Read one response's head from a blocking socket: (status, {lowercase
    header: first value}, body bytes read past the head).
    :raises ConnectionError: the server closed without a response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data:
        raise ConnectionError("the server closed the connection without a response")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower().decode(), value.strip().decode())
    return status, headers, rest


def raw_request_bytes(port, method, path, headers=(), body=b"", host=None):
    """One HTTP/1.1 request exactly as written (``path`` str or bytes), with
    Host (``host``, else the server's address), ``Connection: close`` and,
    for a body or an upload method, Content-Length."""
    if isinstance(path, str):
        path = path.encode("latin-1")
    lines = [f"Host: {host if host is not None else f'127.0.0.1:{port}'}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("PUT", "POST", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    head = method.encode("latin-1") + b" " + path + b" HTTP/1.1\r\n"
    return head + ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def raw_request(server, method, path, headers=(), body=b""):
    """One HTTP/1.1 request on a fresh socket, exactly as written: no client
    library normalises the path or hides Content-Length.  Returns
    (status, {lowercase header: first value}, body)."""
    from twisted.internet.threads import deferToThread

    port = server.port.getHost().port
    request_bytes = raw_request_bytes(port, method, path, headers, body)
    return await deferToThread(exchange, port, request_bytes, method != "HEAD")


@pytest.fixture
def logged_failures():
    """Every log event that carries a failure (a traceback) or is logged
    as an error, while the test runs: a client's bad request must cause
    none."""
    from twisted.logger import LogLevel, globalLogPublisher

    found = []

    def observe(event):
        if (
            "log_failure" in event
            or event.get("isError")
            or event.get("log_level") in (LogLevel.error, LogLevel.critical)
        ):
            found.append(event)

    globalLogPublisher.addObserver(observe)
    yield found
    globalLogPublisher.removeObserver(observe)


def run_examples(test):
    """Run a hypothesis-decorated ``test`` in a thread, so that it can make
    blocking requests (``exchange``, or ``in_reactor``) to a server that the
    reactor, in the test's thread, serves meanwhile."""
    from twisted.internet.threads import deferToThread

    return deferToThread(test)


def in_reactor(coroutine_function, *args, timeout=ANSWER_TIMEOUT):
    """From a thread (see ``run_examples``): run ``coroutine_function(*args)``
    in the reactor and wait for its result.

    A request the server never answers must fail the test, not hang it
    (hypothesis would wait on it for good):
    :raises TimeoutError: no result within ``timeout`` seconds, naming
        the call (which is cancelled)."""
    from twisted.internet import defer, reactor, threads

    def timed_out(_cancelled, _timeout):
        shown = ", ".join(repr(arg)[:100] for arg in args)
        raise TimeoutError(
            f"{coroutine_function.__name__}({shown}) did not finish within {timeout} s"
        )

    def start():
        running = defer.ensureDeferred(coroutine_function(*args))
        return running.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)

    return threads.blockingCallFromThread(reactor, start)

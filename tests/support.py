"""Test support: a real registryd on a real loopback port, a real HTTP client.

Nothing here imports the reactor at module level: pytest-twisted installs
its reactor in pytest_configure, after conftest modules are imported.
"""

import hashlib
import os

import attr
import pytest_twisted


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
    import treq.client
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 8
    return treq.client.HTTPClient(Agent(reactor, pool=pool)), pool


async def start_registry(root, delete_enabled=True, host=None, headers=None, accept_sparse=False,
                         accept_sparse_images=False):
    """Serve a filesystem registry at C{root} on 127.0.0.1:<free port>."""
    from twisted.internet import reactor

    from registryd.app import RegistryApp
    from registryd.storage.drivers.filesystem import FilesystemDriver
    from registryd.storage.registry import Registry
    from registryd.urls import URLBuilder
    from registryd.web import StreamingSite

    registry = Registry(
        FilesystemDriver(str(root)), delete_enabled=delete_enabled, accept_sparse_manifests=accept_sparse,
        accept_sparse_images=accept_sparse_images,
    )
    site = StreamingSite(RegistryApp(registry, urls=URLBuilder(host), headers=headers).resource())
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return registry, port


@pytest_twisted.async_yield_fixture
async def server(tmp_path):
    """A filesystem registry (deletes enabled) on a loopback port, with a
    treq client whose connections are closed afterwards."""
    from twisted.internet import reactor

    root = tmp_path / "registry-data"
    registry, port = await start_registry(root)
    client, pool = make_client(reactor)
    running = RunningRegistry(
        url=f"http://127.0.0.1:{port.getHost().port}",
        registry=registry, root=root, port=port, client=client,
    )
    yield running
    await pool.closeCachedConnections()
    await port.stopListening()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data):
    return "sha512:" + hashlib.sha512(data).hexdigest()


def random_bytes(size):
    return os.urandom(size)


def _raw_exchange(host, port, request_bytes, read_body=True, timeout=10):
    import socket

    with socket.create_connection((host, port), timeout=timeout) as sock:
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


def read_response_head(sock):
    """Read one response's head from a blocking socket: (status, {lowercase
    header: first value}, body bytes read past the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower().decode(), value.strip().decode())
    return status, headers, rest


async def raw_request(server, method, path, headers=(), body=b""):
    """One HTTP/1.1 request on a fresh socket, exactly as written: no client
    library normalises the path or hides Content-Length.  Returns
    (status, {lowercase header: first value}, body)."""
    from twisted.internet.threads import deferToThread

    host, port = "127.0.0.1", server.port.getHost().port
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("PUT", "POST", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    request_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return await deferToThread(_raw_exchange, host, port, request_bytes, method != "HEAD")

"""Connection-level behaviour of registryd's HTTP channel."""

import socket
import time

import pytest_twisted
from twisted.internet.threads import deferToThread


@pytest_twisted.ensureDeferred
async def test_tls_client_hello_on_plain_port_is_refused_at_once(server):
    """docker and skopeo probe HTTPS first; a plain port must say no at once."""

    def probe(port):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        return received, time.monotonic() - started

    received, elapsed = await deferToThread(probe, server.port.getHost().port)
    assert received.startswith(b"HTTP/1.0 400 ")
    assert elapsed < 2

"""Blob GETs sent with sendfile (registryd.http.sendfile) over a real socket.

The filesystem driver's readers offer their descriptor and the test
server listens on plain TCP, so every blob GET here takes the sendfile
path; these tests pin down what must hold for it: exact bytes for whole
and ranged GETs, headers never overtaken by the body on a kept-alive or
pipelined connection, slow clients, clients that leave mid-body (no
descriptor leaks, the server keeps serving), and the read-and-write path
that TLS and other drivers use.
"""

import hashlib
import os
import socket
import time

import pytest
import pytest_twisted

from registryd.http import sendfile
from registryd.http.web import BlobSender
from tests.support import sha256

MIB = 1024 * 1024


async def push(server, name, data):
    digest = sha256(data)
    response = await server.client.post(
        server.v2(f"{name}/blobs/uploads/?digest={digest}"),
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    await response.content()
    assert response.code == 201
    return digest


def _request(port, path, headers=()):
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RawClient:
    """HTTP/1.1 over one socket, written by hand to see exactly what the
    server sends (and in what order)."""

    def __init__(self, port, receive_buffer=None):
        self.port = port
        self.sock = socket.socket()
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, limit=65536):
        data = self.sock.recv(limit)
        if not data:
            raise ConnectionError("closed by the server")
        self.buffer += data

    def response(self, delay=0.0, limit=65536):
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        hasher = hashlib.sha256()
        received = 0
        while received < length:
            if not self.buffer:
                if delay:
                    time.sleep(delay)
                self._fill(limit)
            piece, self.buffer = self.buffer[: length - received], self.buffer[length - received :]
            hasher.update(piece)
            received += len(piece)
        return int(lines[0].split()[1]), headers, "sha256:" + hasher.hexdigest()

    def close(self):
        self.sock.close()


def in_thread(function, *args):
    from twisted.internet.threads import deferToThread

    return deferToThread(function, *args)


@pytest.fixture
def sendfile_calls(monkeypatch):
    calls = []
    real = os.sendfile

    def counting(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


def open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest_twisted.ensureDeferred
async def test_whole_and_ranged_gets_are_sent_with_sendfile(server, sendfile_calls):
    data = os.urandom(5 * MIB + 123)
    digest = await push(server, "sf/app", data)
    port = server.port.getHost().port

    def exchange():
        client = RawClient(port)
        try:
            client.send(_request(port, f"/v2/sf/app/blobs/{digest}"))
            whole = client.response()
            client.send(_request(port, f"/v2/sf/app/blobs/{digest}", ["Range: bytes=1000-2099999"]))
            ranged = client.response()
            return whole, ranged
        finally:
            client.close()

    (status, headers, got), (rstatus, rheaders, rgot) = await in_thread(exchange)
    assert status == 200 and got == digest
    assert headers["docker-content-digest"] == digest
    assert rstatus == 206
    assert rheaders["content-range"] == f"bytes 1000-2099999/{len(data)}"
    assert rgot == sha256(data[1000:2100000])
    assert len(sendfile_calls) >= 2  # both bodies went out with sendfile


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_get_their_responses_in_order(server, sendfile_calls):
    first = os.urandom(3 * MIB)
    second = os.urandom(2 * MIB + 7)
    digests = [await push(server, "sf/pipe", data) for data in (first, second)]
    port = server.port.getHost().port

    def exchange():
        client = RawClient(port)
        try:
            # Both requests in one write: twisted.web holds the second until
            # the first response is complete.
            client.send(b"".join(_request(port, f"/v2/sf/pipe/blobs/{d}") for d in digests))
            return [client.response(), client.response()]
        finally:
            client.close()

    responses = await in_thread(exchange)
    assert [r[2] for r in responses] == digests
    assert sendfile_calls


@pytest_twisted.ensureDeferred
async def test_slow_client_is_served_and_does_not_stall_others(server, sendfile_calls):
    data = os.urandom(6 * MIB)
    digest = await push(server, "sf/slow", data)
    port = server.port.getHost().port
    timings = {}

    def slow():
        client = RawClient(port, receive_buffer=64 * 1024)
        try:
            client.send(_request(port, f"/v2/sf/slow/blobs/{digest}"))
            result = client.response(delay=0.01, limit=256 * 1024)
            timings["slow_done"] = time.monotonic()
            return result
        finally:
            client.close()

    slow_result = in_thread(slow)
    # Meanwhile the reactor answers others at once.
    started = time.monotonic()
    response = await server.client.get(server.v2(""))
    await response.content()
    assert response.code == 200
    answered = time.monotonic()
    status, _, got = await slow_result
    assert status == 200 and got == digest
    assert answered - started < 2.0
    assert answered < timings["slow_done"]


@pytest_twisted.ensureDeferred
async def test_client_leaving_mid_body_leaks_nothing(server, sendfile_calls):
    from twisted.internet import reactor, task

    data = os.urandom(32 * MIB)
    digest = await push(server, "sf/gone", data)
    port = server.port.getHost().port
    before = open_fds()

    def leave_early():
        client = RawClient(port, receive_buffer=64 * 1024)
        client.send(_request(port, f"/v2/sf/gone/blobs/{digest}"))
        while len(client.buffer) < MIB:
            client._fill()
        client.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        client.close()  # a reset, mid-body

    for _ in range(3):
        await in_thread(leave_early)
    for _ in range(100):
        if open_fds() <= before:
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    assert open_fds() <= before
    # And the server still serves the blob whole.
    response = await server.client.get(server.v2(f"sf/gone/blobs/{digest}"))
    assert sha256(await response.content()) == digest


@pytest_twisted.ensureDeferred
async def test_read_and_write_path_gives_the_same_bytes(server, monkeypatch, sendfile_calls):
    monkeypatch.setattr(BlobSender, "use_sendfile", False)
    data = os.urandom(3 * MIB + 5)
    digest = await push(server, "sf/plain", data)
    response = await server.client.get(server.v2(f"sf/plain/blobs/{digest}"))
    assert sha256(await response.content()) == digest
    response = await server.client.get(
        server.v2(f"sf/plain/blobs/{digest}"), headers={"Range": "bytes=10-19"}
    )
    assert response.code == 206 and await response.content() == data[10:20]
    assert sendfile_calls == []


def test_only_plain_socket_transports_qualify():
    class NotASocketTransport:
        connected = True
        disconnecting = False

    assert sendfile.socket_transport(NotASocketTransport()) is None
    assert sendfile.socket_transport(None) is None

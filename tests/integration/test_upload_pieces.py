"""A body that trickles in, as ``docker push`` sends one (gzipping while
it streams chunked PATCHes, ~64 KiB per socket read), reaches storage in
gathered pieces: the running service's storage metrics count the writes."""

import os
import socket
import time

import pytest_twisted
from twisted.internet.threads import deferToThread

from registryd.http.web import RequestBody
from registryd.ops import metrics
from tests.integration.test_health_metrics import BASE
from tests.service_support import start_service
from tests.support import read_response_head, sha256

KIB = 1024


def storage_writes():
    return metrics.sample(
        "registryd_storage_operation_duration_seconds_count", driver="filesystem", operation="write"
    )


def trickle_chunked_patch(port, path, pieces):
    """Send a chunked PATCH one piece at a time, a moment apart (as a
    client that compresses while it sends); return the response's
    status and headers."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/octet-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        for piece in pieces:
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.002)  # pacing, as a slow client's; nothing waits on it
        sock.sendall(b"0\r\n\r\n")
        status, headers, _ = read_response_head(sock)
        return status, headers


@pytest_twisted.ensureDeferred
async def test_a_trickled_patch_is_written_in_gathered_pieces(tmp_path):
    running = await start_service(tmp_path, BASE)
    try:
        response = await running.client.post(running.v2("trickle/app/blobs/uploads/"))
        await response.content()
        assert response.code == 202
        path = response.headers.getRawHeaders("Location")[0].split(running.url, 1)[-1]
        data = os.urandom(2048 * KIB)
        pieces = [data[i : i + 64 * KIB] for i in range(0, len(data), 64 * KIB)]
        before = storage_writes()
        port = int(running.url.rsplit(":", 1)[1])
        status, headers = await deferToThread(trickle_chunked_patch, port, path, pieces)
        assert (status, headers["range"]) == (202, f"0-{len(data) - 1}")
        writes = storage_writes() - before
        # Every piece but the last is at least RequestBody.gather bytes,
        # however the bytes arrived; one write per 64 KiB piece before.
        bound = len(data) // RequestBody.gather + 1
        assert 1 <= writes <= bound, f"{writes} storage writes for {len(pieces)} pieces"
        response = await running.client.put(
            f"{running.url}{path}&digest={sha256(data)}"
            if "?" in path
            else f"{running.url}{path}?digest={sha256(data)}"
        )
        await response.content()
        assert response.code == 201
    finally:
        await running.stop()


def trickle_patch(port, path, pieces):
    """As :func:`trickle_chunked_patch`, with a Content-Length."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {sum(map(len, pieces))}\r\n\r\n".encode()
        )
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.002)  # pacing, as a slow client's; nothing waits on it
        status, headers, _ = read_response_head(sock)
        return status, headers


@pytest_twisted.ensureDeferred
async def test_a_trickled_body_is_read_from_the_socket_in_few_large_reads(tmp_path, monkeypatch):
    """The kernel reports the socket readable only once a large read waits
    (``SO_RCVLOWAT``, registryd.http.coalesce): 32 KiB sends reach the
    server in reads of 256 KiB, not one read each.  Patience is made
    endless here, so only the mark decides; a body of known length is
    never waited for beyond its end, so the last read still comes."""
    from registryd.http.coalesce import ReadCoalescer

    monkeypatch.setattr(ReadCoalescer, "patience", 3600.0)
    reads = []
    real_received = RequestBody._received

    def received(self, data):
        reads.append(len(data))
        return real_received(self, data)

    monkeypatch.setattr(RequestBody, "_received", received)
    running = await start_service(tmp_path, BASE)
    try:
        response = await running.client.post(running.v2("trickle/reads/blobs/uploads/"))
        await response.content()
        path = response.headers.getRawHeaders("Location")[0].split(running.url, 1)[-1]
        data = os.urandom(4096 * KIB)
        pieces = [data[i : i + 32 * KIB] for i in range(0, len(data), 32 * KIB)]
        port = int(running.url.rsplit(":", 1)[1])
        status, headers = await deferToThread(trickle_patch, port, path, pieces)
        assert (status, headers["range"]) == (202, f"0-{len(data) - 1}")
        assert sum(reads) == len(data)
        # The first MiB is read as it comes (a small body never waits);
        # after it, every read takes at least the mark, or the rest.
        starts = [sum(reads[:index]) for index in range(len(reads))]
        later = [size for start, size in zip(starts, reads) if start >= ReadCoalescer.after]
        assert (
            len(later) <= (len(data) - ReadCoalescer.after) // ReadCoalescer.low_water_mark + 1
        ), reads
        assert len(pieces) > 3 * (len(data) // ReadCoalescer.low_water_mark)
    finally:
        await running.stop()

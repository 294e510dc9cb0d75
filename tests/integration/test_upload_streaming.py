"""Uploads that stream: interrupted, resumed, resumed after a restart,
raced by two clients, and answered early without breaking keep-alive."""

import hashlib
import os
import socket

import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from tests.support import raw_request, sha256, start_registry


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


async def new_upload(server, name="stream/test"):
    response = await server.client.post(server.v2(f"{name}/blobs/uploads/"))
    await response.content()
    assert response.code == 202
    return header(response, "Location")


def _send_partial_patch(port, path, declared, payload):
    """Send a PATCH declaring ``declared`` bytes, send only ``payload``, hang up."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n".encode()
        )
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(100)  # wait until the server hangs up too


async def wait_for_offset(server, location, expected, attempts=100):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(attempts):
        response = await server.client.get(location)
        await response.content()
        if header(response, "Range") == f"0-{expected - 1}":
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(
        f"upload never reached {expected} bytes; last Range {header(response, 'Range')}"
    )


@pytest_twisted.ensureDeferred
async def test_dropped_patch_keeps_bytes_and_resumes(server):
    data = os.urandom(3 * 1024 * 1024)
    location = await new_upload(server)
    path = location.split(server.url, 1)[1]
    cut = 1_234_567
    await deferToThread(
        _send_partial_patch, server.port.getHost().port, path, len(data), data[:cut]
    )
    await wait_for_offset(server, location, cut)
    response = await server.client.patch(
        location, data=data[cut:], headers={"Content-Range": f"{cut}-{len(data) - 1}"}
    )
    assert response.code == 202, await response.content()
    response = await server.client.put(f"{header(response, 'Location')}?digest={sha256(data)}")
    assert response.code == 201, await response.content()
    response = await server.client.get(server.v2(f"stream/test/blobs/{sha256(data)}"))
    assert await response.content() == data


@pytest_twisted.ensureDeferred
async def test_upload_survives_restart(tmp_path):
    """A new process (new Registry, no in-memory hash state) continues an
    upload from storage alone and verifies the digest by re-hashing."""
    from twisted.internet import reactor

    from tests.support import make_client

    root = tmp_path / "data"
    data = os.urandom(2 * 1024 * 1024 + 5)
    client, pool = make_client(reactor)
    try:
        registry, port = await start_registry(root)
        base = f"http://127.0.0.1:{port.getHost().port}"
        response = await client.post(f"{base}/v2/restart/blobs/uploads/")
        await response.content()
        upload_path = header(response, "Location").split(base, 1)[1]
        response = await client.patch(base + upload_path, data=data[:1_000_000])
        assert response.code == 202
        await response.content()
        await pool.closeCachedConnections()
        await port.stopListening()

        registry2, port2 = await start_registry(root)
        assert len(registry2.hash_states) == 0
        base2 = f"http://127.0.0.1:{port2.getHost().port}"
        response = await client.get(base2 + upload_path)
        assert header(response, "Range") == "0-999999"
        await response.content()
        response = await client.patch(
            base2 + upload_path,
            data=data[1_000_000:],
            headers={"Content-Range": f"1000000-{len(data) - 1}"},
        )
        assert response.code == 202
        await response.content()
        response = await client.put(f"{base2}{upload_path}?digest={sha256(data)}")
        assert response.code == 201, await response.content()
        response = await client.get(f"{base2}/v2/restart/blobs/{sha256(data)}")
        assert await response.content() == data
        await pool.closeCachedConnections()
        await port2.stopListening()
    finally:
        await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_two_clients_push_same_blob_at_once(server):
    data = os.urandom(4 * 1024 * 1024)
    digest = sha256(data)

    async def push(name):
        response = await server.client.post(
            server.v2(f"{name}/blobs/uploads/?digest={digest}"), data=data
        )
        await response.content()
        return response.code

    codes = await defer.gatherResults(
        [
            defer.ensureDeferred(push("race/one")),
            defer.ensureDeferred(push("race/two")),
            defer.ensureDeferred(push("race/one")),
        ]
    )
    assert codes == [201, 201, 201]
    for name in ("race/one", "race/two"):
        response = await server.client.get(server.v2(f"{name}/blobs/{digest}"))
        body = await response.content()
        assert hashlib.sha256(body).hexdigest() == digest.split(":")[1]
    uploads = server.root / "docker/registry/v2/repositories/race/one/_uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_early_error_keeps_connection_usable(server):
    """A PATCH to an unknown upload is refused before its body is read; the
    rest of the body is drained and the same connection serves the next
    request."""

    def exchange(port):
        body = os.urandom(2 * 1024 * 1024)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"PATCH /v2/x/blobs/uploads/00000000-0000-4000-8000-000000000000 HTTP/1.1\r\n"
                b"Host: h\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
                + b"GET /v2/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            )
            received = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        return received

    received = await deferToThread(exchange, server.port.getHost().port)
    assert received.startswith(b"HTTP/1.1 404")
    assert b"BLOB_UPLOAD_UNKNOWN" in received
    second = received.split(b"HTTP/1.1 ", 2)
    assert len(second) == 3 and second[2].startswith(b"200"), received[-400:]


@pytest_twisted.ensureDeferred
async def test_chunked_transfer_encoding_patch(server):
    location = await new_upload(server, "chunked/te")
    path = location.split(server.url, 1)[1]
    data = os.urandom(700_000)
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"

    def send(port):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                f"PATCH {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
        return out

    out = await deferToThread(send, server.port.getHost().port)
    assert out.startswith(b"HTTP/1.1 202"), out[:300]
    assert f"Range: 0-{len(data) - 1}".encode() in out
    status, headers, _ = await raw_request(server, "PUT", f"{path}?digest={sha256(data)}")
    assert status == 201


@pytest_twisted.ensureDeferred
async def test_each_upload_request_opens_one_writer(tmp_path):
    """An upload owns one appending writer per request: a PATCH opens it
    once (its size is the offset the chunk must start at) and appends with
    it; a PUT appends its last chunk and commits with the same writer; a
    status GET opens one only to learn the size."""
    from twisted.internet import reactor

    from registryd.ops.metrics import sample
    from registryd.storage.drivers.filesystem import FilesystemDriver
    from registryd.storage.instrumented import InstrumentedDriver
    from tests.support import make_client

    registry, port = await start_registry(
        tmp_path, driver=InstrumentedDriver(FilesystemDriver(str(tmp_path)))
    )
    client, pool = make_client(reactor)
    url = f"http://127.0.0.1:{port.getHost().port}"

    def writers_opened():
        return sample(
            "registryd_storage_operation_duration_seconds_count",
            driver="filesystem",
            operation="writer",
        )

    async def opened_by(method, location, body=b"", headers=None):
        before = writers_opened()
        response = await client.request(method, location, data=body, headers=headers or {})
        await response.content()
        return response, writers_opened() - before

    try:
        first, second = os.urandom(300_000), os.urandom(200_000)
        response, opened = await opened_by("POST", f"{url}/v2/one/writer/blobs/uploads/")
        assert response.code == 202 and opened == 0  # nothing to write yet
        location = header(response, "Location")
        response, opened = await opened_by(
            "PATCH",
            location,
            first,
            {
                "Content-Range": f"0-{len(first) - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert response.code == 202 and opened == 1
        response, opened = await opened_by("GET", location)
        assert header(response, "Range") == f"0-{len(first) - 1}" and opened == 1
        digest = sha256(first + second)
        location = header(response, "Location")
        response, opened = await opened_by(
            "PUT",
            location + ("&" if "?" in location else "?") + f"digest={digest}",
            second,
            {"Content-Range": f"{len(first)}-{len(first) + len(second) - 1}"},
        )
        assert response.code == 201 and opened == 1
        response = await client.get(f"{url}/v2/one/writer/blobs/{digest}")
        assert await response.content() == first + second
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


async def test_malformed_chunked_patch_is_answered_and_keeps_the_bytes_before(
    server, logged_failures
):
    """A streamed PATCH whose chunked encoding breaks after 100,000 good
    bytes gets a JSON 400 from the upload handler (Twisted wrote a bare
    400 into the connection, whatever the handler was doing), the
    connection closes, and the good bytes are kept to resume from."""
    location = await new_upload(server, "chunked/broken")
    path = location.split(server.url, 1)[1]
    good = os.urandom(100_000)

    def send(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"PATCH {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                + b"%x\r\n%s\r\n" % (len(good), good)
                + b"not-a-chunk-size\r\n"
            )
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
        return out

    out = await deferToThread(send, server.port.getHost().port)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), out[:300]
    assert b"Content-Type: application/json" in head and b"Connection: close" in head
    assert b"not well-formed" in body
    await wait_for_offset(server, location, len(good))
    assert logged_failures == []


@pytest_twisted.ensureDeferred
async def test_percent_encoded_upload_paths_stream_like_any_other(server):
    """The web layer decides whether a body streams from the route klein
    will pick, which sees the path percent-decoded: an upload path that
    spells a letter as %xx is streamed (and stored) like any other, not
    buffered and then refused for lack of a streamed body."""
    data = b"spelled oddly"
    status, _, body = await raw_request(
        server, "POST", f"/v2/enc/blob%73/uploads/?digest={sha256(data)}", body=data
    )
    assert status == 201, body
    response = await server.client.get(server.v2(f"enc/blobs/{sha256(data)}"))
    assert await response.content() == data
    location = await new_upload(server, "enc/chunked")
    upload_path = location.split(server.url, 1)[1].replace("/blobs/uploads/", "/blobs/upload%73/")
    status, _, body = await raw_request(server, "PATCH", upload_path, body=data)
    assert status == 202, body
    status, _, body = await raw_request(server, "PUT", f"{upload_path}?digest={sha256(data)}")
    assert status == 201, body
    response = await server.client.get(server.v2(f"enc/chunked/blobs/{sha256(data)}"))
    assert await response.content() == data


def _twisted_verdict(body):
    """What Twisted's own decoder makes of a chunked ``body``: ("complete",
    the bytes) , ("malformed", None) or ("incomplete", None)."""
    from twisted.web import http as twisted_http

    from registryd import compat

    decoded = []
    finished = []
    decoder = twisted_http._ChunkedTransferDecoder(decoded.append, finished.append)
    try:
        decoder.dataReceived(body)
    except compat.MalformedChunkedData:
        return "malformed", None
    return ("complete", b"".join(decoded)) if finished else ("incomplete", None)


_DAMAGE = [
    b"",
    b"x\r\nA\r\n",
    b"-1\r\nA\r\n",
    b"0x1\r\nA\r\n",
    b" 1\r\nA\r\n",
    b"1\r\nAB\r\n",
    b"1\r\nA\n",
    b"1;\x01\r\nA\r\n",
    b"1;" + b"e" * 1100 + b"\r\nA\r\n",
    b"1;name=value\r\nA\r\n",
    b"\r\n",
    b"1\r\nA\r\n0\r\nTrailer: yes\r\n",
]


@pytest_twisted.ensureDeferred
async def test_hostile_chunked_patch_bodies_are_taken_or_refused_as_twisted_would(
    server, logged_failures
):
    """A chunked PATCH body (registryd's decoder, registryd.http.chunked)
    is stored when Twisted's decoder would take it and refused with the
    spec's JSON 400 when Twisted's would refuse it; nothing is logged as a
    failure."""
    from urllib.parse import urlsplit

    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st

    from tests.support import exchange, run_examples

    port = server.port.getHost().port

    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.lists(st.binary(min_size=1, max_size=3000), max_size=4),
        st.sampled_from(_DAMAGE),
        st.integers(min_value=0, max_value=4),
    )
    def check(chunks, damage, where):
        encoded = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks]
        encoded.insert(where % (len(encoded) + 1), damage)
        body = b"".join(encoded) + b"0\r\n\r\n"
        verdict, decoded = _twisted_verdict(body)
        assume(verdict != "incomplete")
        status, headers, _ = exchange(
            port,
            b"POST /v2/te/hostile/blobs/uploads/ HTTP/1.1\r\nHost: h\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        assert status == 202
        path = urlsplit(headers["location"]).path
        status, headers, answer = exchange(
            port,
            f"PATCH {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n".encode()
            + body,
        )
        if verdict == "malformed":
            assert status == 400, (body, status, answer)
            assert headers["content-type"] == "application/json"
            assert b'"errors"' in answer and b"not well-formed" in answer
        else:
            assert status == 202, (body, status, answer)
            if decoded:
                assert headers["range"] == f"0-{len(decoded) - 1}"

    await run_examples(check)
    assert logged_failures == []

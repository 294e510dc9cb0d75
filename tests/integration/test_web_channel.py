"""Connection-level behaviour of registryd's HTTP channel."""

import json
import socket
import time

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.support import read_response_head


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


def refused(port, request_bytes, send_buffer=None):
    """Send ``request_bytes``; return (status, headers, JSON body, whether
    the server then closed the connection).  A small ``send_buffer`` keeps
    the client sending for as long as the server has not read its bytes."""
    with socket.socket() as sock:
        sock.settimeout(10)
        if send_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        sock.connect(("127.0.0.1", port))
        sock.sendall(request_bytes)
        status, headers, body = read_response_head(sock)
        while len(body) < int(headers["content-length"]):
            body += sock.recv(65536)
        closed = sock.recv(65536) == b""
    return status, headers, json.loads(body), closed


def head(*lines, request_line=b"GET /v2/ HTTP/1.1"):
    return b"\r\n".join([request_line, b"Host: 127.0.0.1", *lines]) + b"\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_oversized_and_malformed_requests_get_json_errors(server, logged_failures):
    """Twisted closes silently on a request line or header line over 16 KiB
    and answers a bare 400 (no body) to too many or too large headers and
    to malformed ones; registryd answers each with the spec's JSON error
    (414, 431 or 400), then closes the connection."""
    port = server.port.getHost().port
    cases = [
        (
            b"GET /v2/" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
            414,
            "the request line is longer than 16384 bytes",
        ),
        (head(b"X-Big: " + b"b" * 20000), 431, "a request header line is longer than 16384 bytes"),
        (head(*[b"X-Many: 1"] * 501), 431, "more than 500 request headers"),
        (
            head(*[b"X-Part: " + b"p" * 8000] * 3),
            431,
            "the request line and headers are larger than 16384 bytes",
        ),
        (
            head(b"no colon here"),
            400,
            "the request line, a header or the chunked body is not well-formed",
        ),
        (
            head(b"Content-Length: -1"),
            400,
            "the request line, a header or the chunked body is not well-formed",
        ),
        (
            head(request_line=b"GET /v2/\x00 HTTP/1.1"),
            400,
            "the request line, a header or the chunked body",
        ),
    ]
    for request_bytes, status, message in cases:
        answer = await deferToThread(refused, port, request_bytes)
        assert answer[0] == status, (request_bytes[:60], answer)
        assert answer[1]["content-type"] == "application/json"
        assert answer[1]["docker-distribution-api-version"] == "registry/2.0"
        [error] = answer[2]["errors"]
        assert error["code"] == "UNSUPPORTED" and error["message"].startswith(message), error
        assert answer[3], "the connection stays open after a refusal"
    assert logged_failures == []


@pytest_twisted.ensureDeferred
async def test_refusal_reaches_a_client_still_sending(server):
    """A client that sends an 800 KiB header block is refused (431) after
    the first 16 KiB, while most of its bytes are still on the way; the
    server reads and drops them rather than closing with unread input
    (which resets the connection: the client's send fails and it never
    reads the answer), so the client finishes sending and reads the 431."""
    port = server.port.getHost().port
    flood = head(*[b"X-Flood-%d: %s" % (i, b"f" * 1000) for i in range(800)])
    status, headers, body, closed = await deferToThread(refused, port, flood, 16384)
    assert (status, closed) == (431, True)
    assert (
        body["errors"][0]["message"] == "the request line and headers are larger than 16384 bytes"
    )


def test_twisted_internals_the_channel_relies_on_are_there():
    """registryd.http.web.StreamingHTTPChannel overrides Twisted's private
    ``_respondToBadRequestAndDisconnect`` and reads its header counters to
    tell 431 from 400.  If Twisted renames them, the overrides would
    silently stop working: this says so by name."""
    from twisted.web import http

    from registryd.http.web import StreamingHTTPChannel

    for name in ("_respondToBadRequestAndDisconnect", "lineLengthExceeded"):
        assert callable(getattr(http.HTTPChannel, name, None)), name
        assert name in vars(StreamingHTTPChannel), name
    channel = http.HTTPChannel()
    for name in (
        "_receivedHeaderSize",
        "_receivedHeaderCount",
        "maxHeaders",
        "totalHeadersSize",
        "MAX_LENGTH",
    ):
        assert isinstance(getattr(channel, name, None), int), name
    assert not hasattr(channel, "_command")  # set once a request line is parsed


REQUEST_LINES = [
    b"GET /v2/ HTTP/1.1",
    b"GET /v2/ HTTP/1.0",
    b"GET /v2/ HTTP/2.0",
    b"GET /v2/",
    b"GET",
    b"BREW /v2/ HTTP/1.1",
    b"GET  /v2/ HTTP/1.1",
    b"get /v2/ HTTP/1.1",
    b"GET /v2/ FTP/1.1",
    b"GET /v2/ HTTP/1.1 extra",
    b"\x00 / HTTP/1.1",
    b"GET /v2/" + b"a" * 17000 + b" HTTP/1.1",
]
HEADER_LINES = [
    b"no colon",
    b": no name",
    b"X-A: b\x00c",
    b"X-A: b\rc",
    b"X-A: b\nc",
    b"Content-Length: x",
    b"Content-Length: -1",
    b"Content-Length: 1, 2",
    b"Content-Length: 99999999999999999999",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: chunked",
    b" folded",
    b"\tfolded",
    b"X\x7f: y",
    b"X Y: z",
    b"Host: \xff",
    b"Host: a..b",
    b"Connection: keep-alive, close",
    b"X-Long: " + b"l" * 17000,
    b"X-Fine: yes",
]


@pytest_twisted.ensureDeferred
async def test_hostile_request_heads_get_json_answers(server, logged_failures):
    """Any request line and header block -- malformed lines, bad framing
    headers, control bytes, folded lines, too long, too many -- gets one
    JSON answer (400, 404, 405, 414 or 431; 200 for a GET of /v2/ that
    parses), never a bare 400, a 5xx or a silent close, and nothing is
    logged as a failure."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.support import run_examples

    port = server.port.getHost().port
    # (no empty line: it would end the head early, making the rest a second request)
    lines = st.sampled_from(HEADER_LINES) | st.binary(min_size=1, max_size=40).filter(
        lambda line: b"\r\n" not in line
    )

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.sampled_from(REQUEST_LINES),
        st.lists(lines, max_size=8),
        st.sampled_from([0, 0, 0, 499, 600]),
        st.booleans(),
    )
    def check(request_line, header_lines, padding, framed):
        # Content-Length: 0 last: a request whose framing parsed has no
        # body to wait for (an earlier length or chunked header makes it
        # a 400); without it (a head without any framing header, read in
        # one pass: registryd.compat.receive_whole_head) no body either.
        # Connection: close ends the exchange.
        framing = any(
            line.lower().startswith((b"content-length", b"transfer-encoding"))
            for line in header_lines
        )
        request_bytes = head(
            *header_lines,
            *[b"X-Pad: p"] * padding,
            *([b"Content-Length: 0"] if framed or framing else []),
            b"Connection: close",
            request_line=request_line,
        )
        status, headers, body, closed = refused(port, request_bytes)
        assert status in (200, 400, 404, 405, 414, 431), (status, body)
        assert headers["content-type"] == "application/json"
        assert status != 200 or body == {}
        assert closed
        assert logged_failures == []

    await run_examples(check)


@pytest_twisted.ensureDeferred
async def test_a_connection_asks_its_local_address_once(server, monkeypatch):
    """twisted.web asks the channel for the local address of every request
    (a getsockname system call each); the channel asks its connection once."""
    from twisted.internet import tcp

    asked = []
    get_host = tcp.Server.getHost

    def counted(connection):
        asked.append(connection)
        return get_host(connection)

    monkeypatch.setattr(tcp.Server, "getHost", counted)

    def three_requests(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(3):
                sock.sendall(head())
                status, headers, body = read_response_head(sock)
                while len(body) < int(headers["content-length"]):
                    body += sock.recv(65536)
                assert status == 200
        return len(asked)

    assert await deferToThread(three_requests, server.port.getHost().port) == 1

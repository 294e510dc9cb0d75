"""Every private Twisted name registryd uses (registryd.compat), checked
against the installed Twisted with real Twisted objects: when an upgrade
renames or changes one, the test for it fails with a message naming the
attribute and the Twisted version, instead of a running registry breaking.
"""

import inspect
import os
import re
import socket

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application import strports
from twisted.internet import abstract, protocol, task, tcp
from twisted.internet.testing import StringTransport
from twisted.logger import LogPublisher, globalLogPublisher
from twisted.python import versions
from twisted.web import http, resource, server

import twisted
from registryd import compat
from tests.service_support import wait_for

VERSION = twisted.__version__


def changed(name, what):
    """The failure message when a private name no longer behaves."""
    return f"Twisted {VERSION}: {name} {what}; registryd.compat needs updating"


# --- the supported range ------------------------------------------------------


def declared_range():
    """(lowest, below) of setup.py's Twisted requirement."""
    setup = open(os.path.join(os.path.dirname(__file__), "..", "..", "setup.py")).read()
    match = re.search(r'"Twisted\[tls,conch\]>=([0-9.]+),<([0-9.]+)"', setup)
    assert match, "setup.py declares no Twisted[tls,conch]>=X,<Y range"
    return match.group(1), match.group(2)


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_the_installed_twisted_is_in_the_declared_range():
    lowest, below = declared_range()
    installed = version_tuple(VERSION)
    assert version_tuple(lowest) <= installed < version_tuple(below), (
        f"Twisted {VERSION} is outside setup.py's supported range >={lowest},<{below}: "
        "run tests/unit/test_compat.py against it and move the range (and registryd/compat.py's "
        "docstring) once it passes"
    )
    assert f">={lowest},<{below}" in compat.__doc__.replace("``", ""), (
        "registryd/compat.py's docstring names another range than setup.py"
    )


def test_twisted_changed_names_the_attribute_and_the_version():
    error = compat.TwistedChanged("twisted.x.Y._z", "is gone")
    assert "twisted.x.Y._z is gone" in str(error)
    assert f"Twisted {VERSION}" in str(error)
    assert versions  # imported: Twisted's own version module is where VERSION comes from


# --- twisted.logger -----------------------------------------------------------


def test_log_observers_is_the_list_the_publisher_delivers_to():
    publisher = LogPublisher()
    original, replacement = [], []
    publisher.addObserver(original.append)
    observers = compat.log_observers(publisher)
    assert original.append in observers, changed(
        "twisted.logger.LogPublisher._observers", "does not hold the observers added"
    )
    observers[observers.index(original.append)] = replacement.append
    publisher({"log_format": "hello"})
    assert (original, len(replacement)) == ([], 1), changed(
        "twisted.logger.LogPublisher._observers", "is no longer what the publisher delivers to"
    )


def test_log_observers_refuses_a_publisher_without_the_list():
    with pytest.raises(compat.TwistedChanged, match=r"LogPublisher\._observers"):
        compat.log_observers(object())


# --- twisted.application / twisted.internet -----------------------------------


@pytest_twisted.ensureDeferred
async def test_listening_port_is_the_port_a_strports_service_bound():
    from twisted.internet import reactor

    service = strports.service("tcp:0:interface=127.0.0.1", protocol.Factory(), reactor=reactor)
    with pytest.raises(compat.TwistedChanged, match="_waitingForPort"):
        compat.listening_port(service)  # not started: nothing bound yet
    service.privilegedStartService()
    service.startService()
    try:
        port = await compat.listening_port(service)
        assert port.getHost().port > 0, changed(
            "StreamServerEndpointService._waitingForPort", "does not fire with the listening port"
        )
    finally:
        await service.stopService()


def test_raise_listen_errors_makes_a_bind_failure_raise_from_privileged_start():
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet import endpoints, reactor
    from twisted.internet.error import CannotListenError

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    description = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
    try:
        quiet = StreamServerEndpointService(
            endpoints.serverFromString(reactor, description), protocol.Factory()
        )
        loud = StreamServerEndpointService(
            endpoints.serverFromString(reactor, description), protocol.Factory()
        )
        compat.raise_listen_errors(loud)
        with pytest.raises(CannotListenError):
            loud.privilegedStartService()
        quiet.privilegedStartService()  # Twisted only logs it: what the flag changes
    finally:
        taken.close()
    with pytest.raises(compat.TwistedChanged, match="_raiseSynchronously"):
        compat.raise_listen_errors(object())


@pytest_twisted.ensureDeferred
async def test_accept_one_at_a_time_takes_one_pending_connection_per_wake_up():
    from twisted.internet import reactor

    accepted = []
    factory = protocol.Factory.forProtocol(protocol.Protocol)
    factory.buildProtocol = lambda addr: accepted.append(addr) or protocol.Protocol()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    clients = []
    try:
        assert isinstance(port, tcp.Port)
        assert "numberAccepts" in inspect.getsource(tcp.Port.doRead), changed(
            "twisted.internet.tcp.Port.doRead", "no longer reads numberAccepts"
        )
        port.stopReading()  # the reactor must not accept them: doRead below does
        compat.accept_one_at_a_time(port)
        assert compat.accept_one_at_a_time(port) is port  # idempotent
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
            clients.append(client)  # connected: waiting in the kernel's accept queue
        port.doRead()
        assert len(accepted) == 1, changed(
            "twisted.internet.tcp.Port.numberAccepts", f"is not obeyed ({len(accepted)} accepted)"
        )
        port.doRead()
        port.doRead()
        assert len(accepted) == 3
        assert port.numberAccepts == 1
    finally:
        for client in clients:
            client.close()
        await port.stopListening()


def test_accept_one_at_a_time_refuses_a_port_without_number_accepts():
    with pytest.raises(compat.TwistedChanged, match="numberAccepts"):
        compat.accept_one_at_a_time(protocol.Protocol())


def test_parse_endpoint_description_is_twisteds_parser_with_escapes():
    args, kwargs = compat.parse_endpoint_description(
        r"ssl:5443:privateKey=C\:/keys/a.key:certKey=b.crt:interface=\:\:1"
    )
    assert (args, kwargs) == (
        ["ssl", "5443"],
        {"privateKey": "C:/keys/a.key", "certKey": "b.crt", "interface": "::1"},
    ), changed("twisted.internet.endpoints._parse", f"returned {(args, kwargs)!r}")


@pytest_twisted.ensureDeferred
async def test_write_buffer_empty_follows_a_socket_transports_buffers():
    from twisted.internet import reactor

    connected = []

    class Server(protocol.Protocol):
        def connectionMade(self):
            connected.append(self.transport)

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Server), interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
    try:
        await wait_for(lambda: connected)
        transport = connected[0]
        for name in ("dataBuffer", "offset", "_tempDataLen"):
            assert hasattr(transport, name), changed(
                f"twisted.internet.abstract.FileDescriptor.{name}", "is gone"
            )
        assert compat.write_buffer_empty(transport) is True
        transport.write(b"x" * 1000)
        assert compat.write_buffer_empty(transport) is False, changed(
            "twisted.internet.abstract.FileDescriptor._tempDataLen", "does not count written bytes"
        )
        await wait_for(lambda: compat.write_buffer_empty(transport))
        assert client.recv(2000)
    finally:
        client.close()
        await port.stopListening()
    assert compat.write_buffer_empty(StringTransport()) is None


@pytest_twisted.ensureDeferred
async def test_socket_read_size_is_what_a_tcp_transport_asks_recv_for():
    """Request bodies stream in 1 MiB reads (``registryd.http.web.RequestBody``),
    not Twisted's 64 KiB: with the bytes already waiting in the kernel, one
    read brings more than 64 KiB once the size is raised."""
    from twisted.internet import reactor

    connected, reads = [], []

    class Server(protocol.Protocol):
        def connectionMade(self):
            connected.append(self.transport)

        def dataReceived(self, data):
            reads.append(len(data))

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Server), interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
    try:
        await wait_for(lambda: connected)
        transport = connected[0]
        assert "bufferSize" in inspect.getsource(tcp.Connection.doRead), changed(
            "twisted.internet.tcp.Connection.doRead", "no longer reads bufferSize"
        )
        assert compat.socket_read_size(transport) == 64 * 1024, changed(
            "twisted.internet.tcp.Connection.bufferSize", "is not 64 KiB"
        )
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        transport.stopReading()  # the bytes wait in the kernel
        compat.set_socket_read_size(transport, 1 << 20)
        assert compat.socket_read_size(transport) == 1 << 20
        sent = 0
        client.setblocking(False)
        while sent < 2 << 20:
            try:
                sent += client.send(b"x" * (256 << 10))
            except BlockingIOError:
                break
        assert sent > 64 * 1024, f"the kernel buffered only {sent} bytes"
        transport.startReading()
        await wait_for(lambda: sum(reads) == sent)
        assert max(reads) > 64 * 1024, changed(
            "twisted.internet.tcp.Connection.bufferSize", f"is not obeyed (reads: {reads[:8]})"
        )
        assert max(reads) <= 1 << 20
    finally:
        client.close()
        await port.stopListening()
    assert compat.socket_read_size(StringTransport()) is None


# --- twisted.web ----------------------------------------------------------------


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello " + request.path


def hello_site():
    """A twisted.web Site answering :class:`Hello`, on a clock of its own:
    its channels' idle timeouts (60 s) must not land on the global reactor,
    where they would fire a minute later in another test."""
    return server.Site(Hello(), reactor=task.Clock())


def channel_for(site):
    if site.protocol is not None and not isinstance(site.protocol, type):
        site.protocol = http.HTTPChannel  # not the HTTP/2-negotiating wrapper
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_channel_request_line_and_set_channel_path_before_dispatch():
    seen = []

    class Channel(http.HTTPChannel):
        def allHeadersReceived(self):
            seen.append(compat.channel_request_line(self))
            compat.set_channel_path(self, b"/elsewhere")
            super().allHeadersReceived()

    site = hello_site()
    site.protocol = Channel
    channel, transport = channel_for(site)
    assert compat.channel_request_line(channel) == (b"", b"", b"")
    channel.dataReceived(b"GET /here HTTP/1.1\r\nHost: a\r\n\r\n")
    assert seen == [(b"GET", b"/here", b"HTTP/1.1")], changed(
        "twisted.web.http.HTTPChannel._command/_path/_version", f"read {seen!r}"
    )
    assert transport.value().endswith(b"hello /elsewhere"), changed(
        "twisted.web.http.HTTPChannel._path", "is not the path the request is dispatched with"
    )


def test_response_header_table_is_what_the_response_is_written_from():
    class Tagged(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader("X-Before", "set by setHeader")
            table = compat.response_header_table(request)
            table[b"ETag"] = [b'"sha256:abc"']
            table.setdefault(b"X-Before", []).append(b"added")
            table[b"Content-Length"] = [b"2"]
            assert request.responseHeaders.getRawHeaders(b"etag") == [b'"sha256:abc"'], changed(
                "twisted.web.http_headers.Headers._rawHeaders", "is not what getRawHeaders reads"
            )
            return b"ok"

    channel, transport = channel_for(server.Site(Tagged(), reactor=task.Clock()))
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = transport.value().split(b"\r\n\r\n")[0].split(b"\r\n")
    assert b'ETag: "sha256:abc"' in head and b"Content-Length: 2" in head, changed(
        "twisted.web.http_headers.Headers._rawHeaders", f"is not what is sent: {head!r}"
    )
    assert [line for line in head if line.startswith(b"X-Before")] == [
        b"X-Before: set by setHeader",
        b"X-Before: added",
    ]


def test_request_disconnected_and_the_cleanup_hook():
    cleaned = []

    class Request(server.Request):
        def _cleanup(self):
            cleaned.append(compat.request_disconnected(self))
            compat.cleanup_request(self)

    assert callable(getattr(server.Request, "_cleanup", None)), changed(
        "twisted.web.server.Request._cleanup", "is gone"
    )
    site = hello_site()
    site.requestFactory = Request
    channel, transport = channel_for(site)
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    assert cleaned == [False], changed(
        "twisted.web.server.Request._cleanup", "is not called when a response finishes"
    )
    assert channel.requests == [], changed(
        "twisted.web.server.Request._cleanup", "no longer moves the channel on"
    )
    channel.dataReceived(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert transport.value().endswith(b"hello /b")
    request = Request(channel)
    assert compat.request_disconnected(request) is False
    request.connectionLost(ConnectionError("gone"))
    assert compat.request_disconnected(request) is True, changed(
        "twisted.web.http.Request._disconnected", "is not set on connectionLost"
    )


def test_bad_request_hook_and_header_counters():
    seen = []

    class Channel(http.HTTPChannel):
        maxHeaders = 3

        def _respondToBadRequestAndDisconnect(self):
            seen.append((compat.request_line_received(self), compat.received_headers(self)))
            super()._respondToBadRequestAndDisconnect()

    site = hello_site()
    site.protocol = Channel
    channel, transport = channel_for(site)
    assert compat.request_line_received(channel) is False
    channel.dataReceived(b"GET /a HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(5)))
    assert len(seen) == 1, changed(
        "twisted.web.http.HTTPChannel._respondToBadRequestAndDisconnect",
        "is not called for a request with too many headers",
    )
    [(line_in, (size, count))] = seen
    assert line_in is True, changed("twisted.web.http.HTTPChannel._command", "is not set")
    assert count > Channel.maxHeaders and size >= len(b"GET /a HTTP/1.1"), changed(
        "twisted.web.http.HTTPChannel._receivedHeaderSize/_receivedHeaderCount",
        f"are {(size, count)!r}",
    )


def test_replace_chunked_decoder_and_the_errors_the_channel_answers():
    """registryd.http.chunked replaces Twisted's decoder of a chunked body
    before its first byte, and raises what the channel answers with 400."""
    made = []
    refused = []

    class Decoder:
        def __init__(self, data_callback, finish_callback):
            made.append(self)
            self.data_callback = data_callback
            self.finish_callback = finish_callback

        def dataReceived(self, data):  # noqa: N802
            if data.startswith(b"!"):
                raise compat.MalformedChunkedData("malformed")
            self.data_callback(data[:-1])
            self.finish_callback(b"")

        def noMoreData(self):  # noqa: N802
            pass

    class Channel(http.HTTPChannel):
        def allHeadersReceived(self):
            compat.replace_chunked_decoder(self, Decoder)
            super().allHeadersReceived()

        def _respondToBadRequestAndDisconnect(self):
            refused.append(True)
            super()._respondToBadRequestAndDisconnect()

    site = hello_site()
    site.protocol = Channel
    channel, transport = channel_for(site)
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    assert made == [], "a body that is not chunked keeps Twisted's decoder"
    channel.dataReceived(b"GET /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert len(made) == 1, changed(
        "twisted.web.http.HTTPChannel._transferDecoder",
        "is not Twisted's _ChunkedTransferDecoder (dataCallback, finishCallback) for a chunked body",
    )
    channel.dataReceived(b"body.")
    assert transport.value().endswith(b"hello /b"), changed(
        "twisted.web.http.HTTPChannel._transferDecoder", "is not what rawDataReceived feeds"
    )
    assert compat.ChunkedDataLoss is not None and compat.CHUNK_EXTENSION_CHARACTERS
    assert compat.MAX_CHUNK_SIZE_LINE == 1024
    channel.dataReceived(b"GET /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n!")
    assert refused == [True], changed(
        "twisted.web.http._MalformedChunkedDataError", "is not what HTTPChannel answers with 400"
    )


# --- twisted.conch --------------------------------------------------------------


def test_manhole_needs_newline_follows_the_terminals_last_write():
    from twisted.conch import manhole

    class Terminal:
        lastWrite = b">>> print(1)"

    prompt = manhole.Manhole()
    prompt.terminal = Terminal()
    assert compat.manhole_needs_newline(prompt) is True, changed(
        "twisted.conch.manhole.Manhole._needsNewline", "is not true mid-line"
    )
    Terminal.lastWrite = b"1\n"
    assert compat.manhole_needs_newline(prompt) is False, changed(
        "twisted.conch.manhole.Manhole._needsNewline", "is not false after a newline"
    )


def test_terminal_realms_get_avatar_hook():
    from twisted.conch import interfaces as iconch
    from twisted.conch import manhole_ssh

    asked = []

    class Realm(manhole_ssh.TerminalRealm):
        def _getAvatar(self, avatarId):
            asked.append(avatarId)
            return super()._getAvatar(avatarId)

    interface, avatar, _logout = Realm().requestAvatar(b"admin", None, iconch.IConchUser)
    assert asked == [b"admin"], changed(
        "twisted.conch.manhole_ssh.TerminalRealm._getAvatar", "is not what requestAvatar calls"
    )
    assert avatar.original.getComponent(iconch.ISession) is not None


# --- twisted.web: a request head read in one piece --------------------------------


class Echo(resource.Resource):
    """Answers what the request was: method, target, version, headers."""

    isLeaf = True

    def render(self, request):
        lines = [request.method, request.uri, request.clientproto]
        for name, values in sorted(request.requestHeaders.getAllRawHeaders()):
            lines += [name + b": " + value for value in values]
        return b"\n".join(lines)


def echo_channel(fast, small_limits=False):
    """An HTTPChannel answering :class:`Echo`, whose ``dataReceived``
    tries :func:`compat.receive_whole_head` first when ``fast``; and the
    heads the fast path took.  With ``small_limits``, at most 4 headers,
    90 bytes per line and 120 per head: limits generated heads reach."""
    taken = []

    class Channel(http.HTTPChannel):
        if small_limits:
            maxHeaders = 4
            totalHeadersSize = 120
            MAX_LENGTH = 90

        def dataReceived(self, data):
            if fast and compat.receive_whole_head(self, data):
                taken.append(data)
                return
            super().dataReceived(data)

    site = server.Site(Echo(), reactor=task.Clock())
    site.protocol = Channel
    channel, transport = channel_for(site)
    return channel, transport, taken


def answered(transport):
    """What a channel sent, without the Date headers (they name the second)."""
    return [line for line in transport.value().split(b"\r\n") if not line.startswith(b"Date: ")]


def test_receive_whole_head_reads_simple_heads_as_twisted_does():
    head = (
        b"HEAD /v2/a/blobs/sha256:0123 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"
        b"user-agent: hey/0.0.1\r\nAccept:  a/b, c/d \t\r\nAccept: e/f\r\nX-Empty:\r\n\r\n"
    )
    fast, fast_transport, taken = echo_channel(fast=True)
    slow, slow_transport, _ = echo_channel(fast=False)
    for channel in (fast, slow):
        channel.dataReceived(head)
        channel.dataReceived(head.replace(b"HEAD", b"GET", 1))
    assert len(taken) == 2, "the fast path did not take a simple head"
    assert answered(fast_transport) == answered(slow_transport)
    assert b"Accept: a/b, c/d" in fast_transport.value()
    assert fast.requests == [] and not fast_transport.disconnecting


@pytest.mark.parametrize(
    "data",
    [
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: a\r\n",
        b"GET /a HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /a HTTP/1.1\r\nX Bad: a\r\n\r\n",
        b"GET /a HTTP/2.0\r\nHost: a\r\n\r\n",
        b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
def test_receive_whole_head_leaves_anything_else_to_twisted(data):
    fast, fast_transport, taken = echo_channel(fast=True)
    slow, slow_transport, _ = echo_channel(fast=False)
    fast.dataReceived(data)
    slow.dataReceived(data)
    assert taken == []
    assert answered(fast_transport) == answered(slow_transport)


def test_receive_whole_head_waits_for_the_request_in_progress():
    """A head that arrives while a request is answered is buffered, as
    Twisted buffers it, and read when that request ends."""

    class Slow(resource.Resource):
        isLeaf = True
        waiting = []

        def render(self, request):
            self.waiting.append(request)
            return server.NOT_DONE_YET

    site = server.Site(Slow(), reactor=task.Clock())

    class Channel(http.HTTPChannel):
        def dataReceived(self, data):
            if not compat.receive_whole_head(self, data):
                super().dataReceived(data)

    site.protocol = Channel
    channel, transport = channel_for(site)
    channel.dataReceived(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
    channel.dataReceived(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [request.path for request in Slow.waiting] == [b"/1"]
    Slow.waiting[0].write(b"one")
    Slow.waiting[0].finish()
    assert [request.path for request in Slow.waiting] == [b"/1", b"/2"]
    Slow.waiting[1].finish()
    assert channel.requests == []


_tokens = st.text(alphabet="abcXYZ09-!#$%&'*+.^_`|~", min_size=1, max_size=8).map(str.encode)
_any_bytes = st.binary(max_size=12)


def _mostly(good, bad):
    """``good`` nine times in ten: heads Twisted accepts must be common
    enough for the fast path to be exercised, hostile ones still many."""
    return st.integers(0, 9).flatmap(lambda n: bad if n == 0 else good)


@st.composite
def request_heads(draw):
    """Heads Twisted takes and heads it refuses, mixed: the fast path must
    take only the first kind and read them exactly as Twisted does."""
    method = draw(
        _mostly(st.sampled_from([b"GET", b"HEAD", b"DELETE", b"OPTIONS"]) | _tokens, _any_bytes)
    )
    target = draw(
        _mostly(
            st.sampled_from([b"/v2/", b"/v2/a/b/manifests/latest", b"*", b"/%20?x=1"]),
            st.binary(min_size=0, max_size=12).map(lambda path: b"/" + path),
        )
    )
    version = draw(
        _mostly(
            st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
            st.sampled_from([b"HTTP/2", b"http/1.1", b""]),
        )
    )
    line = draw(
        _mostly(
            st.just(method + b" " + target + b" " + version),
            st.builds(lambda a, b: a + b, st.just(method + b" " + target), _any_bytes),
        )
    )
    names = _mostly(
        st.sampled_from([b"Host", b"accept", b"USER-AGENT", b"Etag"]) | _tokens,
        st.sampled_from([b"Content-Length", b"Transfer-Encoding"]) | _any_bytes,
    )
    values = _mostly(
        st.sampled_from([b"", b" a ", b"\tb", b"1", b"chunked"]) | _tokens,
        st.sampled_from([b"x\x00y", b"a\rb", b"a\nb"]) | _any_bytes,
    )
    headers = draw(
        st.lists(
            _mostly(
                st.builds(lambda name, value: name + b":" + value, names, values),
                st.builds(lambda value: b" " + value, values) | _any_bytes,  # folded, garbage
            ),
            max_size=6,
        )
    )
    head = b"\r\n".join([line, *headers]) + b"\r\n\r\n"
    tail = draw(_mostly(st.just(b""), st.sampled_from([b"x", b"GET / HTTP/1.1\r\n\r\n"])))
    return head + tail


def assert_answered_as_twisted(data):
    """Feed ``data`` to a channel with the one-pass reader and to one
    without (both with small limits) and check they answer alike; return
    what the fast path took and the plain channel's transport."""
    fast, fast_transport, taken = echo_channel(fast=True, small_limits=True)
    slow, slow_transport, _ = echo_channel(fast=False, small_limits=True)
    fast.dataReceived(data)
    slow.dataReceived(data)
    assert answered(fast_transport) == answered(slow_transport)
    assert fast_transport.disconnecting == slow_transport.disconnecting
    assert len(fast.requests) == len(slow.requests)
    return taken, slow_transport


@given(request_heads())
@settings(max_examples=500, derandomize=True, database=None, deadline=None)
def test_receive_whole_head_answers_every_head_as_twisted(data):
    taken, slow_transport = assert_answered_as_twisted(data)
    if taken:  # only heads Twisted reads: never its 400
        assert slow_transport.value()[:13] not in (b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")
        assert slow_transport.value()[9:13] in (b"200 ", b"405 ")  # "*": 405


def test_receive_whole_head_takes_a_good_share_of_the_generated_heads():
    """The property above would hold trivially if the fast path never took
    a head: it does take the well-formed ones."""
    taken_total = []

    @given(request_heads())
    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    def feed(data):
        channel, _transport, taken = echo_channel(fast=True)
        channel.dataReceived(data)
        taken_total.extend(taken)

    feed()
    assert len(taken_total) >= 30  # of 300


def _head_of(headers, target=b"/a"):
    return b"GET " + target + b" HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


@pytest.mark.parametrize(
    "data",
    [
        _head_of([b"X-%d: v" % n for n in range(4)]),  # maxHeaders
        _head_of([b"X-%d: v" % n for n in range(5)]),
        _head_of([b"X: " + b"v" * 80]),  # MAX_LENGTH: 90 bytes per line
        _head_of([b"X: " + b"v" * 88]),
        _head_of([b"X: " + b"v" * 30, b"Y: " + b"v" * 30, b"Z: " + b"v" * 20]),  # 120 per head
        _head_of([b"X: " + b"v" * 30, b"Y: " + b"v" * 30, b"Z: " + b"v" * 40]),
        _head_of([], target=b"/" + b"a" * 74),  # the request line against MAX_LENGTH
        _head_of([], target=b"/" + b"a" * 78),
    ],
)
def test_receive_whole_head_keeps_twisteds_limits(data):
    """At and just over each of Twisted's limits, the same answer."""
    assert_answered_as_twisted(data)


# --- twisted.internet: the epoll reactor's dispatch --------------------------------


class _Exploding(abstract.FileDescriptor):
    """A reader over one end of a socket pair whose read fails, and whose
    connection-lost handler fails too: the failure ``_doReadOrWrite``
    itself lets escape."""

    def __init__(self, reactor, sock):
        super().__init__(reactor)
        self.socket = sock

    def fileno(self):
        return self.socket.fileno()

    def doRead(self):
        raise ValueError("read failed")

    def connectionLost(self, reason):
        super().connectionLost(reason)
        raise RuntimeError("and so did connectionLost")


def test_dispatch_events_directly_serves_connections_and_logs_escaping_failures():
    from twisted.internet import epollreactor

    reactor = epollreactor.EPollReactor()
    assert compat.dispatch_events_directly(reactor) is True
    assert compat.dispatch_events_directly(task.Clock()) is False
    received = []
    logged = []

    class Echo(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(data.upper())

    publisher = globalLogPublisher
    observer = logged.append
    publisher.addObserver(observer)
    exploding, other = socket.socketpair()
    try:
        port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
        client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=30)
        client.sendall(b"hello")
        reader = _Exploding(reactor, exploding)
        reactor.addReader(reader)
        other.send(b"x")
        client.setblocking(False)
        for _ in range(2000):
            reactor.doIteration(0.01)
            try:
                received.append(client.recv(100))
            except BlockingIOError:
                continue
            if b"".join(received) == b"HELLO" and logged:
                break
        assert b"".join(received) == b"HELLO"
        failures = [event for event in logged if event.get("log_failure") is not None]
        assert any(
            event["log_failure"].check(RuntimeError)
            and "dispatching an I/O event" in event.get("log_format", "")
            for event in failures
        ), changed(
            "twisted.internet.epollreactor.EPollReactor._doReadOrWrite",
            "lets nothing escape, or the loop lost it",
        )
        client.close()
        port.stopListening()
    finally:
        publisher.removeObserver(observer)
        reactor.removeAll()
        exploding.close()
        other.close()
        reactor.waker.connectionLost(None)
        reactor._poller.close()

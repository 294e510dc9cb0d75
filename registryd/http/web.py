"""twisted.web plumbing for streaming request and response bodies.

twisted.web buffers a whole request body (into memory or a temporary file)
before any resource sees the request: there is no public API for streaming
uploads (Twisted tickets #4688, #5511).  registryd needs one, so this module
keeps the whole hack in one place:

* :class:`StreamingHTTPChannel` dispatches a request whose route streams
  its body (blob uploads) to the application as soon as its headers are in
  ("early dispatch"), instead of after its body.  The handler authorises and
  validates, then reads the body from ``request.context.body`` (a
  :class:`RequestBody`) while it is still arriving,
  with back-pressure: when the handler falls behind, the channel stops
  reading from the socket.
* If the handler answers before the body is complete (an error), the rest of
  the body is read and discarded before the connection takes its next
  request, so keep-alive stays correct.
* :class:`BlobSender` streams a storage reader to the client as a push
  producer, reading ahead one chunk and pausing when the socket is full.
* Requests Twisted cannot parse (a request line or header block over its
  limits, a malformed header or chunked body) get the spec's JSON error
  (414, 431, 400) instead of a bare 400 or a silent close.

Which requests stream is the route's body mode (:data:`STREAMED` or
:data:`BUFFERED`), which the site asks its resource for
(``body_mode(method, path)``, from ``registryd.http.app``'s route table) as
soon as the headers are in; a buffered body goes through twisted.web as
usual, up to :data:`~registryd.manifests.parse.MAX_MANIFEST_SIZE` bytes.
"""

import io
import time
from collections import deque
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web import http, server
from zope.interface import implementer

from registryd import compat, errors
from registryd.http import chunked, coalesce, sendfile
from registryd.http.api.base import API_VERSION_HEADER
from registryd.http.context import RequestContext
from registryd.manifests.parse import MAX_MANIFEST_SIZE
from registryd.ops import metrics

_log = Logger()

#: A route's body mode: the handler reads the body while it arrives
#: (:class:`RequestBody`), dispatched as soon as the headers are in.
STREAMED = "streamed"
#: A route's body mode: twisted.web reads the body before dispatching it,
#: into a :class:`LimitedBuffer` of at most ``MAX_MANIFEST_SIZE`` bytes (the
#: largest body registryd buffers is a manifest).
BUFFERED = "buffered"


def all_buffered(method, path):
    """The body mode of a resource that streams nothing."""
    return BUFFERED


class BodyConnectionLost(Exception):
    """The client went away before sending the whole request body."""


class ChunkBuffer:
    """Bytes from a connection, read while they arrive, with back-pressure.

    The connection side pushes chunks in (:meth:`_push`, then :meth:`_end`
    or :meth:`_break`); a reader pulls them out with :meth:`read`.  Up to
    ``high_water`` bytes wait here; beyond that the source is paused until
    the reader has taken the buffer below ``low_water``.  Subclasses say how
    to pause and resume their source and what a broken connection raises:
    a request body (:class:`RequestBody`) and an upstream registry's response
    body (``registryd.proxy.upstream.ResponseBody``) share this.
    """

    high_water = 2 * 1024 * 1024
    low_water = 1024 * 1024
    #: A read waits until this many bytes are buffered (or the body is
    #: over) instead of returning whatever came in the last socket read.
    #: 0: return at once.  Must stay below ``high_water``, which the
    #: buffer always fills before pausing its source.
    gather = 0

    def __init__(self):
        self.received = 0
        self.finished = False
        self._error = None
        self._chunks = deque()
        self._buffered = 0
        self._waiter = None
        #: the bytes buffered that wake the waiting reader (with the end of
        #: the body, or a broken connection)
        self._wanted = 1
        self._paused = False

    # what a subclass provides

    def _pause_source(self):
        raise NotImplementedError

    def _resume_source(self):
        raise NotImplementedError

    def _broken(self, reason):
        """The exception ``read`` raises once the connection broke (``reason``
        a Failure)."""
        raise NotImplementedError

    # connection side

    def _push(self, data):
        if not data:
            return  # an empty chunk would read as the end of the body
        self.received += len(data)
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self.high_water and not self._paused:
            self._paused = True
            self._pause_source()
        if self._buffered >= self._wanted:
            # Not before: waking a reader that goes back to waiting cost
            # each socket read a Deferred and a coroutine step on the
            # reactor thread, a third of its Python time during a push.
            self._wake()

    def _end(self):
        self.finished = True
        self._wake()

    @property
    def broken(self):
        """Whether the connection broke before the end (nothing more comes)."""
        return self._error is not None

    def _break(self, reason):
        if not self.finished and self._error is None:
            self._error = reason
            self._wake()

    def _wake(self):
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def _resume(self):
        if self._paused:
            self._paused = False
            self._resume_source()

    # reader side

    async def read(self, size):
        """Up to ``size`` bytes; ``b""`` once the body is over.

        Waits until ``gather`` bytes (at most ``size``) are buffered, fewer
        only at the end of the body or when the connection broke.  Raises what ``_broken`` says if the connection broke before the end;
        the bytes returned before that are valid body bytes.
        """
        wanted = min(size, self.gather) or 1
        while self._buffered < wanted and not self.finished and self._error is None:
            if self._waiter is None:
                self._waiter = defer.Deferred()
            self._wanted = wanted
            await self._waiter
        if not self._chunks:
            if self._error is not None:
                raise self._broken(self._error)
            return b""
        pieces = []
        taken = 0
        while self._chunks and taken < size:
            chunk = self._chunks[0]
            if taken + len(chunk) > size:
                if taken >= wanted:
                    break  # not split to fill up: the next read takes it whole
                # Split without copying: both halves are views of the piece
                # that came in (which stays in memory until its rest is read,
                # within the high-water mark), copied once below.
                view = memoryview(chunk)
                self._chunks[0] = view[size - taken :]
                chunk = view[: size - taken]
            else:
                self._chunks.popleft()
            pieces.append(chunk)
            taken += len(chunk)
        self._buffered -= taken
        if self._buffered < self.low_water:
            self._resume()
        if len(pieces) == 1:
            piece = pieces[0]
            # bytes for the hasher and writer (a view here is the rest of a
            # split piece: its one copy)
            return piece if isinstance(piece, bytes) else bytes(piece)
        return b"".join(pieces)


class RequestBody(ChunkBuffer):
    """A request body read while it arrives: the channel pushes chunks in
    (:meth:`_received`), the handler reads them (:meth:`ChunkBuffer.read`), and
    a client that disconnects early makes the read raise
    :class:`BodyConnectionLost`."""

    #: Socket read size while the body streams in.  Twisted reads 64 KiB
    #: at a time, each read going through the HTTP parser: at 1 GiB/s that
    #: is 16,000 trips a second through Python on the reactor thread.
    #: Larger reads take what the socket holds in one go (a fast sender
    #: fills it; a slow one gets small reads, as before).
    read_size = 1024 * 1024
    #: A slow sender's body is handed on in pieces of this size, not as
    #: each socket read brings it.  ``docker push`` gzips while it sends,
    #: so its PATCH bodies arrive ~64 KiB per read; each piece then cost
    #: a hasher and a writer thread hand-off, a wake-up of the reactor
    #: and a small file write, and registryd spent 1.2-2.4 s of CPU
    #: receiving a 5x20 MiB image (Distribution: 0.7 s), CPU the client's
    #: gzip needed on the same cores.  Gathering 256 KiB made it 0.6 s
    #: (1 MiB: 0.55 s, but a fast sender's pieces, up to 1 MiB, then had
    #: to be joined and split, and chunked-encoding uploads lost a third
    #: of their throughput); a fast sender's pieces pass through as they
    #: came.
    gather = 256 * 1024

    def __init__(self, transport, length, coalescer=None):
        """:param coalescer: a :class:`~registryd.http.coalesce.ReadCoalescer`
        for the connection's socket, or None (TLS, tests)"""
        super().__init__()
        self._transport = transport
        self._coalescer = coalescer
        self._default_read_size = None
        read_size = compat.socket_read_size(transport)
        if read_size is not None and read_size < self.read_size:
            self._default_read_size = read_size
            compat.set_socket_read_size(transport, self.read_size)
        self.length = length  # declared Content-Length, None if chunked
        self._discarding = False

    def _pause_source(self):
        self._transport.pauseProducing()

    def _resume_source(self):
        self._transport.resumeProducing()

    def _broken(self, reason):
        if reason.check(errors.RegistryError):
            return reason.value  # the body itself was malformed: the client hears why
        return BodyConnectionLost(reason.getErrorMessage())

    # channel side

    def _received(self, data):
        if self._discarding:
            self.received += len(data)
            return
        self._push(data)
        if self._coalescer is not None:
            self._coalescer.arm(
                self.received, None if self.length is None else self.length - self.received
            )

    def _finish(self):
        self._restore_read_size()
        self._end()

    def _fail(self, reason):
        self._restore_read_size()
        self._break(reason)

    def _restore_read_size(self):
        if self._coalescer is not None:
            self._coalescer.release()
            self._coalescer = None
        if self._default_read_size is not None:
            compat.set_socket_read_size(self._transport, self._default_read_size)
            self._default_read_size = None

    def discard(self):
        """Drop what is buffered and whatever still arrives: the handler
        has answered without wanting the rest."""
        self._discarding = True
        if self._coalescer is not None:
            self._coalescer.release()
            self._coalescer = None
        self._chunks.clear()
        self._buffered = 0
        self._resume()


class _EmptyBody(RequestBody):
    """The body of a request that has none (Content-Length: 0)."""

    def __init__(self):
        super().__init__(None, 0)
        self.finished = True


class LimitedBuffer(io.BytesIO):
    """The body of a request that is not streamed (manifests): kept in
    memory up to ``limit`` bytes; beyond that further bytes are dropped and
    ``overflow`` is set, so the handler answers 413 without the server ever
    holding or spooling an oversized body."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.overflow = False

    def write(self, data):
        if self.overflow or self.tell() + len(data) > self.limit:
            self.overflow = True
            return len(data)
        return super().write(data)

    def value(self):
        """The whole body; 413 if it was over the limit."""
        if self.overflow:
            raise errors.PayloadTooLarge(f"request bodies here are limited to {self.limit} bytes")
        return self.getvalue()


#: twisted.web's keys of the headers every response gets (canonical names)
_SERVER = b"Server"
_DATE = b"Date"


class StreamingRequest(server.Request):
    """A Request whose body may be streamed to the handler
    (``self.context.body``), and that carries registryd's
    :class:`RequestContext` as ``self.context``.

    For a streaming request, twisted.web's ``content`` is an empty buffer and
    ``requestReceived`` is called twice by the channel: early, when the
    headers are in (that dispatches it), and again when the body is complete
    (that ends the body).
    """

    #: the streamed body (a RequestBody), None when the body is buffered
    _streamed = None
    _dispatched = False
    _cleanup_deferred = False
    _reported = False
    _counted_upload = False
    #: the StreamingSite, set by twisted.web when it dispatches the request
    site = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: monotonic time of the request line, for the request's duration
        self.started = time.monotonic()
        #: everything registryd records about this request
        self.context = RequestContext()

    def process(self):
        # twisted.web's Request.process minus what costs a small request
        # most there: the Date header formatted anew (2 us, here once a
        # second: StreamingSite.http_date) and every path segment passed
        # through unquote (only one with a "%" changes).  The request for
        # "*" and a root resource that encodes responses go Twisted's way.
        site = self.channel.site
        if self.path == b"*" or not site.plain_resource:
            return super().process()
        self.site = site
        table = compat.response_header_table(self)
        table[_SERVER] = [server.version]
        table[_DATE] = [site.http_date()]
        self.prepath = []
        self.postpath = [
            unquote_to_bytes(segment) if b"%" in segment else segment
            for segment in self.path[1:].split(b"/")
        ]
        try:
            self.render(site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())
        return None

    def gotLength(self, length):
        channel = self.channel
        method, path, _version = compat.channel_request_line(channel)
        if channel.site.body_mode(method, path) == STREAMED:
            self.content = io.BytesIO()
            if length == 0:
                self._streamed = _EmptyBody()
            else:
                self._streamed = RequestBody(
                    channel.transport,
                    length,
                    coalesce.ReadCoalescer.for_transport(channel.transport, channel.callLater),
                )
            self.context.body = self._streamed
        else:
            self.content = self.context.body = LimitedBuffer(MAX_MANIFEST_SIZE)
            if length is not None and length > MAX_MANIFEST_SIZE:
                self.content.overflow = True

    def handleContentChunk(self, data):
        self.context.bytes_received += len(data)
        if self._streamed is not None:
            self._streamed._received(data)
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._dispatched:
            # Second call: the body is complete.
            self._streamed._finish()
            if self._cleanup_deferred:
                self._cleanup_deferred = False
                compat.cleanup_request(self)
            return
        self._dispatched = True
        if self._streamed is not None and not self._streamed.finished:
            self._counted_upload = True
            metrics.UPLOADS_IN_PROGRESS.inc()
        super().requestReceived(command, path, version)

    def finish(self):
        super().finish()
        self._report(aborted=False)

    def _report(self, aborted):
        """Hand the finished request to the site's access log, once."""
        if self._reported:
            return
        self._reported = True
        if self._counted_upload:
            metrics.UPLOADS_IN_PROGRESS.dec()
        access_log = self.site.access_log if self.site is not None else None
        if access_log is not None:
            try:
                access_log(self, aborted)
            except Exception:
                _log.failure("access log failed")

    def _cleanup(self):
        # Overrides a private twisted.web hook (registryd.compat checks it).
        # The handler finished before the body did: answer now, but keep the
        # channel on this request (discarding the rest of the body) until the
        # body is over, so the next request on the connection parses cleanly.
        body = self._streamed
        if (
            body is not None
            and not body.finished
            and not body.broken
            and not compat.request_disconnected(self)
        ):
            body.discard()
            self._cleanup_deferred = True
            return
        compat.cleanup_request(self)

    def body_malformed(self, error):
        """The channel found the streamed body malformed (bad chunked
        encoding): the handler's reads fail with ``error`` (a
        :class:`errors.RegistryError`, which it answers) after the bytes that
        came before, and the connection closes after the answer."""
        if not self.startedWriting:
            self.setHeader(b"connection", b"close")
        self._streamed._fail(Failure(error))
        if self._cleanup_deferred:  # answered already, was waiting for the body's end
            self._cleanup_deferred = False
            compat.cleanup_request(self)

    def connectionLost(self, reason):
        if self._streamed is not None:
            self._streamed._fail(reason)
        super().connectionLost(reason)
        if self._dispatched or self.site is not None:
            self._report(aborted=not self.finished)


def strip_prefix(path, prefix):
    """``path`` (bytes) without the site's ``prefix`` (``http.prefix``, bytes
    with leading and trailing slashes); a path outside the prefix becomes
    one that no route matches, so it is answered 404."""
    if path.startswith(prefix) or path == prefix[:-1]:
        return b"/" + path[len(prefix) :]
    return b"/-outside-http.prefix" + path


#: Reason phrases Twisted's table lacks.
_REASONS = {431: b"Request Header Fields Too Large"}


def refusal_response(error):
    """The bytes of a complete response carrying ``error`` (a
    :class:`errors.RegistryError`) as the spec's JSON body, for a request that
    never reached the application."""
    body = error.body()
    reason = _REASONS.get(error.status) or http.RESPONSES.get(error.status, b"Error")
    head = [
        b"HTTP/1.1 %d %s" % (error.status, reason),
        b"%s: %s" % API_VERSION_HEADER,
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class StreamingHTTPChannel(http.HTTPChannel):
    """An HTTPChannel that dispatches streaming requests at end of headers,
    and answers requests it cannot parse.

    twisted.web answers a malformed request line or header, too many
    headers or too large a header block with a bare ``400`` (no body, no
    content type), and closes the connection without a word on a line
    longer than ``MAX_LENGTH``.  Here each gets the spec's JSON error:
    431 for a header block over ``totalHeadersSize`` bytes or ``maxHeaders``
    headers or a header line over ``MAX_LENGTH``, 414 for a request line
    over ``MAX_LENGTH``, 400 otherwise.  Then the connection lingers a
    moment, dropping what the client still sends: closing a socket with
    unread input makes the kernel reset it, and a client still sending
    would lose the answer.

    This overrides Twisted's private ``_respondToBadRequestAndDisconnect``
    and reads its header counters (:func:`registryd.compat.received_headers`);
    ``tests/unit/test_compat.py`` and
    ``tests/integration/test_web_channel.py`` fail if they change.
    """

    #: the StreamingSite that made this channel and tracks it (for draining)
    tracked_by = None
    _first_data = True
    #: Seconds a refused connection stays open after the answer, and the
    #: bytes it drops meanwhile, before it is closed.
    refusal_linger = 10.0
    refusal_discard_limit = 1024 * 1024
    _refused = False
    _refusal_discarded = 0
    _linger_call = None

    _host = None

    def getHost(self):
        # Every request asks (twisted.web's Request.__init__), and a
        # connection's local address never changes: one getsockname per
        # connection instead of one per request.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def connectionLost(self, reason):
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        if self.tracked_by is not None:
            self.tracked_by.channels.discard(self)
        super().connectionLost(reason)

    def lineLengthExceeded(self, line):
        # LineReceiver's default closes the connection without an answer.
        if compat.request_line_received(self):  # so this is a header's line
            self._refuse(
                errors.RequestHeadersTooLarge(
                    f"a request header line is longer than {self.MAX_LENGTH} bytes"
                )
            )
        else:
            self._refuse(
                errors.RequestURITooLong(f"the request line is longer than {self.MAX_LENGTH} bytes")
            )

    def _respondToBadRequestAndDisconnect(self):
        # Overrides a private twisted.web hook (registryd.compat checks it):
        # Twisted's one answer to every request it cannot parse.
        size, count = compat.received_headers(self)
        if size > self.totalHeadersSize:
            error = errors.RequestHeadersTooLarge(
                f"the request line and headers are larger than {self.totalHeadersSize} bytes"
            )
        elif count > self.maxHeaders:
            error = errors.RequestHeadersTooLarge(f"more than {self.maxHeaders} request headers")
        else:
            error = errors.MalformedRequest(
                "the request line, a header or the chunked body is not well-formed HTTP/1.1"
            )
        self._refuse(error)

    def _refuse(self, error):
        """Answer ``error`` and close; or, when the application has the
        request already (a streamed upload whose chunked body turned out
        malformed), let its handler answer ``error`` and close after that."""
        if self._refused:
            return
        self._refused = True
        self.clearLineBuffer()
        request = self.requests[-1] if self.requests else None
        body = request._streamed if request is not None else None
        if body is not None and request._dispatched and not body.finished:
            self.persistent = False
            request.body_malformed(error)
            return
        _log.info(
            "refused a malformed request from {peer}: {status} {message}",
            peer=getattr(self.transport.getPeer(), "host", "-"),
            status=error.status,
            message=error.message,
        )
        self.transport.write(refusal_response(error))
        if isinstance(self.transport, ProtocolWrapper) or not hasattr(
            self.transport, "loseWriteConnection"
        ):
            # TLS: a wrapper would pass loseWriteConnection to the TCP
            # connection beneath it, cutting the TLS stream; just close.
            self.transport.loseConnection()
            return
        self.transport.loseWriteConnection()
        self._linger_call = self.callLater(self.refusal_linger, self.transport.loseConnection)

    def dataReceived(self, data):
        if self._refused:
            # Lingering after a refusal: drop input, within a bound.
            self._refusal_discarded += len(data)
            if self._refusal_discarded > self.refusal_discard_limit:
                self.transport.loseConnection()
            return
        if self._first_data and data:
            self._first_data = False
            if data[:1] == b"\x16":
                # A TLS ClientHello on this plain-HTTP port.  docker and
                # skopeo try HTTPS first on "insecure" registries; answering
                # at once (as Go's server does) makes them fall back to HTTP
                # immediately instead of after a 10 s handshake timeout.
                self.transport.write(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                    b"Connection: close\r\n\r\nClient sent a TLS handshake to a plain HTTP port.\n"
                )
                self.transport.loseConnection()
                return
        if compat.receive_whole_head(self, data):
            return
        super().dataReceived(data)

    def allHeadersReceived(self):
        # Before any body byte: a chunked body goes through registryd's
        # decoder, several times cheaper per chunk than Twisted's.
        compat.replace_chunked_decoder(self, chunked.ChunkedDecoder)
        prefix = getattr(self.tracked_by, "prefix", None)
        if prefix:
            # Before the request learns its path (and whether it streams).
            compat.set_channel_path(
                self, strip_prefix(compat.channel_request_line(self)[1], prefix)
            )
        super().allHeadersReceived()
        request = self.requests[-1]
        if request._streamed is not None and self.length != 0 and not request._dispatched:
            # Dispatch now; the body follows into the RequestBody.  When it is
            # complete, allContentReceived calls requestReceived again.
            request.requestReceived(*compat.channel_request_line(self))


class StreamingSite(server.Site):
    """The Site registryd serves: streaming requests, HTTP/1.1."""

    requestFactory = StreamingRequest
    # the stub types it as a factory of the generic channel; a channel class is one
    protocol = StreamingHTTPChannel  # type: ignore[assignment]

    def __init__(self, resource, *args, access_log=None, prefix=None, **kwargs):
        super().__init__(resource, *args, **kwargs)
        #: Called with (request, aborted) once per request that reached the
        #: application (registryd.http.accesslog.AccessLog), or None.
        self.access_log = access_log
        #: http.prefix as bytes (b"/path/"): the routes are served below it.
        self.prefix = prefix
        #: open connections, for draining them when the registry stops
        self.channels = set()
        #: (method, path) -> STREAMED or BUFFERED, for a request whose
        #: headers are in: the resource's route table says
        #: (registryd.http.app._RegistryResource)
        self.body_mode = getattr(resource, "body_mode", all_buffered)
        #: whether StreamingRequest.process may skip twisted.web's encoder
        #: lookup (the root resource encodes no response)
        self.plain_resource = not compat.encodes_responses(resource)
        self._date_second = None
        self._date = b""

    def http_date(self):
        """The Date header of a response sent now, formatted once a second
        (twisted.web formats it for every request)."""
        now = int(time.time())
        if now != self._date_second:
            self._date = http.datetimeToString(now)
            self._date_second = now
        return self._date

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        if isinstance(channel, StreamingHTTPChannel):
            channel.tracked_by = self
            self.channels.add(channel)
        return channel

    def log(self, request):
        # twisted.web's own combined-format line, unless registryd's
        # structured access log replaces it.
        if self.access_log is None:
            super().log(request)

    async def drain(self, timeout, clock, poll=0.05):
        """Let the requests in progress finish, for at most ``timeout``
        seconds, then close every connection (``http.draintimeout``, as
        Go's ``http.Server.Shutdown``).  Call it once the listeners stopped
        accepting: idle connections are closed at once, busy ones after
        their response (which says ``Connection: close``)."""
        from twisted.internet import task

        deadline = clock.seconds() + timeout
        while True:
            for channel in list(self.channels):
                if channel.requests:
                    channel.persistent = False  # close after this response
                    current = channel.requests[-1]
                    if not current.startedWriting:
                        current.setHeader(b"connection", b"close")
                else:
                    channel.transport.loseConnection()
            if not self.channels or clock.seconds() >= deadline:
                break
            await task.deferLater(clock, poll, lambda: None)
        for channel in list(self.channels):
            channel.transport.abortConnection()
        if self.channels:
            await task.deferLater(clock, 0, lambda: None)  # let them go


@implementer(IPushProducer)
class BlobSender:
    """Streams ``length`` bytes from a storage reader to a request.

    Reads ahead one chunk so storage and network work overlap; stops
    reading while the transport is paused.  :meth:`send` returns a Deferred
    that fires when everything is written (or the client left).  The
    reader may be a stored blob's or one a pull-through cache fills from
    upstream as it is read (``registryd.proxy.blobs``); ``length`` None
    means "until the reader ends" (upstream did not say how long).

    A reader with a file descriptor (the filesystem driver's) going to a
    plain socket is sent with ``sendfile`` instead (:mod:`registryd.http.sendfile`):
    no copies through Python, no reactor work per chunk.
    """

    chunk_size = 1024 * 1024
    #: Set to False to always read and write (tests compare both paths).
    use_sendfile = True

    def __init__(self, request, reader, length):
        self._request = request
        self._reader = reader
        self._remaining = length
        self._paused = False
        self._stopped = False
        self._resumed = None
        self._transfer = None

    async def send(self):
        transfer = self._sendfile_transfer()
        if transfer is not None:
            return await self._send_with(transfer)
        self._request.registerProducer(self, True)
        try:
            next_read = self._read_next()
            while next_read is not None:
                data = await next_read
                if self._stopped:
                    break
                if not data:
                    if self._remaining is None:
                        break  # the end of a blob of unannounced length
                    # The file ended early (changed under us): the response
                    # cannot be completed truthfully; drop the connection.
                    self._request.transport.abortConnection()
                    self._stopped = True
                    break
                if self._remaining is not None:
                    self._remaining -= len(data)
                next_read = self._read_next()
                self._request.write(data)
                while self._paused and not self._stopped:
                    self._resumed = defer.Deferred()
                    await self._resumed
        finally:
            if not self._stopped:
                self._request.unregisterProducer()
            await self._reader.close()

    def _sendfile_transfer(self):
        fileno = getattr(self._reader, "fileno", None)
        if not self.use_sendfile or fileno is None or not self._remaining:
            return None
        transport = sendfile.socket_transport(self._request.transport)
        if transport is None:
            return None
        from twisted.internet import reactor

        return sendfile.SendfileTransfer(
            reactor,
            reactor.getThreadPool(),
            transport,
            fileno(),
            self._reader.offset,
            self._remaining,
        )

    async def _send_with(self, transfer):
        request = self._request
        self._transfer = transfer
        request.registerProducer(self, True)
        try:
            request.write(b"")  # the headers, through Twisted's buffer
            try:
                await transfer.start()
            except Exception:
                failure = Failure()
                if not self._stopped:
                    # Cut short (the file shrank, a socket error): the
                    # response cannot be completed truthfully.
                    self._stopped = True
                    request.transport.abortConnection()
                if not sendfile.is_disconnect(failure):
                    failure.raiseException()
        finally:
            request.sentLength += transfer.sent
            self._transfer = None
            if not self._stopped:
                request.unregisterProducer()
            await self._reader.close()

    def _read_next(self):
        if self._remaining is None:
            return defer.maybeDeferred(self._reader.read, self.chunk_size)
        if self._remaining <= 0:
            return None
        return defer.maybeDeferred(self._reader.read, min(self.chunk_size, self._remaining))

    def _wake(self):
        waiter, self._resumed = self._resumed, None
        if waiter is not None:
            waiter.callback(None)

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._wake()

    def stopProducing(self):
        self._stopped = True
        self._paused = False
        if self._transfer is not None:
            self._transfer.stop()
        self._wake()

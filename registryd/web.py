"""twisted.web plumbing for streaming request and response bodies.

twisted.web buffers a whole request body (into memory or a temporary file)
before any resource sees the request: there is no public API for streaming
uploads (Twisted tickets #4688, #5511).  registryd needs one, so this module
keeps the whole hack in one place:

* :class:`StreamingHTTPChannel` dispatches a blob-upload request to the
  application as soon as its headers are in ("early dispatch"), instead of
  after its body.  The handler authorises and validates, then reads the body
  from ``request.body`` (a :class:`RequestBody`) while it is still arriving,
  with back-pressure: when the handler falls behind, the channel stops
  reading from the socket.
* If the handler answers before the body is complete (an error), the rest of
  the body is read and discarded before the connection takes its next
  request, so keep-alive stays correct.
* :class:`BlobSender` streams a storage reader to the client as a push
  producer, reading ahead one chunk and pausing when the socket is full.

Which requests stream is decided from the method and path alone
(:func:`wants_streaming`); everything else goes through twisted.web as
usual.
"""

import io
import re
from collections import deque

from twisted.internet import defer
from twisted.web import http, server
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

_UPLOAD_PATH = re.compile(rb"^/v2/.+/blobs/uploads/")
_STREAMING_METHODS = frozenset([b"POST", b"PATCH", b"PUT"])


def wants_streaming(method, path):
    """Blob uploads stream; nothing else does."""
    return method in _STREAMING_METHODS and bool(_UPLOAD_PATH.match(path))


class BodyConnectionLost(Exception):
    """The client went away before sending the whole request body."""


class RequestBody:
    """A request body read while it arrives.

    The channel pushes chunks in (:meth:`_received`); the handler pulls them
    out with :meth:`read`.  Up to C{high_water} bytes wait here; beyond that
    the transport is paused until the handler has taken the buffer below
    C{low_water}.
    """

    high_water = 4 * 1024 * 1024
    low_water = 1024 * 1024

    def __init__(self, transport, length):
        self._transport = transport
        self.length = length  # declared Content-Length, None if chunked
        self.received = 0
        self.finished = False
        self._error = None
        self._chunks = deque()
        self._buffered = 0
        self._waiter = None
        self._paused = False
        self._discarding = False

    # channel side

    def _received(self, data):
        self.received += len(data)
        if self._discarding:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self.high_water and not self._paused:
            self._paused = True
            self._transport.pauseProducing()
        self._wake()

    def _finish(self):
        self.finished = True
        self._wake()

    def _fail(self, reason):
        if not self.finished and self._error is None:
            self._error = reason
            self._wake()

    def _wake(self):
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def discard(self):
        """Drop what is buffered and whatever still arrives: the handler
        has answered without wanting the rest."""
        self._discarding = True
        self._chunks.clear()
        self._buffered = 0
        self._resume()

    def _resume(self):
        if self._paused:
            self._paused = False
            self._transport.resumeProducing()

    # handler side

    async def read(self, size):
        """Up to C{size} bytes (possibly fewer); C{b""} once the body is over.

        Raises L{BodyConnectionLost} if the client disconnected before the
        end; the bytes returned before that are valid body bytes.
        """
        while not self._chunks:
            if self._error is not None:
                raise BodyConnectionLost(self._error.getErrorMessage())
            if self.finished:
                return b""
            if self._waiter is None:
                self._waiter = defer.Deferred()
            await self._waiter
        pieces = []
        taken = 0
        while self._chunks and taken < size:
            chunk = self._chunks.popleft()
            if taken + len(chunk) > size:
                keep = size - taken
                self._chunks.appendleft(chunk[keep:])
                chunk = chunk[:keep]
            pieces.append(chunk)
            taken += len(chunk)
        self._buffered -= taken
        if self._buffered < self.low_water:
            self._resume()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class _EmptyBody(RequestBody):
    """The body of a request that has none (Content-Length: 0)."""

    def __init__(self):
        super().__init__(None, 0)
        self.finished = True


class LimitedBuffer(io.BytesIO):
    """The body of a request that is not streamed (manifests): kept in
    memory up to C{limit} bytes; beyond that further bytes are dropped and
    C{overflow} is set, so the handler answers 413 without the server ever
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


#: Largest request body buffered for a non-upload request (a manifest is
#: at most 4 MiB, as in Distribution).
MAX_BUFFERED_BODY = 4 * 1024 * 1024


class StreamingRequest(server.Request):
    """A Request whose body may be streamed to the handler (``self.body``).

    For a streaming request, twisted.web's C{content} is an empty buffer and
    C{requestReceived} is called twice by the channel: early, when the
    headers are in (that dispatches it), and again when the body is complete
    (that ends C{self.body}).
    """

    body = None
    _dispatched = False
    _cleanup_deferred = False

    def gotLength(self, length):
        channel = self.channel
        if wants_streaming(getattr(channel, "_command", b""), getattr(channel, "_path", b"")):
            self.content = io.BytesIO()
            self.body = _EmptyBody() if length == 0 else RequestBody(channel.transport, length)
        else:
            self.content = LimitedBuffer(MAX_BUFFERED_BODY)
            if length is not None and length > MAX_BUFFERED_BODY:
                self.content.overflow = True

    def handleContentChunk(self, data):
        if self.body is not None:
            self.body._received(data)
        else:
            super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._dispatched:
            # Second call: the body is complete.
            self.body._finish()
            if self._cleanup_deferred:
                self._cleanup_deferred = False
                server.Request._cleanup(self)
            return
        self._dispatched = True
        super().requestReceived(command, path, version)

    def _cleanup(self):
        # The handler finished before the body did: answer now, but keep the
        # channel on this request (discarding the rest of the body) until the
        # body is over, so the next request on the connection parses cleanly.
        if self.body is not None and not self.body.finished and not self._disconnected:
            self.body.discard()
            self._cleanup_deferred = True
            return
        super()._cleanup()

    def connectionLost(self, reason):
        if self.body is not None:
            self.body._fail(reason)
        super().connectionLost(reason)


class StreamingHTTPChannel(http.HTTPChannel):
    """An HTTPChannel that dispatches streaming requests at end of headers."""

    _first_data = True

    def dataReceived(self, data):
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
        super().dataReceived(data)

    def allHeadersReceived(self):
        super().allHeadersReceived()
        request = self.requests[-1]
        if request.body is not None and self.length != 0 and not request._dispatched:
            # Dispatch now; the body follows into request.body.  When it is
            # complete, allContentReceived calls requestReceived again.
            request.requestReceived(self._command, self._path, self._version)


class StreamingSite(server.Site):
    """The Site registryd serves: streaming requests, HTTP/1.1."""

    requestFactory = StreamingRequest
    protocol = StreamingHTTPChannel


@implementer(IPushProducer)
class BlobSender:
    """Streams C{length} bytes from a storage reader to a request.

    Reads ahead one chunk so storage and network work overlap; stops
    reading while the transport is paused.  :meth:`send` returns a Deferred
    that fires when everything is written (or the client left).
    """

    chunk_size = 1024 * 1024

    def __init__(self, request, reader, length):
        self._request = request
        self._reader = reader
        self._remaining = length
        self._paused = False
        self._stopped = False
        self._resumed = None

    async def send(self):
        self._request.registerProducer(self, True)
        try:
            next_read = self._read_next()
            while next_read is not None:
                data = await next_read
                if self._stopped:
                    break
                if not data:
                    # The file ended early (changed under us): the response
                    # cannot be completed truthfully; drop the connection.
                    self._request.transport.abortConnection()
                    self._stopped = True
                    break
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

    def _read_next(self):
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
        self._wake()

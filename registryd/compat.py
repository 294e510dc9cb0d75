"""Every private Twisted name registryd depends on, in one place.

Twisted has no public API for a few things registryd needs (streaming
request bodies, the port a strports service bound, the log observers twistd
installed, Twisted's endpoint-string parser...).  Each use of a private
name is a function here, so that:

* the rest of registryd never spells a Twisted name with a leading
  underscore (hooks it overrides in a subclass, listed below, excepted);
* ``tests/unit/test_compat.py`` checks every one of them against the
  installed Twisted and fails with a message naming the attribute and the
  Twisted version when it changed: an upgrade breaks a test, not a
  running registry.

Supported Twisted: ``>=26.4,<27`` (declared in ``setup.py``).  Before
26.4 Twisted's TLS mutates an OpenSSL context that current pyOpenSSL
(26.x, what ``Twisted[tls]`` installs) refuses to change once used, so TLS
listeners fail (seen with 23.10, 24.11 and 25.5);
26.4.0 and 26.10.0 pass the unit and integration tests.
The upper bound is the next major release after the one tested: raise it
once this module's tests pass on it.

Hooks overridden in subclasses (the override is where it must be; the
hook's existence and its callers are checked here, by the tests):

* ``twisted.web.server.Request._cleanup`` (``registryd.http.web``: keep the
  channel on a request whose handler answered before its body ended);
* ``twisted.web.http.HTTPChannel._respondToBadRequestAndDisconnect``
  (``registryd.http.web``: the spec's JSON error for a request Twisted cannot
  parse, instead of a bare 400);
* ``twisted.conch.manhole_ssh.TerminalRealm._getAvatar``
  (``registryd.ops.manhole``: hand the session its namespace factory).
"""

import types

from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.protocols import basic
from twisted.web import http, http_headers, server
from twisted.web import resource as resource_module
from twisted.web.iweb import INonQueuedRequestFactory

import twisted

try:
    from twisted.internet import epollreactor
except ImportError:  # no epoll: not Linux
    epollreactor = None  # type: ignore[assignment]

_log = Logger()

#: The installed Twisted's version, for messages.
TWISTED_VERSION = twisted.__version__


class TwistedChanged(RuntimeError):
    """A private Twisted name registryd relies on is gone or changed."""

    def __init__(self, name, what):
        super().__init__(
            f"Twisted {TWISTED_VERSION}: {name} {what}; registryd.compat needs updating "
            f"for this Twisted (supported: see registryd/compat.py)"
        )
        self.name = name


# --- twisted.logger ----------------------------------------------------------


def log_observers(publisher):
    """The mutable list of observers of a ``twisted.logger.LogPublisher``
    (``LogPublisher._observers``).

    twistd installs its observers (stdout, ``--logfile``, ``--syslog``) on
    the global publisher without handing them to the application; replacing
    them in this list is the one way to filter or reformat what twistd
    chose.

    :raises TwistedChanged: the attribute is gone or not a list.
    """
    observers = getattr(publisher, "_observers", None)
    if not isinstance(observers, list):
        raise TwistedChanged("twisted.logger.LogPublisher._observers", "is not a list")
    return observers


# --- twisted.application ---------------------------------------------------


def listening_port(listener):
    """A Deferred firing with the IListeningPort a started
    ``StreamServerEndpointService`` (what ``strports.service`` returns)
    bound (``StreamServerEndpointService._waitingForPort``).

    :raises TwistedChanged: the service keeps no such Deferred.
    """
    waiting = getattr(listener, "_waitingForPort", None)
    if waiting is None or not hasattr(waiting, "addCallback"):
        raise TwistedChanged(
            "twisted.application.internet.StreamServerEndpointService._waitingForPort",
            f"is missing from {getattr(listener, 'name', listener)!r} (not started?)",
        )
    return waiting


def raise_listen_errors(listener):
    """Make a ``StreamServerEndpointService`` raise from
    ``privilegedStartService`` when it cannot listen, as
    ``strports.service`` does (``_raiseSynchronously``), instead of only
    logging the failure and running deaf."""
    if not hasattr(listener, "_raiseSynchronously"):
        raise TwistedChanged(
            "twisted.application.internet.StreamServerEndpointService._raiseSynchronously",
            "is gone",
        )
    listener._raiseSynchronously = True


# --- twisted.internet -------------------------------------------------------

#: Marks a port class made by :func:`accept_one_at_a_time`.
_ONE_ACCEPT = "_registryd_one_accept"


def accept_one_at_a_time(port):
    """Make a listening port accept one connection per wake-up.

    Twisted's ``tcp.Port``/``unix.Port`` accept up to ``numberAccepts``
    pending connections (100, raised while they keep coming) each time the
    socket is readable.  With several processes on one socket, all are
    woken and the first takes every connection waiting (measured: 64 of 64
    wrk connections, the workers none).  Taking one at a time lets the
    processes share them.  ``numberAccepts`` is an undocumented attribute
    that ``doRead`` reassigns, so the port's class is swapped for a
    subclass where it is a constant property.

    :raises TwistedChanged: the port has no ``numberAccepts``.
    """
    cls = port.__class__
    if getattr(cls, _ONE_ACCEPT, False):
        return port
    if not isinstance(getattr(port, "numberAccepts", None), int):
        raise TwistedChanged(f"{cls.__module__}.{cls.__name__}.numberAccepts", "is not an int")
    fair = type(
        cls.__name__,
        (cls,),
        {
            "numberAccepts": property(lambda self: 1, lambda self, value: None),
            _ONE_ACCEPT: True,
            "__module__": cls.__module__,
        },
    )
    port.__class__ = fair
    return port


def parse_endpoint_description(description):
    """``(args, kwargs)`` of an endpoint string, with Twisted's own parser
    (escapes and all: ``twisted.internet.endpoints._parse``), which has
    no public name but has not changed since strports became endpoints."""
    parse = getattr(endpoints, "_parse", None)
    if parse is None:
        raise TwistedChanged("twisted.internet.endpoints._parse", "is gone")
    return parse(description)


def socket_read_size(transport):
    """How many bytes a socket transport asks ``recv`` for at a time
    (``twisted.internet.tcp.Connection.bufferSize``, which ``doRead``
    reads: 64 KiB by default); None if it does not look like a socket
    transport (TLS, tests' string transports): its reads then stay as
    they are."""
    size = getattr(transport, "bufferSize", None)
    if not isinstance(size, int) or isinstance(size, bool):
        return None
    return size


def set_socket_read_size(transport, size):
    """Make a socket transport whose :func:`socket_read_size` is not None
    ask ``recv`` for up to ``size`` bytes at a time, from its next read
    on (``bufferSize``, read by ``doRead`` on every read)."""
    transport.bufferSize = size


def write_buffer_empty(transport):
    """Whether a Twisted ``FileDescriptor`` transport wrote out all it was
    given (``dataBuffer``, ``offset``, ``_tempDataLen``); None if it does
    not look like one (TLS, tests' string transports): callers then write
    through the transport as usual."""
    try:
        return len(transport.dataBuffer) == transport.offset and transport._tempDataLen == 0
    except (AttributeError, TypeError):
        return None


# --- twisted.internet: the epoll reactor's dispatch ---------------------------


def dispatch_events_directly(reactor):
    """Make an epoll reactor hand each I/O event to its selectable with a
    plain call; ``False`` (nothing changed) for any other reactor.

    ``EPollReactor.doPoll`` calls each reader and writer through
    ``twisted.python.log.callWithLogger``, which pushes a legacy log context
    naming the connection (the ``[HTTPChannel,3,127.0.0.1]`` prefix of
    legacy ``log.msg`` lines) and catches what escapes: 1.2 us per event,
    and a small request is two events (its read, then its write).  Here
    the same loop (``EPollReactor._poller``, ``_selectables``,
    ``_doReadOrWrite``, its per-iteration body) calls ``_doReadOrWrite``
    directly, which catches and logs what a reader or writer raises itself;
    what escapes it is logged here.  Legacy log lines written during an
    event lose the connection prefix; registryd's own (``twisted.logger``)
    never had it.  Set on the reactor instance (``doIteration``, what
    ``mainLoop`` calls), so only a reactor given here changes."""
    if epollreactor is None or not isinstance(reactor, epollreactor.EPollReactor):
        return False
    if not all(hasattr(reactor, name) for name in ("_poller", "_selectables", "_doReadOrWrite")):
        raise TwistedChanged("twisted.internet.epollreactor.EPollReactor", "lost its poll state")
    reactor.doIteration = types.MethodType(_poll_and_dispatch, reactor)
    return True


def _poll_and_dispatch(reactor, timeout):
    # EPollReactor.doPoll, calling _doReadOrWrite without a log context.
    if timeout is None:
        timeout = -1
    selectables = reactor._selectables
    try:
        events = reactor._poller.poll(timeout, len(selectables))
    except InterruptedError:
        return
    dispatch = reactor._doReadOrWrite
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is not None:
            try:
                dispatch(selectable, fd, event)
            except Exception:
                _log.failure("dispatching an I/O event to {selectable!r}", selectable=selectable)


# --- twisted.web ------------------------------------------------------------


def channel_request_line(channel):
    """``(method, path, version)`` of the request whose headers an
    ``HTTPChannel`` is reading (``_command``, ``_path``, ``_version``),
    known from ``allHeadersReceived`` on; ``(b"", b"", b"")`` before."""
    return (
        getattr(channel, "_command", b"") or b"",
        getattr(channel, "_path", b"") or b"",
        getattr(channel, "_version", b"") or b"",
    )


def set_channel_path(channel, path):
    """Change the path of the request an ``HTTPChannel`` is reading, before
    the request learns it (``HTTPChannel._path``, read when
    ``allHeadersReceived`` dispatches)."""
    channel._path = path


def request_line_received(channel):
    """Whether an ``HTTPChannel`` has read the request line of the request
    it is reading (``HTTPChannel._command`` is set from then on)."""
    return hasattr(channel, "_command")


def received_headers(channel):
    """``(bytes, count)`` of the request line and headers an
    ``HTTPChannel`` has received for the current request
    (``_receivedHeaderSize``, ``_receivedHeaderCount``), for telling why
    it refused the request (``_respondToBadRequestAndDisconnect``)."""
    return channel._receivedHeaderSize, channel._receivedHeaderCount


def response_header_table(request):
    """The dict a ``twisted.web`` Request keeps its response headers in
    (``Headers._rawHeaders``: canonical name -> list of values), for setting
    headers whose names are canonical already and whose values have no line
    breaks without ``setHeader``'s per-call encoding and sanitising."""
    table = getattr(request.responseHeaders, "_rawHeaders", None)
    if type(table) is not dict:
        raise TwistedChanged("twisted.web.http_headers.Headers._rawHeaders", "is not a dict")
    return table


def encodes_responses(resource):
    """Whether ``twisted.web.server.Request.process`` would ask
    ``resource`` for a response encoder (it provides the private
    ``twisted.web.resource._IEncodingResource``, as
    ``EncodingResourceWrapper`` does)."""
    return resource_module._IEncodingResource.providedBy(resource)


def request_disconnected(request):
    """Whether a ``twisted.web`` Request lost its connection
    (``Request._disconnected``)."""
    return request._disconnected


def cleanup_request(request):
    """Twisted's own end of a finished request (``server.Request._cleanup``:
    the channel moves on to the next request), bypassing an override."""
    server.Request._cleanup(request)


#: What ``HTTPChannel`` catches from a transfer decoder to answer 400
#: (``twisted.web.http._MalformedChunkedDataError``).
MalformedChunkedData = getattr(http, "_MalformedChunkedDataError", None)
#: What a transfer decoder raises when the connection ends mid-body
#: (``twisted.web.http._DataLoss``).
ChunkedDataLoss = getattr(http, "_DataLoss", None)
#: The characters Twisted allows in chunk extensions
#: (``twisted.web.http._chunkExtChars``).
CHUNK_EXTENSION_CHARACTERS = getattr(http, "_chunkExtChars", None)
#: The longest chunk-size line Twisted accepts (public).
MAX_CHUNK_SIZE_LINE = getattr(http, "maxChunkSizeLineLength", None)
#: Twisted's decoder of chunked bodies (``twisted.web.http._ChunkedTransferDecoder``),
#: looked up once: ``twisted.web.http`` is a deprecation proxy, slow to ask.
_ChunkedTransferDecoder = getattr(http, "_ChunkedTransferDecoder", None)


def replace_chunked_decoder(channel, factory):
    """If the request an ``HTTPChannel`` is reading has a chunked body
    (call it from ``allHeadersReceived``, before any byte of it), decode it with
    ``factory(data_callback, finish_callback)`` instead of Twisted's
    ``_ChunkedTransferDecoder`` (``HTTPChannel._transferDecoder``, chosen
    from the headers and fed by ``rawDataReceived``)."""
    decoder = getattr(channel, "_transferDecoder", None)
    if type(decoder) is _ChunkedTransferDecoder and decoder.state == "CHUNK_LENGTH":
        channel._transferDecoder = factory(decoder.dataCallback, decoder.finishCallback)


# --- twisted.web: a request head read in one piece ----------------------------

#: Bytes of a token (RFC 9110 section 5.6.2), what Twisted accepts as a
#: method (``twisted.web._abnf._istoken``).
_TOKEN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"
#: Bytes Twisted accepts in a request-target (``twisted.web.http._parseRequestLine``
#: refuses a byte ``<= 32`` or ``> 176``).
_TARGET_BYTES = bytes(range(33, 177))
_HTTP_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
#: Headers that give a request a body: a head that has one is read line by
#: line, by Twisted, which chooses the body's decoder.
_BODY_HEADERS = (b"Content-Length", b"Transfer-Encoding")
_HEAD_END = b"\r\n\r\n"
_header_names = http_headers._nameEncoder
_InvalidHeaderName = http_headers.InvalidHeaderName
_line_receiver_data = basic.LineReceiver.dataReceived


def _simple_head(data, limit, max_headers):
    """``(method, target, version, [(name, value)...], size)`` of ``data``
    when it is exactly one bodiless request head that Twisted's
    ``HTTPChannel.lineReceived`` would accept as it is, with every check
    Twisted makes (request line, token header names in their canonical
    case, values without NUL, CR or LF, stripped of spaces and tabs; at
    most ``limit`` bytes and ``max_headers`` headers); ``None`` for
    anything else (more or less than one head, a body, a folded header, an
    error), which Twisted then reads itself."""
    end = data.find(_HEAD_END)
    if end <= 0 or end + 4 != len(data) or len(data) > limit:
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if (
        version not in _HTTP_VERSIONS
        or not method
        or method.translate(None, _TOKEN_BYTES)
        or not target
        or target.translate(None, _TARGET_BYTES)
    ):
        return None
    if len(lines) - 1 > max_headers:
        return None
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or line[0] in b" \t":
            return None
        try:
            name = _header_names.encode(name)
        except _InvalidHeaderName:
            return None
        if name in _BODY_HEADERS:
            return None
        value = value.strip(b" \t")
        if len(value.translate(None, b"\x00\r\n")) != len(value):
            return None
        headers.append((name, value))
    return method, target, version, headers, end - 2 * (len(lines) - 1)


def receive_whole_head(channel, data):
    """Let an ``HTTPChannel`` read a bodiless request head that arrived in
    one piece without its line-by-line parser; ``False`` (nothing done)
    unless the channel waits for a new request and ``data`` is such a head.

    ``LineReceiver.dataReceived`` and ``HTTPChannel.lineReceived`` cost a
    small request more CPU than routing and answering it (about a fifth of
    a blob ``HEAD``): a call per line, each with Twisted's per-line state
    machine.  Here the head is checked as Twisted checks it
    (:func:`_simple_head`) and the channel is left in the state its own
    parser leaves it in at the end of the head (``HTTPChannel.__first_line``,
    ``_command``, ``_path``, ``_version``, the header counters, the request's
    ``requestHeaders._rawHeaders``); then ``allHeadersReceived`` and
    ``allContentReceived`` run as they do there.  Anything else (a body,
    pipelined requests, a folded or malformed header, a head split over
    reads) goes through Twisted's parser, which refuses what is wrong.
    ``tests/unit/test_compat.py`` checks both give the same requests for
    generated heads."""
    if (
        not channel.line_mode
        or channel._buffer
        or channel._busyReceiving
        or channel.paused
        or not channel._HTTPChannel__first_line
        or not channel.persistent
    ):
        return False
    head = _simple_head(data, min(channel.totalHeadersSize, channel.MAX_LENGTH), channel.maxHeaders)
    if head is None:
        return False
    method, target, version, headers, size = head
    channel.resetTimeout()
    channel._busyReceiving = True
    try:
        factory = channel.requestFactory
        if INonQueuedRequestFactory.providedBy(factory):
            request = factory(channel)
        else:
            request = factory(channel, len(channel.requests))
        channel.requests.append(request)
        channel._HTTPChannel__first_line = 0
        channel._command = method
        channel._path = target
        channel._version = version
        table = request.requestHeaders._rawHeaders
        for name, value in headers:
            values = table.get(name)
            if values is None:
                table[name] = [value]
            else:
                values.append(value)
        channel._receivedHeaderSize = size
        channel._receivedHeaderCount = len(headers)
        channel.allHeadersReceived()
        if channel.length == 0:
            channel.allContentReceived()
        else:
            channel.setRawMode()
    finally:
        channel._busyReceiving = False
    if channel._buffer:
        # What arrived while the request ran (requestDone gives the channel
        # what it buffered): Twisted's parser takes it from here.
        _line_receiver_data(channel, b"")
    return True


# --- twisted.conch ------------------------------------------------------------


def manhole_needs_newline(manhole):
    """Whether a ``twisted.conch.manhole.Manhole``'s terminal is in the
    middle of a line (``Manhole._needsNewline``): output then starts on a
    new one."""
    return manhole._needsNewline()

"""What every handler needs: query arguments, headers, responses."""

import re

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from registryd import compat, errors

log = Logger()


def header_name(name):
    """``name`` (str or bytes) as twisted.web keys it (``Content-Length``,
    ``ETag``), through Twisted's public API: once per name, for
    :func:`set_known_headers`.  Raises what ``setHeader`` would for a name
    that is not an HTTP token."""
    headers = Headers()
    headers.setRawHeaders(name, [b""])
    return next(iter(headers.getAllRawHeaders()))[0]


def set_known_headers(request, headers):
    """Set response headers ``(name, value)``, replacing any of the same name,
    where each name comes from :func:`header_name` and each value is bytes
    registryd made (a digest, a size, a constant, a checked configured
    value): nothing to encode or sanitise.  ``setHeader`` does both on
    every call, and a blob ``HEAD`` sets ten headers."""
    table = compat.response_header_table(request)
    for name, value in headers:
        table[name] = [value]


API_VERSION_HEADER = (b"Docker-Distribution-API-Version", b"registry/2.0")
#: Content-Length as twisted.web keys it (:func:`set_known_headers`)
CONTENT_LENGTH = header_name("Content-Length")

# Encoded '/', '\' or NUL in a /v2/ path: twisted.web decodes path segments,
# which would let them change a name's structure.  Refused outright.
_ENCODED_SEPARATORS = re.compile(rb"%(?:2f|5c|00)", re.IGNORECASE)


def check_raw_path(request):
    if _ENCODED_SEPARATORS.search(request.path):
        raise errors.NameInvalid("encoded '/', '\\' or NUL in the request path")


# An encoded control character: %00-%1f or %7f.
_ENCODED_CONTROL = re.compile(rb"%(?:[01][0-9a-f]|7f)", re.IGNORECASE)


def check_unrouted_path(request):
    """Why a /v2/ path matched no route, when it is a bad name: an encoded
    separator (:func:`check_raw_path`), or an encoded control character, which
    the routes' ``<path:name>`` does not match (``.`` stops at a newline)
    while tags and digests are matched and refused by their own checks."""
    check_raw_path(request)
    if _ENCODED_CONTROL.search(request.path):
        raise errors.NameInvalid("control character in the repository name")


def query_args(request, name):
    """Every value of query (or form) argument ``name``, as str: 400
    ``BadRequest`` if one is not UTF-8."""
    try:
        return [value.decode("utf-8") for value in request.args.get(name.encode("ascii"), ())]
    except UnicodeDecodeError:
        raise errors.BadRequest(f"query parameter {name!r} is not UTF-8") from None


def query_arg(request, name, unique=False):
    """The first value of query (or form) argument ``name`` as str, or None;
    with ``unique``, 400 ``BadRequest`` if it is given more than once (the
    token server's parameters)."""
    values = query_args(request, name)
    if unique and len(values) > 1:
        raise errors.BadRequest(f"parameter {name!r} given more than once")
    return values[0] if values else None


#: The largest number a header or query parameter may carry: Go's int64,
#: what Distribution and Go's net/http parse these numbers as.
MAX_DECIMAL = 2**63 - 1
_DECIMAL = re.compile(r"[0-9]+")


def decimal(text):
    """The value of ``text`` if it is ASCII digits only and at most
    :data:`MAX_DECIMAL`, else None.

    Not ``str.isdigit``/``int``: those take ``'\u00b2'`` or Arabic-Indic
    digits (and ``int`` then fails on the first), and ``int`` raises on
    more than 4300 digits, which a 16 KiB header line can hold."""
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(MAX_DECIMAL)):
        return None
    value = int(significant or "0")
    return value if value <= MAX_DECIMAL else None


def respond(request, status, headers=(), body=b"", content_type=None):
    """Set status, headers and Content-Length; return the body for klein."""
    request.setResponseCode(status)
    for name, value in headers:
        request.setHeader(name, value)
    if content_type is not None:
        request.setHeader("Content-Type", content_type)
    set_known_headers(request, [(CONTENT_LENGTH, b"%d" % len(body))])
    return body


def upload_headers(request, urls, upload):
    return [
        ("Location", urls.upload(request, upload.name, upload.id)),
        ("Range", upload.range_header()),
        ("Docker-Upload-UUID", upload.id),
    ]


def shielded(running, expected=(defer.CancelledError,), what="handler"):
    """A Deferred that follows ``running``, but whose cancellation leaves
    ``running`` alone.

    klein cancels a handler when its client goes away.  Some work must go
    on regardless: an upload stores the body bytes that arrived (the client
    resumes from them), a blob sender learns how much it sent (and a
    pull-through cache's reader removes its partial copy).  A failure of ``running`` after the caller stopped waiting is
    logged, unless it is one of the ``expected`` exception types.
    """
    result = defer.Deferred()  # no canceller: cancelling it leaves `running` alone

    def finished(outcome):
        if not result.called:
            result.callback(outcome)
        elif isinstance(outcome, Failure) and not outcome.check(*expected):
            log.failure("{what} failed after its client left", outcome, what=what)

    running.addBoth(finished)
    return result

"""What every handler needs: query arguments, headers, responses."""

import re

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from registryd import errors

log = Logger()

API_VERSION_HEADER = (b"Docker-Distribution-API-Version", b"registry/2.0")

# Encoded '/', '\' or NUL in a /v2/ path: twisted.web decodes path segments,
# which would let them change a name's structure.  Refused outright.
_ENCODED_SEPARATORS = re.compile(rb"%(?:2f|5c|00)", re.IGNORECASE)


def check_raw_path(request):
    if _ENCODED_SEPARATORS.search(request.path):
        raise errors.NameInvalid("encoded '/', '\\' or NUL in the request path")


def query_args(request, name):
    """Every value of query (or form) argument C{name}, as str: 400
    C{BadRequest} if one is not UTF-8."""
    try:
        return [value.decode("utf-8") for value in request.args.get(name.encode("ascii"), ())]
    except UnicodeDecodeError:
        raise errors.BadRequest(f"query parameter {name!r} is not UTF-8") from None


def query_arg(request, name, unique=False):
    """The first value of query (or form) argument C{name} as str, or None;
    with C{unique}, 400 C{BadRequest} if it is given more than once (the
    token server's parameters)."""
    values = query_args(request, name)
    if unique and len(values) > 1:
        raise errors.BadRequest(f"parameter {name!r} given more than once")
    return values[0] if values else None


def respond(request, status, headers=(), body=b"", content_type=None):
    """Set status, headers and Content-Length; return the body for klein."""
    request.setResponseCode(status)
    for name, value in headers:
        request.setHeader(name, value)
    if content_type is not None:
        request.setHeader("Content-Type", content_type)
    request.setHeader("Content-Length", str(len(body)))
    return body


def upload_headers(request, urls, upload):
    return [
        ("Location", urls.upload(request, upload.name, upload.id)),
        ("Range", upload.range_header()),
        ("Docker-Upload-UUID", upload.id),
    ]


def shielded(running, expected=(defer.CancelledError,), what="handler"):
    """A Deferred that follows C{running}, but whose cancellation leaves
    C{running} alone.

    klein cancels a handler when its client goes away.  Some work must go
    on regardless: an upload stores the body bytes that arrived (the client
    resumes from them), a blob fetched for the cache cleans up its partial
    copy.  A failure of C{running} after the caller stopped waiting is
    logged, unless it is one of the C{expected} exception types.
    """
    result = defer.Deferred()  # no canceller: cancelling it leaves `running` alone

    def finished(outcome):
        if not result.called:
            result.callback(outcome)
        elif isinstance(outcome, Failure) and not outcome.check(*expected):
            log.failure("{what} failed after its client left", outcome, what=what)

    running.addBoth(finished)
    return result

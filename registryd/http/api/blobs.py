"""``/v2/<name>/blobs/<digest>``: GET, HEAD (with single ranges) and DELETE."""

import re

from twisted.internet import defer
from twisted.python.failure import Failure

from registryd import errors
from registryd.digest import Digest
from registryd.http.api.base import (
    CONTENT_LENGTH,
    decimal,
    header_name,
    respond,
    set_known_headers,
    shielded,
)
from registryd.http.web import BlobSender

# RFC 9110 byte ranges: the unit, then byte-range-specs separated by commas
# (``first-last``, ``first-``, ``-suffix``), each matched whole.
_UNIT = re.compile(r"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=")
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


def parse_range(header, size):
    """Resolve a ``Range`` header against a blob of ``size`` bytes, as
    Distribution does (``http.ServeContent``'s ``parseRange``), where RFC
    9110 allows it.

    Returns (first, last) inclusive, or None to send the whole blob: no
    header, an empty ``bytes=``, a range unit other than ``bytes`` (RFC
    9110 section 14.2: an origin server MUST ignore a unit it does not
    understand; Go answers 416 to those), or several ranges (registryd
    sends no multipart responses; Go does; registry clients ask for one
    range).
    Raises RangeNotSatisfiable (416): without ``Content-Range`` for a
    ``bytes`` range that is syntactically invalid (not ``first-last``,
    ``first-`` or ``-suffix``, a last before its first, a number beyond
    int64: Go's "invalid range"; RFC 9110 lets a server ignore or reject
    it, and registryd rejects it as Distribution does, so a client's bug
    shows instead of a whole blob arriving where a part was asked for);
    with ``Content-Range: bytes */<size>`` when every range starts beyond
    the blob, or for a suffix of 0 bytes or of an empty blob.
    """
    if not header:
        return None
    unit = _UNIT.match(header)
    if unit is not None and unit.group(1).lower() != "bytes":
        return None
    invalid = errors.RangeNotSatisfiable(
        "invalid range: expected bytes=first-last, bytes=first- or bytes=-suffix",
        detail={"range": header[:100], "size": size},
    )
    if unit is None:
        raise invalid
    unsatisfiable = errors.RangeNotSatisfiable(
        detail={"range": header[:100], "size": size}, headers={"Content-Range": f"bytes */{size}"}
    )
    ranges, beyond = [], False
    for spec in header[unit.end() :].split(","):
        match = _SPEC.fullmatch(spec.strip(" \t"))
        if spec.strip(" \t") == "":
            continue
        if match is None or match.group(0) == "-":
            raise invalid
        first, last = (None if text == "" else decimal(text) for text in match.groups())
        if match.group(1) == "":  # suffix: the last N bytes
            if last is None:
                raise invalid
            if last == 0 or size == 0:
                raise unsatisfiable
            ranges.append((max(size - last, 0), size - 1))
            continue
        if first is None or (match.group(2) != "" and (last is None or last < first)):
            raise invalid
        if first >= size:
            beyond = True  # no overlap; others may still have some
            continue
        ranges.append((first, size - 1 if last is None else min(last, size - 1)))
    if not ranges:
        if beyond:
            raise unsatisfiable
        return None
    return ranges[0] if len(ranges) == 1 else None


# The response headers of a blob, named as twisted.web keys them
# (registryd.http.api.base.set_known_headers).
_DIGEST = header_name("Docker-Content-Digest")
_ACCEPT_RANGES = (header_name("Accept-Ranges"), b"bytes")
_ETAG = header_name("ETag")
_CACHE_CONTROL = (header_name("Cache-Control"), b"max-age=31536000")
_CONTENT_RANGE = header_name("Content-Range")
_CONTENT_TYPE = (header_name("Content-Type"), b"application/octet-stream")


async def get_blob(ctx, request, name, digest):
    repository = ctx.registry.repository(name)
    digest = Digest.parse(digest)
    blob = await repository.blobs.stat(digest)
    redirect = await repository.blobs.redirect(blob, request.method.decode("ascii"))
    encoded = str(digest).encode("ascii")
    headers = [(_DIGEST, encoded)]
    if blob.seekable:
        headers.append(_ACCEPT_RANGES)
    headers += [(_ETAG, b'"%s"' % encoded), _CACHE_CONTROL]
    if redirect is not None and request.method == b"GET":
        ctx.events.blob_pulled(request, repository.name, blob)
        set_known_headers(request, headers)
        return respond(request, 307, [("Location", redirect)])
    # A blob that can only be read from its start (one a pull-through
    # cache is fetching) is sent whole: RFC 9110 lets a server ignore Range.
    span = parse_range(request.getHeader("range"), blob.size) if blob.seekable else None
    if span is None:
        status, offset, length = 200, 0, blob.size
    else:
        status, offset, length = 206, span[0], span[1] - span[0] + 1
        headers.append((_CONTENT_RANGE, b"bytes %d-%d/%d" % (span[0], span[1], blob.size)))
    headers.append(_CONTENT_TYPE)
    if length is not None:  # None: upstream did not announce it
        headers.append((CONTENT_LENGTH, b"%d" % length))
    request.setResponseCode(status)
    set_known_headers(request, headers)
    if request.method == b"HEAD" or length == 0:
        if request.method == b"GET":
            ctx.events.blob_pulled(request, repository.name, blob)
        return b""
    reader = await repository.blobs.open(blob, offset)
    sending = defer.ensureDeferred(BlobSender(request, reader, length).send())

    def report_pull(outcome):
        # Every byte handed to the socket is a pull (Distribution: the copy
        # returned without error), also if the client hangs up right after.
        if length is None:
            complete = not isinstance(outcome, Failure)
        else:
            complete = request.sentLength >= length
        if complete:
            ctx.events.blob_pulled(request, repository.name, blob)
        return outcome

    sending.addBoth(report_pull)
    # Shielded: when the client leaves (klein cancels the handler) the
    # sender still finishes, so that it knows how much it sent (and a
    # pull-through cache's reader removes its partial copy).
    await shielded(sending, what="sending a blob")
    return None


async def delete_blob(ctx, request, name, digest):
    repository = ctx.registry.repository(name)
    digest = Digest.parse(digest)
    await repository.blobs.delete(digest)
    ctx.events.blob_deleted(request, repository.name, digest)
    return respond(request, 202, [("Docker-Content-Digest", str(digest))])

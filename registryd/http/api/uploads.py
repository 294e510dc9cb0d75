"""``/v2/<name>/blobs/uploads/``: start, mount, stream, chunk, finish, cancel.

These requests are dispatched as soon as their headers arrive
(``registryd.http.web``), so every check here happens before any body byte is
stored, and the body is streamed into the upload as it arrives.
"""

import re

from registryd import errors
from registryd.digest import DEFAULT_ALGORITHM, Digest, check_algorithm
from registryd.http.api.base import decimal, query_arg, respond, upload_headers
from registryd.names import check_repository_name

# The spec's ``^[0-9]+-[0-9]+$``, plus the RFC 9110 forms some clients send
# (``bytes 0-99/100``, ``bytes=0-99``, ``/*``); matched whole.
CONTENT_RANGE_PATTERN = r"(?:bytes[ =])?([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?"
_CONTENT_RANGE = re.compile(CONTENT_RANGE_PATTERN)

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def parse_content_range(header):
    """A chunk's ``Content-Range`` as (start, end), inclusive, or None when
    there is none; RANGE_INVALID when malformed or backwards."""
    if header is None:
        return None
    match = _CONTENT_RANGE.fullmatch(header.strip())
    start, end = (decimal(match.group(1)), decimal(match.group(2))) if match else (None, None)
    if start is None or end is None:
        raise errors.RangeInvalid(
            f"malformed Content-Range {header[:100]!r}; expected <start>-<end>"
        )
    if end < start:
        raise errors.RangeInvalid(f"Content-Range {header[:100]!r} ends before it starts")
    return start, end


def _check_chunk(request, upload, urls, body):
    """A chunk must start where the upload ends (else 416 with the current
    Range, so the client can resume) and agree with its Content-Length."""
    span = parse_content_range(request.getHeader("content-range"))
    if span is None:
        return None
    start, end = span
    if start != upload.size:
        raise errors.RangeInvalid(
            f"chunk starts at {start} but the upload has {upload.size} bytes",
            detail={"offset": upload.size},
            headers=dict(upload_headers(request, urls, upload)),
        )
    if body.length is not None and body.length != end - start + 1:
        raise errors.RangeInvalid(
            f"Content-Range covers {end - start + 1} bytes but Content-Length is {body.length}",
            headers=dict(upload_headers(request, urls, upload)),
        )
    return span


def _size_parameter(request):
    size = query_arg(request, "size")
    if size is None:
        return None
    number = decimal(size)
    if number is None:
        raise errors.SizeInvalid(f"size parameter {size[:100]!r} is not a number")
    return number


async def start_upload(ctx, request, name):
    repository = ctx.registry.repository(name)
    body = request.context.body
    mount = query_arg(request, "mount")
    if mount is not None:
        source = query_arg(request, "from")
        blob = await _try_mount(ctx, request, repository, Digest.parse(mount), source)
        if blob is not None:
            ctx.events.blob_mounted(request, repository.name, blob, source)
            return respond(
                request,
                201,
                [
                    ("Location", ctx.urls.blob(request, repository.name, blob.digest)),
                    ("Docker-Content-Digest", str(blob.digest)),
                ],
            )
    digest = query_arg(request, "digest")
    algorithm = query_arg(request, "digest-algorithm") or DEFAULT_ALGORITHM
    check_algorithm(algorithm)
    if digest is not None and mount is None:
        digest = Digest.parse(digest)
        if body.length != 0 or str(digest) == EMPTY_SHA256:
            return await _monolithic(ctx, request, repository, digest, body)
    async with await repository.uploads.start(algorithm) as upload:
        return respond(request, 202, upload_headers(request, ctx.urls, upload))


def _may_read(request):
    """Whether the caller may pull from a repository (the grant the app's
    admission step recorded)."""
    grant = request.context.grant
    return lambda name: grant.allows("repository", name, "pull")


async def _try_mount(ctx, request, repository, digest, source):
    """Mount from ``source``, or (no ``from``) from any repository the caller
    may read that has the blob; None when it cannot mount.  A source the
    caller may not read is treated like one without the blob: the client
    falls back to a normal upload and learns nothing about the source."""
    may_read = _may_read(request)
    if source is not None:
        check_repository_name(source)
        if not may_read(source):
            return None
        return await repository.blobs.mount(digest, source)
    found = await ctx.registry.find_readable_repository_with_blob(digest, may_read=may_read)
    if found is None:
        return None
    return await repository.blobs.mount(digest, found)


async def _monolithic(ctx, request, repository, digest, body):
    """``POST ?digest=`` with the whole blob as body: 201 or nothing kept."""
    async with await repository.uploads.start(digest.algorithm) as upload:
        try:
            await upload.append(body, completing=True)
            blob = await upload.complete(digest, _size_parameter(request))
        except BaseException:
            await upload.cancel()
            raise
    ctx.events.blob_pushed(request, repository.name, blob)
    return respond(
        request,
        201,
        [
            ("Location", ctx.urls.blob(request, repository.name, blob.digest)),
            ("Docker-Content-Digest", str(blob.digest)),
        ],
    )


async def upload_status(ctx, request, name, upload_id):
    upload = await ctx.registry.repository(name).uploads.status(upload_id)
    return respond(request, 204, upload_headers(request, ctx.urls, upload))


async def patch_upload(ctx, request, name, upload_id):
    async with await ctx.registry.repository(name).uploads.resume(upload_id) as upload:
        body = request.context.body
        _check_chunk(request, upload, ctx.urls, body)
        await upload.append(body)
        return respond(request, 202, upload_headers(request, ctx.urls, upload))


async def finish_upload(ctx, request, name, upload_id):
    repository = ctx.registry.repository(name)
    async with await repository.uploads.resume(upload_id) as upload:
        digest = query_arg(request, "digest")
        if digest is None:
            raise errors.DigestInvalid("the digest query parameter is required to finish an upload")
        digest = Digest.parse(digest)
        expected_size = _size_parameter(request)
        body = request.context.body
        _check_chunk(request, upload, ctx.urls, body)
        if not (body.finished and body.received == 0):
            await upload.append(body, completing=True)
        blob = await upload.complete(digest, expected_size)
    ctx.events.blob_pushed(request, repository.name, blob)
    return respond(
        request,
        201,
        [
            ("Location", ctx.urls.blob(request, repository.name, blob.digest)),
            ("Docker-Content-Digest", str(blob.digest)),
        ],
    )


async def cancel_upload(ctx, request, name, upload_id):
    async with await ctx.registry.repository(name).uploads.resume(upload_id) as upload:
        await upload.cancel()
    return respond(request, 204)

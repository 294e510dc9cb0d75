"""Blobs through the cache: from upstream to the client and into storage at once.

A blob missing locally is fetched from upstream once and streamed two
ways: to the client, and into an ordinary upload of the repository
(``registryd.storage.uploads``: hashed and written with bounded memory).
The upload is committed as a blob of the repository only when the digest
(and the size upstream announced) match, with the atomic move of
``Registry.commit_blob``; so nothing half-written is ever served from the
cache, and concurrent fetches of one blob each write their own upload and
the second commit just finds the blob there.

Back-pressure runs end to end: a slow client pauses the tee, which stops
reading upstream's body, which pauses the upstream connection; a slow disk
does the same through the upload's bounded pump.

What is taken from upstream is bounded (``Upstream.blob_body``): the
body breaks off past the size upstream announced, or past
``proxy.maxblobsize`` without one, and after the upstream timeout without
data; an upstream that streams on or stalls cannot be relayed without end.

The client gets each chunk one chunk late: the last one is held back until
the digest is verified.  If upstream sent wrong bytes the connection is
cut instead, so the client sees a short body rather than a complete wrong
one.  A client that goes away ends the fetch, and the partial upload is
removed.
"""

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from registryd import errors, metrics
from registryd.api.base import shielded
from registryd.proxy.upstream import discard

log = Logger()


class ClientGone(Exception):
    """The client left while its blob was being fetched."""


@implementer(IPushProducer)
class Tee:
    """The source an upload appends from: upstream's body, each chunk also
    written to the client (one chunk late, see the module docstring), read
    only while the client's connection takes data."""

    def __init__(self, request, body):
        self._request = request
        self._body = body
        self._held = None
        self._paused = False
        self._resumed = None
        self.client_gone = False
        self._registered = True
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(lambda _: self.stopProducing())

    async def read(self, size):
        while self._paused and not self.client_gone:
            self._resumed = defer.Deferred()
            await self._resumed
        if self.client_gone:
            raise ClientGone()
        try:
            data = await self._body.read(size)
        except errors.UpstreamUnavailable:
            if self.client_gone:
                raise ClientGone() from None  # stopProducing aborted the body
            raise
        if self.client_gone:
            raise ClientGone()
        if data:  # at the end the last chunk stays held: finish() sends it
            if self._held is not None:
                self._request.write(self._held)
            self._held = data
        return data

    def finish(self):
        """The blob is verified and stored: send the last chunk."""
        if self._held is not None and not self.client_gone:
            self._request.write(self._held)
        self._held = None
        self._unregister()

    def abort(self):
        """Something failed: stop upstream and send nothing more."""
        self._held = None
        self._body.abort()
        self._unregister()

    def _unregister(self):
        if self._registered:
            self._registered = False
            if not self.client_gone:
                self._request.unregisterProducer()

    # IPushProducer, for the client's connection

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._wake()

    def stopProducing(self):
        if self.client_gone:
            return
        self.client_gone = True
        self._paused = False
        self._body.abort()
        self._wake()

    def _wake(self):
        waiter, self._resumed = self._resumed, None
        if waiter is not None:
            waiter.callback(None)


def _headers(request, digest, length):
    request.setResponseCode(200)
    request.setHeader("Docker-Content-Digest", str(digest))
    request.setHeader("ETag", f'"{digest}"')
    request.setHeader("Content-Type", "application/octet-stream")
    if length is not None:
        request.setHeader("Content-Length", str(length))


async def serve_blob(ctx, request, repository, digest, upstream):
    """Answer a GET or HEAD for a blob the repository does not have
    locally (the caller checked): from upstream, caching it on GET.  A
    Range header is ignored (RFC 9110 allows it): the whole blob is sent."""
    metrics.PROXY_REQUESTS.labels("blob", "miss").inc()
    if request.method == b"HEAD":
        response = await upstream.blob("HEAD", repository.name, digest)
        if response is None:
            raise errors.BlobUnknown(detail={"digest": str(digest)})
        length = response.length if isinstance(response.length, int) else None
        await discard(response)
        _headers(request, digest, length)
        return b""
    response = await upstream.blob("GET", repository.name, digest)
    if response is None:
        raise errors.BlobUnknown(detail={"digest": str(digest)})
    body = upstream.blob_body(response, digest)
    try:
        upload = await repository.start_upload(digest.algorithm)
    except BaseException:
        body.abort()
        raise
    _headers(request, digest, body.length)
    tee = Tee(request, body)
    work = defer.ensureDeferred(_copy(ctx, request, repository, upload, tee, digest, body))
    try:
        await shielded(work, what="fetching a blob for the cache")
    finally:
        metrics.PROXY_PULLED_BYTES.labels("blob").inc(body.received)
    return None


async def _copy(ctx, request, repository, upload, tee, digest, body):
    try:
        try:
            await upload.append(tee)
            blob = await upload.complete(digest, body.length)
        except (errors.DigestInvalid, errors.SizeInvalid) as error:
            raise errors.UpstreamUnavailable(
                "the upstream registry sent a blob that does not match its digest or size",
                detail={"digest": str(digest), "problem": error.message},
            ) from None
    except BaseException as error:
        tee.abort()
        try:
            await upload.cancel()
        except Exception:
            log.failure("removing the partial copy of {digest} failed", digest=str(digest))
        if tee.client_gone or isinstance(error, ClientGone):
            log.info("client left: fetch of {name}@{digest} abandoned",
                     name=repository.name, digest=str(digest))
            return None
        raise
    tee.finish()
    log.info("cached {name}@{digest} ({size} bytes) from upstream",
             name=repository.name, digest=str(digest), size=blob.size)
    ctx.events.blob_pulled(request, repository.name, blob)
    return None

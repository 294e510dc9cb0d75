"""Blobs through the cache: from upstream to the client and into storage at once.

:class:`ProxyBlobStore` is the cache's blob store (Distribution's
``proxyblobstore.go``).  A blob the repository has is the local store's.
A missing one is looked up upstream (``stat``: a HEAD) and, when opened,
fetched once and streamed two ways: into an ordinary upload of the
repository (``registryd.storage.uploads``: hashed and written with bounded
memory), and to whoever reads the :class:`UpstreamBlobReader` -- the same blob
sender (``registryd.http.web.BlobSender``) that streams local blobs.  The
upload is committed as a blob of the repository only when the digest (and
the size upstream announced) match, with the atomic move of the blob
store's ``commit``; so nothing half-written is ever served from the cache,
and concurrent fetches of one blob each write their own upload and the
second commit just finds the blob there.

Back-pressure runs end to end: a slow client stops the sender reading,
which stops the upload's pump taking upstream's body, which pauses the
upstream connection; a slow disk does the same through the bounded pump.

What is taken from upstream is bounded (``Upstream.blob_body``): the
body breaks off past the size upstream announced, or past
``proxy.maxblobsize`` without one, and after the upstream timeout without
data; an upstream that streams on or stalls cannot be relayed without end.

The reader hands out each chunk one chunk late: the last one only once
the digest is verified.  If upstream sent wrong bytes, reading fails
instead, so the client sees an error or a short body rather than a
complete wrong one.  A reader closed before the end (the client went
away) ends the fetch, and the partial upload is removed.
"""

from collections import deque

import attr
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from registryd import errors
from registryd.http.api.base import decimal
from registryd.interfaces import ILinkedBlobStore, IStorageReader
from registryd.ops import metrics
from registryd.proxy.upstream import discard, header_values
from registryd.storage.blobs import BlobInfo

log = Logger()

#: Chunks fetched ahead of the reader (each at most the upload pump's chunk size).
READ_AHEAD = 4


class ReaderGone(Exception):
    """The reader was closed while its blob was being fetched."""


@attr.s(frozen=True, slots=True)
class UpstreamBlob(BlobInfo):
    """A blob upstream has and the cache does not (yet): its size as
    upstream announced it (None if it did not), readable once, from the
    start."""


def _announced_length(response):
    """The Content-Length of a HEAD response (twisted gives such responses
    a body length of 0), or None when upstream sent none."""
    values = header_values(response, "content-length")
    return decimal(values[0].strip()) if values else None


@implementer(ILinkedBlobStore)
class ProxyBlobStore:
    """The blobs of one repository of the cache."""

    def __init__(self, local, uploads, upstream):
        """
        :param local: the repository's local (linked) blob store.
        :param uploads: the repository's upload store (a fetched blob is
            written as an upload, then committed).
        """
        self._local = local
        self._uploads = uploads
        self._upstream = upstream
        self.name = local.name

    async def stat(self, digest):
        try:
            blob = await self._local.stat(digest)
        except errors.BlobUnknown:
            pass
        else:
            metrics.PROXY_REQUESTS.labels("blob", "hit").inc()
            return blob
        metrics.PROXY_REQUESTS.labels("blob", "miss").inc()
        response = await self._upstream.blob("HEAD", self.name, digest)
        if response is None:
            raise errors.BlobUnknown(detail={"digest": str(digest)})
        await discard(response)
        return UpstreamBlob(digest, _announced_length(response), seekable=False)

    async def open(self, blob, offset=0):
        """A reader of the blob: local when it is stored (also if another
        fetch stored it since ``stat``), else fetched from upstream as it
        is read (only from offset 0: an :class:`UpstreamBlob` is not seekable)."""
        if not isinstance(blob, UpstreamBlob):
            return await self._local.open(blob, offset)
        try:
            return await self._local.open(BlobInfo(blob.digest, blob.size), offset)
        except errors.BlobUnknown:
            pass
        response = await self._upstream.blob("GET", self.name, blob.digest)
        if response is None:
            raise errors.BlobUnknown(detail={"digest": str(blob.digest)})
        body = self._upstream.blob_body(response, blob.digest)  # bounded (proxy.maxblobsize)
        size = blob.size if blob.size is not None else body.length
        if body.length is not None and body.length != size:
            body.abort()
            raise errors.UpstreamUnavailable(
                "the upstream registry announced a blob of one size and sent another",
                detail={"digest": str(blob.digest), "announced": size, "sent": body.length},
            )
        try:
            upload = await self._uploads.start(blob.digest.algorithm)
        except BaseException:
            body.abort()
            raise
        return UpstreamBlobReader(self.name, blob.digest, size, body, upload)

    async def redirect(self, blob, method):
        if isinstance(blob, UpstreamBlob):
            return None  # not stored yet: it can only come from here
        return await self._local.redirect(blob, method)

    # the local store's (a cache is not pushed to)

    def has(self, digest):
        return self._local.has(digest)

    def link(self, digest, stored_as=None):
        return self._local.link(digest, stored_as)

    def delete(self, digest):
        return self._local.delete(digest)

    def mount(self, digest, source_name):
        return self._local.mount(digest, source_name)

    def enumerate(self):
        return self._local.enumerate()


@implementer(IStorageReader)
class UpstreamBlobReader:
    """Upstream's body of one blob, read by the blob sender while the
    repository's upload takes it into storage (see the module docstring).

    The upload's pump pulls from :class:`_Feed`, which reads upstream and queues
    each chunk here, at most :data:`READ_AHEAD` ahead of ``read``; ``read`` hands
    out a chunk once the next one is queued, and the last one once the
    upload is verified and committed."""

    def __init__(self, name, digest, size, body, upload):
        """
        :param size: the size upstream announced (None: not announced);
            a body of another size fails verification, and the bytes that
            would complete the announced size are held until it passed.
        """
        self.name = name
        self.digest = digest
        self.size = size
        self.offset = 0
        self._body = body
        self._upload = upload
        self._queued = deque()
        self._verified = False
        self._error = None
        self._closed = False
        self._waiters = []
        self._fetching = defer.ensureDeferred(self._fetch())

    # the upload's side

    async def _fetch(self):
        upload = self._upload
        try:
            try:
                try:
                    await upload.append(_Feed(self), completing=True)
                    blob = await upload.complete(self.digest, self.size)
                except (errors.DigestInvalid, errors.SizeInvalid) as error:
                    raise errors.UpstreamUnavailable(
                        "the upstream registry sent a blob that does not match its digest or size",
                        detail={"digest": str(self.digest), "problem": error.message},
                    ) from None
            except BaseException as error:
                self._body.abort()
                try:
                    await upload.cancel()
                except Exception:
                    log.failure(
                        "removing the partial copy of {digest} failed", digest=str(self.digest)
                    )
                if self._closed or isinstance(error, ReaderGone):
                    log.info(
                        "client left: fetch of {name}@{digest} abandoned",
                        name=self.name,
                        digest=str(self.digest),
                    )
                    return
                self._error = error
            else:
                self._verified = True
                log.info(
                    "cached {name}@{digest} ({size} bytes) from upstream",
                    name=self.name,
                    digest=str(self.digest),
                    size=blob.size,
                )
        finally:
            metrics.PROXY_PULLED_BYTES.labels("blob").inc(self._body.received)
            await upload.close()
            self._wake()

    def _wake(self):
        """Something changed (a chunk queued or taken, the end, an error):
        the reader and the feed look again."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _wait(self):
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        await waiter

    # IStorageReader

    async def read(self, length):
        while True:
            if self._closed:
                raise ReaderGone()
            if self._error is not None:
                raise self._error
            if self._queued and (self._verified or self._may_go_early(length)):
                chunk = self._queued.popleft()
                if len(chunk) > length:
                    chunk, rest = chunk[:length], chunk[length:]
                    self._queued.appendleft(rest)
                self.offset += len(chunk)
                self._wake()  # room for the feed
                return chunk
            if self._verified:
                return b""
            await self._wait()

    def _may_go_early(self, length):
        """May the first queued chunk go before the blob is verified?  Only
        if another follows it (the last one waits) and it does not reach
        the announced size (a body longer than announced must not make a
        complete response before it fails)."""
        if len(self._queued) < 2:
            return False
        if self.size is None:
            return True
        return self.offset + min(len(self._queued[0]), length) < self.size

    async def close(self):
        """Stop reading; a fetch not finished yet is abandoned and its
        partial upload removed (waited for)."""
        if not self._verified and self._error is None and not self._closed:
            self._closed = True
            self._body.abort()
            self._wake()
        await self._fetching


class _Feed:
    """The source the upload appends from: upstream's body, each chunk
    also queued for the reader, read only while the reader keeps up."""

    def __init__(self, reader):
        self._reader = reader

    async def read(self, size):
        reader = self._reader
        while len(reader._queued) >= READ_AHEAD and not reader._closed:
            await reader._wait()
        if reader._closed:
            raise ReaderGone()
        try:
            data = await reader._body.read(size)
        except errors.UpstreamUnavailable:
            if reader._closed:
                raise ReaderGone() from None  # close() aborted the body
            raise
        if reader._closed:
            raise ReaderGone()
        if data:
            reader._queued.append(data)
            reader._wake()
        return data

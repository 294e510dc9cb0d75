"""Reading and writing one S3 object: the ``s3`` driver's reader and
multipart writer (:mod:`.s3` has the driver, which makes them).

A reader streams one ranged GET and reopens it once at the current
offset; a writer streams parts of ``chunksize`` into a multipart upload,
keeping the bytes after the last full part in a small tail object so that
another writer (another registryd node) can append.  The driver's module
docstring explains the scheme.
"""

import functools

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from registryd.interfaces import IStorageReader, IStorageWriter
from registryd.storage.base import ReaderBase, WriterBase
from registryd.storage.drivers.s3_parameters import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
)
from registryd.storage.errors import PathNotFound, StorageError, StorageUnavailable

#: Suffix of the side object that holds an open writer's last partial part.
#: ``.tmp``: the registry model ignores such names, as Distribution's do.
TAIL_SUFFIX = ".s3tail.tmp"
#: Object metadata naming the multipart upload and part count a tail follows.
TAIL_UPLOAD = "registryd-upload"
TAIL_PARTS = "registryd-parts"


def copy_ranges(size, chunk):
    """Byte ranges (first, last) covering ``size`` bytes in pieces of about
    ``chunk``: every piece is at least 5 MiB (S3's minimum for a part that
    is not the last) and at most 5 GiB, so a short remainder joins the
    piece before it."""
    if size <= 0:
        return []
    count = max(size // chunk, 1)
    ranges = []
    start = 0
    for index in range(count):
        end = size if index == count - 1 else start + chunk
        ranges.append((start, end - 1))
        start = end
    first, last = ranges[-1]
    if last - first + 1 > MAX_CHUNK_SIZE:  # remainder made the last one too big
        middle = first + (last - first + 1) // 2
        ranges[-1:] = [(first, middle - 1), (middle, last)]
    return ranges


class _Sequence:
    """Runs coroutine functions one at a time, in submission order.

    The Deferred each submission returns is independent of the work:
    cancelling it (klein cancels handlers of clients that left) does not
    stop or reorder anything, so queued writes are still applied before a
    close or commit.
    """

    def __init__(self):
        self._tail = defer.succeed(None)

    def submit(self, function, *args):
        result = defer.Deferred()

        def deliver(outcome):
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)
            return None  # the queue goes on whatever happened

        def run(_):
            return defer.ensureDeferred(function(*args)).addBoth(deliver)

        self._tail.addCallback(run)
        return result

    def drain(self):
        """Fires once everything submitted so far has run."""
        done = defer.Deferred()
        self._tail.addCallback(lambda _: done.callback(None))
        return done


def _completed(parts):
    return [
        {"PartNumber": part["PartNumber"], "ETag": part["ETag"]}
        for part in sorted(parts, key=lambda part: part["PartNumber"])
    ]


def _usable_etag(etag):
    return bool(etag) and etag.strip('"') != ""


@implementer(IStorageReader)
class S3Reader(ReaderBase):
    """An object's bytes from an offset, from one ranged GET (reopened once
    at the current offset if the connection breaks)."""

    def __init__(self, driver, path, key, size, offset, body, etag):
        self.path = path
        self.size = size
        self.offset = offset
        self._driver = driver
        self._key = key
        self._body = body
        self._etag = etag
        self._sequence = _Sequence()
        self._closed = False

    def _read_checked(self, length):
        return self._sequence.submit(self._read, length)

    async def _read(self, length):
        if length == 0 or self.offset >= self.size:
            return b""
        length = min(length, self.size - self.offset)
        for attempt in (1, 2):
            if self._body is None:
                self._body, _, self._etag = await self._driver._open_body(
                    self._key, self.path, self.offset, self._etag
                )
            body = self._body
            try:
                data = await self._driver._caller.run(
                    functools.partial(body.read, length), "get_object", self.path
                )
            except StorageUnavailable:
                self._drop_body()
                if attempt == 2:
                    raise
                continue
            if not data:  # ended early: reopen where we are
                self._drop_body()
                if attempt == 2:
                    raise StorageUnavailable(f"{self.path}: the store ended the object early")
                continue
            self.offset += len(data)
            return data

    def _drop_body(self):
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:
                pass

    def close(self):
        if self._closed:
            return self._sequence.drain()
        self._closed = True
        return self._sequence.submit(self._close)

    async def _close(self):
        self._drop_body()


@implementer(IStorageWriter)
class S3Writer(WriterBase):
    """A file being written as a multipart upload; see the module doc.

    State: ``_parts`` uploaded to the open multipart upload ``_upload_id``
    (all at least 5 MiB), then ``_unsent``.  Without an open upload, the
    file is ``_base_size`` bytes of committed object followed by
    ``_unsent``.  All work happens in order in a :class:`_Sequence`.
    """

    def __init__(
        self,
        driver,
        path,
        key,
        append,
        upload_id=None,
        parts=(),
        base_size=0,
        base_exists=False,
        buffer=b"",
        tail_found=False,
    ):
        self.path = path
        self._driver = driver
        self._key = key
        self._append = append
        self._upload_id = upload_id
        self._parts = list(parts)
        self._base_size = base_size
        self._base_exists = base_exists
        self._unsent = bytearray(buffer)
        self._tail_found = tail_found  # a tail object may exist: delete it when done
        self.size = sum(part["Size"] for part in self._parts) + base_size + len(self._unsent)
        self._sequence = _Sequence()
        self._closed = False
        self._failed = False

    @property
    def _chunk_size(self):
        return self._driver.params.chunk_size

    def _call(self, operation, **kwargs):
        return self._driver._call(operation, self.path, Key=self._key, **kwargs)

    # IStorageWriter (write: WriterBase)

    def _accept(self, data):
        return self._sequence.submit(self._write, data)

    def close(self):
        if self._closed:
            return self._sequence.drain()
        self._closed = True
        return self._sequence.submit(self._persist)

    def commit(self):
        if self._closed:
            return self._closed_error()
        self._closed = True
        return self._sequence.submit(self._commit)

    def cancel(self):
        if self._closed:
            return self._closed_error()
        self._closed = True
        return self._sequence.submit(self._cancel)

    # The work, in sequence

    async def _guard(self, work):
        """Run ``work``; after any failure, later writes and commit fail too
        (writing on after a lost part would corrupt the file silently)."""
        if self._failed:
            raise StorageError(f"{self.path}: an earlier write failed")
        try:
            return await work
        except BaseException:
            self._failed = True
            raise

    async def _write(self, data):
        if self._failed:
            raise StorageError(f"{self.path}: an earlier write failed")
        self._unsent += data
        if len(self._unsent) >= self._chunk_size:
            await self._guard(self._flush_full_parts())

    async def _flush_full_parts(self):
        while len(self._unsent) >= self._chunk_size:
            await self._ensure_upload()
            if len(self._unsent) < self._chunk_size:
                break
            with memoryview(self._unsent) as view:
                part = bytes(view[: self._chunk_size])  # one copy, not two
            await self._upload_part(part)
            del self._unsent[: self._chunk_size]

    async def _ensure_upload(self):
        """Make sure a multipart upload holds the committed base content."""
        if self._upload_id is not None:
            return
        if 0 < self._base_size < MIN_CHUNK_SIZE:
            base = await self._driver._get_bytes(self._key, self.path, expected=self._base_size)
            self._unsent[0:0] = base
            self._base_size = 0
        created = await self._call("create_multipart_upload", **self._driver._write_args())
        self._upload_id = created["UploadId"]
        if self._base_size:
            copy_source = {"Bucket": self._driver.bucket, "Key": self._key}
            ranges = copy_ranges(self._base_size, self._driver.params.copy_chunk_size)
            try:
                self._parts = await self._driver._copy_parts(
                    copy_source, self.path, self._key, self._upload_id, ranges, first_number=1
                )
            except BaseException:
                # An upload holding part of the base would hide the rest.
                upload_id, self._upload_id = self._upload_id, None
                try:
                    await self._driver._abort(self._key, upload_id, self.path)
                except StorageError:
                    pass
                raise
            self._base_size = 0

    async def _upload_part(self, data):
        number = len(self._parts) + 1
        response = await self._call(
            "upload_part", UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"], "Size": len(data)})

    async def _put_whole(self):
        """The file as one object: the committed base (under a part) and the buffer."""
        content = bytes(self._unsent)
        if self._base_size:
            base = await self._driver._get_bytes(self._key, self.path, expected=self._base_size)
            content = base + content
        await self._call("put_object", Body=content, **self._driver._write_args())
        self._driver.recent_sizes.remember(self._key, len(content))
        self._base_size = len(content)
        self._base_exists = True
        self._unsent.clear()

    async def _persist(self):
        """close(): keep everything written, for a later appending writer."""
        if self._failed:
            return  # what the store holds is consistent; the rest is lost
        await self._guard(self._persist_buffer())

    async def _persist_buffer(self):
        if self._upload_id is None:
            if not self._unsent and self._append:
                return  # nothing new
            if self._base_size < MIN_CHUNK_SIZE:
                await self._put_whole()
                return
            await self._ensure_upload()
        if len(self._unsent) >= MIN_CHUNK_SIZE:
            await self._upload_part(bytes(self._unsent))
            self._unsent.clear()
        if self._unsent:
            await self._driver._call(
                "put_object",
                self.path,
                Key=self._key + TAIL_SUFFIX,
                Body=bytes(self._unsent),
                Metadata={TAIL_UPLOAD: self._upload_id, TAIL_PARTS: str(len(self._parts))},
                **self._driver._write_args(),
            )
            self._tail_found = True

    async def _commit(self):
        await self._guard(self._complete())

    async def _complete(self):
        if self._upload_id is None:
            if self._unsent and self._base_size >= MIN_CHUNK_SIZE:
                await self._ensure_upload()
            else:
                if self._unsent or not self._base_exists or not self._append:
                    await self._put_whole()
                await self._delete_tail()
                return
        if self._unsent or not self._parts:
            await self._upload_part(bytes(self._unsent))
            self._unsent.clear()
        await self._repair_copied_parts()
        await self._call(
            "complete_multipart_upload",
            UploadId=self._upload_id,
            MultipartUpload={"Parts": _completed(self._parts)},
        )
        self._driver.recent_sizes.remember(self._key, self.size)
        self._upload_id = None
        await self._delete_tail()

    async def _repair_copied_parts(self):
        """Swift's s3api lists parts made by UploadPartCopy with an empty
        ETag, so an upload resumed elsewhere cannot name them when it
        completes.  Such parts are always copies of this key's committed
        object (the base the upload started from): copy them again."""
        offset = 0
        copy_source = {"Bucket": self._driver.bucket, "Key": self._key}
        for part in self._parts:
            if not _usable_etag(part["ETag"]):
                first, last = offset, offset + part["Size"] - 1
                response = await self._call(
                    "upload_part_copy",
                    UploadId=self._upload_id,
                    PartNumber=part["PartNumber"],
                    CopySource=copy_source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
                part["ETag"] = response["CopyPartResult"]["ETag"]
            offset += part["Size"]

    async def _delete_tail(self):
        if self._tail_found:
            try:
                await self._driver._call("delete_object", self.path, Key=self._key + TAIL_SUFFIX)
            except PathNotFound:
                pass
            self._tail_found = False

    async def _cancel(self):
        if self._upload_id is not None:
            await self._driver._abort(self._key, self._upload_id, self.path)
            self._upload_id = None
        self._driver.recent_sizes.forget(self._key)
        await self._driver._delete_keys([self._key, self._key + TAIL_SUFFIX], self.path)

"""The ``s3`` storage driver: any S3-compatible object store.

Works with AWS S3, Ceph RGW, MinIO and OpenStack Swift's s3api, configured
with Distribution's ``storage.s3`` keys (:mod:`.s3_parameters`); the calls
go through botocore in a bounded thread pool (:mod:`.s3_client`).  Keys are
``<rootdirectory>/<driver path>`` without the leading ``/``, exactly as
Distribution names them, so registryd and docker-registry can share a
bucket.

Objects stand for files; directories are implicit (a directory exists
while a key lies below it).  On top of that:

- **Whole files** (``put_content``) are one PUT: S3 replaces objects
  atomically.  Before writing, the driver checks that no directory is in
  the way and that no ancestor is a file, so the store stays a tree, as on
  a file system (see :meth:`S3Driver._check_creatable`: usually one LIST).
- **Readers** GET with ``Range: bytes=<offset>-`` and stream the body in
  the pieces asked for; a connection that breaks mid-way is reopened once
  at the current offset (``If-Match`` the first ETag, so a replaced object
  is never spliced).
- **Writers** stream into a multipart upload: parts of ``chunksize``
  (>= 5 MiB, S3's minimum for all parts but the last) are uploaded as the
  bytes arrive, so memory per writer stays at about two parts whatever
  the size.  Files that stay under a part are written with one PUT.
- **Appending** (resumable uploads, also across registryd nodes): like
  Distribution, a writer that is closed but not committed leaves its
  multipart upload open, and an appending writer finds it again
  (ListMultipartUploads, ListParts) and continues.  Unlike Distribution,
  the bytes after the last full part -- less than a part, which S3 would
  not accept in the middle of an upload -- are kept in a small side
  object ``<key>.s3tail.tmp`` tagged with the upload id and part count it
  follows, instead of as a short part that the next writer must fold back
  with a complete/copy/re-upload dance (quadratic for chunked uploads, and
  broken on Swift, whose ListParts loses the ETags of copied parts).  A
  tail that does not match the upload's parts is stale and ignored: a
  writer that dies between uploading a part and writing the tail loses
  only bytes that the reported size does not count.  Appending to a
  committed object copies it into a new upload server-side (or, under
  5 MiB, reads it back).  ``commit`` completes the upload.
- **Moves** are server-side copies (multipart copy above
  ``multipartcopythresholdsize``) followed by a delete.
- **Deletes** list the tree and remove it with batched multi-object
  deletes (1000 keys each), and abort multipart uploads under it.

No answer is served from a cache in the process: every read, stat and
listing comes from the store, so any number of registryd nodes can share a
bucket.  The one thing remembered is which paths are directories
(:class:`KnownDirectories`), to spare the tree checks before writes a LIST
or HEAD per level; it never changes what is read.
"""

import time

from twisted.internet import defer
from zope.interface import implementer

from registryd.interfaces import IStorageDriver
from registryd.storage.base import FileInfo, as_bytes, check_path
from registryd.storage.drivers.s3_client import S3Caller, S3Error
from registryd.storage.drivers.s3_parameters import (
    parse_parameters,
)
from registryd.storage.drivers.s3_streams import (
    TAIL_PARTS,
    TAIL_SUFFIX,
    TAIL_UPLOAD,
    S3Reader,
    S3Writer,
    _completed,
    copy_ranges,
)
from registryd.storage.drivers.s3_tree import (
    ABSENT,
    DIRECTORY,
    FILE,
    KnownDirectories,
    RecentSizes,
    probe_state,
)
from registryd.storage.errors import InvalidOffset, PathNotFound, StorageError, StorageUnavailable

#: How long presigned redirect URLs stay valid (Distribution's 20 minutes).
REDIRECT_EXPIRY = 20 * 60
#: S3's limit of keys per multi-object delete.
DELETE_BATCH = 1000
#: A multipart upload without parts this old (plus three request
#: timeouts) was abandoned by a writer that failed or died.
ABANDONED_AFTER = 3600


def from_parameters(parameters):
    """Make a driver from the ``storage.s3`` configuration section."""
    return S3Driver(parse_parameters(parameters))


def _is_a_directory(path):
    return StorageError(f"{path}: is a directory")


async def _all(awaitables):
    """Results of ``awaitables`` (coroutines or Deferreds), run concurrently;
    the first failure (in order) is raised as itself, after all finished."""
    deferreds = [defer.ensureDeferred(item) for item in awaitables]
    outcomes = await defer.DeferredList(deferreds, consumeErrors=True)
    for success, value in outcomes:
        if not success:
            value.raiseException()
    return [value for _, value in outcomes]


@implementer(IStorageDriver)
class S3Driver:
    """Files as objects of one bucket, under an optional key prefix."""

    name = "s3"
    #: Keys per listing request (S3's maximum).
    list_page_size = 1000

    def __init__(self, params, reactor=None, client=None):
        """
        :param params: ``s3_parameters.S3Parameters``.
        :param client: a botocore S3 client to use instead of making one.
        """
        self.params = params
        self.bucket = params.bucket
        self._caller = S3Caller(params, reactor=reactor, client=client)
        self._prefix = f"{params.root}/" if params.root else ""
        # list_many walks (the catalog) use at most half the connections,
        # so that a walk never starves pushes and pulls.
        self._walk_slots = defer.DeferredSemaphore(max(1, params.max_requests // 2))
        self.known_directories = KnownDirectories()
        self.recent_sizes = RecentSizes()

    def __repr__(self):
        return f"<S3Driver bucket={self.bucket!r} prefix={self._prefix!r}>"

    def close(self):
        """Stop the driver's threads (tests make many drivers; a server's
        stop when the reactor does).  A Deferred fires once they have."""
        return self._caller.close()

    @property
    def calls_in_progress(self):
        """S3 calls running now, also those abandoned after
        ``requesttimeout`` (:attr:`S3Caller.in_progress`)."""
        return self._caller.in_progress

    # Keys and requests

    def _key(self, parts):
        return self._prefix + "/".join(parts)

    def _dir_prefix(self, parts):
        """The key prefix of the directory ``parts``, ending in "/" (or the
        root prefix, which may be "")."""
        return self._key(parts) + "/" if parts else self._prefix

    def _call(self, operation, path=None, **kwargs):
        return self._caller.call(operation, path, Bucket=self.bucket, **kwargs)

    def _write_args(self, content_type=True):
        """What Distribution sends with every object it creates."""
        args = {}
        if content_type:
            args["ContentType"] = "application/octet-stream"
        if self.params.encrypt:
            if self.params.key_id:
                args["ServerSideEncryption"] = "aws:kms"
                args["SSEKMSKeyId"] = self.params.key_id
            else:
                args["ServerSideEncryption"] = "AES256"
        if self.params.storage_class != "NONE":
            args["StorageClass"] = self.params.storage_class
        if self.params.object_acl:
            args["ACL"] = self.params.object_acl
        return args

    async def _head(self, key, path):
        """HeadObject, or None when there is no such object."""
        try:
            return await self._call("head_object", path, Key=key)
        except PathNotFound:
            return None

    async def _get_bytes(self, key, path, expected=None):
        """A whole (small) object's bytes."""
        caller, bucket = self._caller, self.bucket

        def fetch():
            response = caller.client.get_object(Bucket=bucket, Key=key)
            with response["Body"] as body:
                return body.read()

        data = await caller.run(fetch, "get_object", path)
        if expected is not None and len(data) != expected:
            raise StorageError(
                f"{path}: changed while being read ({len(data)} bytes, not {expected})"
            )
        return data

    async def _has_children(self, parts, path):
        return await self._has_prefix(self._dir_prefix(parts), path)

    async def _has_prefix(self, prefix, path):
        """Whether any key starts with ``prefix`` (one LIST, one key)."""
        response = await self._call("list_objects_v2", path, Prefix=prefix, MaxKeys=1)
        return bool(response.get("Contents") or response.get("CommonPrefixes"))

    async def _check_creatable(self, path, parts):
        """Refuse to create a file where a directory is, or below a file.

        Cheap because the store is kept a tree (no key is both a file and
        a prefix of others), and because directories are remembered
        (:class:`~registryd.storage.drivers.s3_tree.KnownDirectories`).
        When the parent is a known directory, one LIST tells whether this
        path is a directory, and none is needed when the parent is fresh.
        Otherwise the unknown ancestors are probed from the top down, one
        listing each (:meth:`_probe`): the first that is absent answers for
        everything below it.  Requests, not round trips, are what a store
        (and its bill) feels, so nothing is asked speculatively.
        Afterwards every ancestor is known to be a directory (or about to
        be, once the file is written), and this path is not one.
        """
        if not parts:
            raise _is_a_directory(path)
        known = self.known_directories
        key = self._key(parts)
        ancestors = [self._key(parts[:depth]) for depth in range(1, len(parts))]
        unknown = len(ancestors)
        while unknown > 0 and ancestors[unknown - 1] not in known:
            unknown -= 1
        # ancestors[unknown:] are not known; ancestors[unknown - 1] is (or the root).
        parent_fresh = bool(ancestors) and known.is_fresh(ancestors[-1])
        for depth in range(unknown, len(ancestors)):
            state = await self._probe(ancestors[depth], path)
            if state == FILE:
                shown = ancestors[depth][len(self._prefix) :]
                raise StorageError(f"{path}: not a directory: /{shown}")
            if state == ABSENT:
                for created in ancestors[depth:]:
                    known.add(created, fresh=True)
                parent_fresh = True
                break
            known.add(ancestors[depth])
        if not (parent_fresh and key not in known):
            if await self._has_prefix(key + "/", path):
                raise _is_a_directory(path)
        known.forget(key)
        for ancestor in ancestors:
            known.add(ancestor)

    def _delimited_page(self, prefix, path, **token):
        """One page of the names right below ``prefix``: keys, and common
        prefixes for what lies deeper."""
        return self._call(
            "list_objects_v2",
            path,
            Prefix=prefix,
            Delimiter="/",
            MaxKeys=self.list_page_size,
            **token,
        )

    async def _probe(self, key, path):
        """Whether ``key`` is a file, a directory or absent, from one
        listing (:func:`~registryd.storage.drivers.s3_tree.probe_state`);
        when that page cannot tell, a HEAD and a one-key LIST do."""
        state = probe_state(key, await self._delimited_page(key, path))
        if state in (FILE, DIRECTORY, ABSENT):
            return state
        if await self._head(key, path) is not None:
            return FILE
        return DIRECTORY if await self._has_prefix(key + "/", path) else ABSENT

    async def _find_uploads(self, key, path):
        """The open multipart uploads of ``key``, newest first: (upload id,
        POSIX time initiated).  Normally none or one."""
        found = []
        marker = {}
        while True:
            response = await self._call("list_multipart_uploads", path, Prefix=key, **marker)
            for upload in response.get("Uploads", ()):
                if upload.get("Key") == key:
                    initiated = upload.get("Initiated")
                    found.append((upload["UploadId"], initiated.timestamp() if initiated else 0.0))
            if not response.get("IsTruncated"):
                break
            marker = {
                "KeyMarker": response.get("NextKeyMarker", ""),
                "UploadIdMarker": response.get("NextUploadIdMarker", ""),
            }
        return sorted(found, key=lambda upload: upload[1], reverse=True)

    async def _open_upload(self, key, path, uploads):
        """The multipart upload an appending writer continues: (upload id,
        parts, tail bytes, whether a tail object exists), or None.

        An upload without parts or tail holds nothing: either a writer is
        uploading its first part right now (then the committed object is
        still the truth) or one failed or died doing so.  It is skipped,
        and aborted once it is clearly abandoned -- older than any part
        upload can take, with an hour's margin for clock skew.
        """
        for upload_id, initiated in uploads:
            part_list = await self._list_parts(key, upload_id, path)
            tail, tail_found = await self._read_tail(key, upload_id, len(part_list), path)
            if part_list or tail is not None:
                return upload_id, part_list, tail or b"", tail_found
            if time.time() - initiated > ABANDONED_AFTER + 3 * self.params.request_timeout:
                await self._abort(key, upload_id, path)
        return None

    async def _uploads_under(self, parts, path, tree):
        """(key, upload id) of the multipart uploads of the file ``parts``
        and, with ``tree``, of every file below it (the root: all)."""
        key = self._key(parts) if parts else None
        below = self._dir_prefix(parts)
        found = []
        marker = {}
        while True:
            response = await self._call(
                "list_multipart_uploads", path, Prefix=key if key is not None else below, **marker
            )
            for upload in response.get("Uploads", ()):
                name = upload.get("Key", "")
                if name == key or (tree and name.startswith(below)):
                    found.append((name, upload["UploadId"]))
            if not response.get("IsTruncated"):
                return found
            marker = {
                "KeyMarker": response.get("NextKeyMarker", ""),
                "UploadIdMarker": response.get("NextUploadIdMarker", ""),
            }

    async def _list_parts(self, key, upload_id, path):
        parts = []
        marker = {}
        while True:
            response = await self._call("list_parts", path, Key=key, UploadId=upload_id, **marker)
            for part in response.get("Parts", ()):
                parts.append(
                    {
                        "PartNumber": part["PartNumber"],
                        "ETag": part.get("ETag", ""),
                        "Size": part["Size"],
                    }
                )
            if not response.get("IsTruncated"):
                break
            marker = {"PartNumberMarker": response["NextPartNumberMarker"]}
        parts.sort(key=lambda part: part["PartNumber"])
        numbers = [part["PartNumber"] for part in parts]
        if numbers != list(range(1, len(parts) + 1)):
            raise StorageError(
                f"{path}: multipart upload {upload_id} has parts {numbers[:20]}, not 1..n"
            )
        return parts

    async def _read_tail(self, key, upload_id, part_count, path):
        """The tail bytes of ``upload_id`` after ``part_count`` parts, or None
        if there is no tail for exactly that state."""
        caller, bucket = self._caller, self.bucket

        def fetch():
            response = caller.client.get_object(Bucket=bucket, Key=key + TAIL_SUFFIX)
            with response["Body"] as body:
                return response.get("Metadata", {}), body.read()

        try:
            metadata, data = await caller.run(fetch, "get_object", path)
        except PathNotFound:
            return None, False
        metadata = {name.lower(): value for name, value in metadata.items()}
        if metadata.get(TAIL_UPLOAD) == upload_id and metadata.get(TAIL_PARTS) == str(part_count):
            return data, True
        return None, True

    async def _delete_keys(self, keys, path):
        """Delete ``keys`` in batches; missing keys are fine."""
        keys = list(keys)
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            response = await self._call(
                "delete_objects",
                path,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            errors = [
                error
                for error in response.get("Errors", ())
                if error.get("Code") not in ("NoSuchKey", "NotFound")
            ]
            if errors:
                first = errors[0]
                message = (
                    f"{path}: could not delete {len(errors)} object(s), e.g. {first.get('Key')!r}: "
                    f"{first.get('Code')} {first.get('Message', '')}"
                )
                if first.get("Code") in ("InternalError", "ServiceUnavailable", "SlowDown"):
                    raise StorageUnavailable(message)
                raise StorageError(message)

    async def _abort(self, key, upload_id, path):
        try:
            await self._call("abort_multipart_upload", path, Key=key, UploadId=upload_id)
        except (PathNotFound, S3Error) as error:
            if isinstance(error, S3Error) and error.code not in ("NoSuchUpload",):
                raise

    # IStorageDriver

    def get_content(self, path):
        return defer.ensureDeferred(self._get_content(path))

    async def _get_content(self, path):
        parts = check_path(path)
        if not parts:
            raise PathNotFound(path)
        return await self._get_bytes(self._key(parts), path)

    def put_content(self, path, content):
        try:
            content = as_bytes(content)
        except TypeError:
            return defer.fail()
        return defer.ensureDeferred(self._put_content(path, content))

    async def _put_content(self, path, content):
        parts = check_path(path)
        await self._check_creatable(path, parts)
        key = self._key(parts)
        await self._call("put_object", path, Key=key, Body=content, **self._write_args())
        self.recent_sizes.remember(key, len(content))

    def reader(self, path, offset=0):
        return defer.ensureDeferred(self._reader(path, offset))

    async def _reader(self, path, offset):
        parts = check_path(path)
        if not parts:
            raise PathNotFound(path)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, got {offset!r}")
        if offset < 0:
            raise InvalidOffset(path, offset)
        key = self._key(parts)
        try:
            body, size, etag = await self._open_body(key, path, offset)
        except S3Error as error:
            if error.code != "InvalidRange" and error.status != 416:
                raise
            head = await self._head(key, path)
            if head is None:
                raise PathNotFound(path) from None
            size = head["ContentLength"]
            if offset != size:
                raise InvalidOffset(path, offset) from None
            body, etag = None, head.get("ETag")
        return S3Reader(self, path, key, size, offset, body, etag)

    async def _open_body(self, key, path, offset, etag=None):
        """GetObject from ``offset``: (streaming body, object size, ETag)."""
        args = {"Key": key}
        if offset:
            args["Range"] = f"bytes={offset}-"
        if etag:
            args["IfMatch"] = etag
        response = await self._call("get_object", path, **args)
        content_range = response.get("ContentRange")
        if content_range and "/" in content_range:
            size = int(content_range.rsplit("/", 1)[1])
        else:
            size = offset + response["ContentLength"]
        return response["Body"], size, response.get("ETag")

    def writer(self, path, append=False):
        return defer.ensureDeferred(self._writer(path, bool(append)))

    async def _writer(self, path, append):
        parts = check_path(path)
        if not parts:
            raise _is_a_directory(path)
        key = self._key(parts)
        if not append:
            # A fresh file: any unfinished multipart upload of it is void.
            _, uploads = await _all(
                [self._check_creatable(path, parts), self._uploads_under(parts, path, tree=False)]
            )
            for upload_key, upload_id in uploads:
                await self._abort(upload_key, upload_id, path)
            return S3Writer(self, path, key, append=False, tail_found=True)
        # The HEAD is for the common case of no open upload; concurrently.
        uploads, head = await _all([self._find_uploads(key, path), self._head(key, path)])
        found = await self._open_upload(key, path, uploads) if uploads else None
        if found is not None:
            upload_id, part_list, tail, tail_found = found
            return S3Writer(
                self,
                path,
                key,
                append=True,
                upload_id=upload_id,
                parts=part_list,
                buffer=tail,
                tail_found=tail_found,
            )
        if head is None:
            await self._check_creatable(path, parts)
            return S3Writer(self, path, key, append=True)
        return S3Writer(
            self, path, key, append=True, base_size=head["ContentLength"], base_exists=True
        )

    def stat(self, path):
        return defer.ensureDeferred(self._stat(path))

    async def _stat(self, path):
        parts = check_path(path)
        if not parts:
            return FileInfo(path=path, size=0, modified=0.0, is_dir=True)
        # A HEAD first: most stats are of blobs being pulled, which exist.
        head = await self._head(self._key(parts), path)
        if head is not None:
            modified = head.get("LastModified")
            return FileInfo(
                path=path,
                size=head["ContentLength"],
                modified=modified.timestamp() if modified is not None else 0.0,
            )
        if await self._has_children(parts, path):
            return FileInfo(path=path, size=0, modified=0.0, is_dir=True)
        raise PathNotFound(path)

    def list(self, path):
        return defer.ensureDeferred(self._list(path))

    async def _list(self, path, parts=None):
        if parts is None:
            parts = check_path(path)
        prefix = self._dir_prefix(parts)
        names = set()
        token = {}
        while True:
            response = await self._delimited_page(prefix, path, **token)
            for item in response.get("Contents", ()):
                name = item["Key"][len(prefix) :]
                if name and not name.endswith(TAIL_SUFFIX):
                    names.add(name)
            for item in response.get("CommonPrefixes", ()):
                name = item["Prefix"][len(prefix) :].rstrip("/")
                if name and "/" not in name:
                    names.add(name)
            if not response.get("IsTruncated"):
                break
            token = {"ContinuationToken": response["NextContinuationToken"]}
        if not names and parts:
            raise PathNotFound(path)
        return sorted(names)

    def list_many(self, paths):
        return defer.ensureDeferred(self._list_many(paths))

    async def _list_many(self, paths):
        checked = [(path, check_path(path)) for path in paths]

        async def one(path, parts):
            await self._walk_slots.acquire()
            try:
                return await self._list(path, parts)
            except PathNotFound:
                return None
            finally:
                self._walk_slots.release()

        return await _all(defer.ensureDeferred(one(path, parts)) for path, parts in checked)

    def move(self, source, destination):
        return defer.ensureDeferred(self._move(source, destination))

    async def _move(self, source, destination):
        source_parts = check_path(source)
        destination_parts = check_path(destination)
        if not source_parts:
            raise _is_a_directory(source)
        source_key = self._key(source_parts)
        destination_key = self._key(destination_parts)
        if await self._move_recent(source, source_key, destination, destination_parts):
            return
        checks = [self._head(source_key, source)]
        if source_parts != destination_parts:
            checks.append(self._check_creatable(destination, destination_parts))
        head, *_ = await _all(checks)
        if head is None:
            if await self._has_children(source_parts, source):
                raise StorageError(
                    f"{source}: moving directories is not supported by the s3 driver"
                )
            raise PathNotFound(source)
        if source_parts == destination_parts:
            return
        await self._copy(source_key, source, destination_key, destination, head["ContentLength"])
        await self._finish_move(source, source_key, destination_key, head["ContentLength"])

    async def _move_recent(self, source, source_key, destination, destination_parts):
        """Move a small file this driver just wrote with one CopyObject and
        no HEAD first (:class:`~registryd.storage.drivers.s3_tree.RecentSizes`);
        whether it did.  When the copy fails (the file is gone, or was
        rewritten larger than one CopyObject takes), the caller moves it
        the long way, which names the problem."""
        size = self.recent_sizes.get(source_key)
        destination_key = self._key(destination_parts)
        if size is None or size > self.params.copy_threshold_size or source_key == destination_key:
            return False
        await self._check_creatable(destination, destination_parts)
        try:
            await self._call(
                "copy_object",
                source,
                Key=destination_key,
                CopySource={"Bucket": self.bucket, "Key": source_key},
                **self._write_args(content_type=False),
            )
        except (PathNotFound, S3Error):
            self.recent_sizes.forget(source_key)
            return False
        await self._finish_move(source, source_key, destination_key, size)
        return True

    async def _finish_move(self, source, source_key, destination_key, size):
        """Delete a moved file's source, once its copy is in place."""
        await self._call("delete_object", source, Key=source_key)
        self.recent_sizes.forget(source_key)
        self.recent_sizes.remember(destination_key, size)

    async def _copy(self, source_key, source, destination_key, destination, size):
        copy_source = {"Bucket": self.bucket, "Key": source_key}
        if size <= self.params.copy_threshold_size:
            await self._call(
                "copy_object",
                source,
                Key=destination_key,
                CopySource=copy_source,
                **self._write_args(content_type=False),
            )
            return
        created = await self._call(
            "create_multipart_upload", destination, Key=destination_key, **self._write_args()
        )
        upload_id = created["UploadId"]
        try:
            parts = await self._copy_parts(
                copy_source,
                source,
                destination_key,
                upload_id,
                copy_ranges(size, self.params.copy_chunk_size),
                first_number=1,
            )
            await self._call(
                "complete_multipart_upload",
                destination,
                Key=destination_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": _completed(parts)},
            )
        except BaseException:
            try:
                await self._abort(destination_key, upload_id, destination)
            except StorageError:
                pass  # the original error matters more
            raise

    async def _copy_parts(self, copy_source, path, key, upload_id, ranges, first_number):
        """UploadPartCopy of ``ranges`` of ``copy_source`` as parts
        ``first_number``..., at most ``multipartcopymaxconcurrency`` at once
        and never more than half the node's S3 connections, so that
        committing a large blob cannot starve other clients."""
        limit = min(self.params.copy_max_concurrency, max(1, self.params.max_requests // 2))
        slots = defer.DeferredSemaphore(limit)

        async def one(number, first, last):
            await slots.acquire()
            try:
                response = await self._call(
                    "upload_part_copy",
                    path,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=copy_source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
            finally:
                slots.release()
            return {
                "PartNumber": number,
                "ETag": response["CopyPartResult"]["ETag"],
                "Size": last - first + 1,
            }

        return await _all(
            defer.ensureDeferred(one(first_number + index, first, last))
            for index, (first, last) in enumerate(ranges)
        )

    def delete(self, path):
        return defer.ensureDeferred(self._delete(path))

    async def _delete(self, path):
        parts = check_path(path)
        key = self._key(parts)
        prefix = self._dir_prefix(parts)
        if parts:
            self.known_directories.forget(key)
            self.recent_sizes.forget(key)
        else:
            self.known_directories = KnownDirectories(self.known_directories.limit)
            self.recent_sizes = RecentSizes(self.recent_sizes.limit)

        def list_page(token):
            return self._call(
                "list_objects_v2", path, Prefix=prefix, MaxKeys=self.list_page_size, **token
            )

        uploads, response = await _all([self._uploads_under(parts, path, tree=True), list_page({})])
        # Something below: a directory, so not a file too (the store is a tree).
        head = None
        if parts and not response.get("Contents"):
            head = await self._head(key, path)
        found = head is not None or bool(uploads)
        for upload_key, upload_id in uploads:
            await self._abort(upload_key, upload_id, path)
        if parts:
            pending = [key, key + TAIL_SUFFIX] if head is not None or uploads else []
        else:
            pending = []
        while True:
            contents = response.get("Contents", ())
            found = found or bool(contents)
            pending.extend(item["Key"] for item in contents)
            while len(pending) >= DELETE_BATCH:
                await self._delete_keys(pending[:DELETE_BATCH], path)
                del pending[:DELETE_BATCH]
            if not response.get("IsTruncated"):
                break
            response = await list_page({"ContinuationToken": response["NextContinuationToken"]})
        if not found:
            raise PathNotFound(path)
        if pending:
            await self._delete_keys(pending, path)

    def redirect_url(self, path, method):
        return defer.ensureDeferred(self._redirect_url(path, method))

    async def _redirect_url(self, path, method):
        parts = check_path(path)
        operation = {"GET": "get_object", "HEAD": "head_object"}.get(method)
        if not parts or operation is None:
            return None
        client, params = self._caller.client, {"Bucket": self.bucket, "Key": self._key(parts)}

        def presign():
            return client.generate_presigned_url(
                operation, Params=params, ExpiresIn=REDIRECT_EXPIRY
            )

        return await self._caller.run(presign, "presign", path)

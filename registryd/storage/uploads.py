"""Resumable blob uploads: bytes in, hashed and written, verified, committed.

An upload lives in storage as ``_uploads/<uuid>/data`` plus ``startedat``
(Distribution's layout), so it survives a restart and can be continued by
another registryd node on the same backend.  The running hash is an
optimisation kept in process memory, keyed by upload id and the offset it
covers.  It is also stored beside the data at the end of each request that
appended (``hashstates/<algorithm>/<offset>``, Distribution's layout and
encoding: :mod:`registryd.resumable_digest`) where other processes or nodes
serve the same uploads (with ``--workers`` a client's next request often
reaches another process), and in a process alone once the upload is large
enough that reading it back after a restart would cost more than the
writes (:data:`STORE_ALONE_FROM`); whoever continues the upload starts
from it.  When neither has it (a write failed, no libcrypto) it is
rebuilt by re-reading the stored data from the last stored state, or from
the start.  The stored bytes are
always the truth: a wrong state can only make the digest check fail.

Bytes flow: source (the request body) -> the writer's thread, which also
hashes each piece where the driver can (the filesystem's), else the
writer (the driver's own thread) and a hasher thread in parallel; in
order, with a bounded amount in flight, so memory never grows with the
blob and the reactor thread only moves buffers
(:mod:`registryd.storage.upload_sinks`).
"""

import collections
import contextlib
import re
import time
import uuid
from datetime import datetime, timezone

import attr
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from registryd import errors
from registryd.digest import DEFAULT_ALGORITHM, Digest, check_algorithm
from registryd.interfaces import IUploadStore
from registryd.names import check_upload_id, new_upload_id
from registryd.resumable_digest import new_resumable_hasher, restore, state_of
from registryd.runtime.threads import SerialWorker
from registryd.runtime.tuning import release_memory_later
from registryd.storage import _paths as paths
from registryd.storage.errors import (
    InvalidOffset,
    PathNotFound,
    StorageError,
    translate_storage_errors,
)
from registryd.storage.upload_sinks import pump, upload_sink

#: An append that moved this much gives its buffers' memory back after.
RELEASE_AFTER = 16 * 1024 * 1024
#: Bytes an upload has received from which a process alone (no other
#: process or node continues its uploads) stores its running hash too, at
#: the end of each request that appended: for a restart (an upgrade, a
#: crash) in the middle of a large push.  Without it the restarted process
#: reads back and hashes all that was received (measured: 1.1 s of CPU per
#: GiB from the page cache, plus the disk reads when it is not there);
#: storing costs one small file per request (0.1-0.7 ms per ``PATCH`` on
#: the filesystem, an S3 ``PUT`` on S3), which small uploads, the most of
#: them, need not pay: below this the read-back costs at most ~70 ms.
STORE_ALONE_FROM = 64 * 1024 * 1024


log = Logger()

_FRACTION = re.compile(r"\.(\d+)")


def rfc3339_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_started_at(text):
    """A ``startedat`` value (RFC 3339, e.g. ``2026-11-26T20:25:02Z``, with
    up to nanoseconds as Go writes them) as a POSIX time, or None."""
    text = text.strip()
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


class UploadLocks:
    """Per-upload DeferredLocks that disappear when nobody holds or waits.

    An :class:`Upload` holds its lock from :meth:`UploadStore.resume` (or
    :meth:`UploadStore.start`) until it is closed, so one request's writer is
    the only one appending in this process, and upload purging
    (``in_use``) leaves it alone.

    With a ``shared_state`` shared with other nodes (Redis), the holder
    also takes the upload's lease there (``upload:<id>``), renewed every
    third of ``lease`` while held, so two PATCHes to one upload through two
    nodes run one after the other, as they do on one node; a node that
    dies holding it frees it after ``lease`` seconds.  When the shared
    state does not answer, the lock is this node's only (as with one
    node), never an error for the client.

    The same locks serve other keys that must be held across nodes (a
    protected tag while it is checked and written, a quota while a push is
    admitted): ``namespace`` prefixes their names in the shared state, and
    a tuple key is joined with ``:`` (no repository name or tag has one)."""

    #: seconds a node's hold of an upload lasts unless renewed
    lease = 30.0
    #: longest pause between two tries for a lease another node holds
    longest_retry = 0.5

    def __init__(self, shared_state=None, reactor=None, namespace="upload"):
        self._locks = {}
        self._namespace = namespace
        self._shared = shared_state if shared_state is not None and shared_state.shared else None
        self._reactor = reactor

    async def acquire(self, key):
        """Wait for the lock of ``key``; returns the callable that releases it."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = defer.DeferredLock()
        await lock.acquire()
        released = []

        def release_local():
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(key, None)

        try:
            release_shared = await self._acquire_shared(key)
        except BaseException:  # cancelled while waiting for another node
            release_local()
            raise

        def release():
            if released:
                return
            released.append(True)
            release_shared()
            release_local()

        return release

    async def _acquire_shared(self, key):
        """Take the upload's lease in the shared state, waiting while
        another node holds it; returns what lets it go."""
        from registryd.shared.errors import SharedStateUnavailable

        if self._shared is None:
            return lambda: None
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        joined = ":".join(key) if isinstance(key, tuple) else key
        name, token, pause = f"{self._namespace}:{joined}", uuid.uuid4().hex, 0.02
        while True:
            try:
                if await self._shared.acquire(name, token, self.lease):
                    break
            except SharedStateUnavailable:
                return lambda: None  # degraded: this node's lock only
            await task.deferLater(reactor, pause, lambda: None)
            pause = min(pause * 2, self.longest_retry)
        shared = self._shared
        renewal = task.LoopingCall(
            lambda: shared.extend(name, token, self.lease).addErrback(lambda _: None)
        )
        renewal.clock = reactor
        renewal.start(self.lease / 3, now=False)

        def release_shared():
            renewal.stop()
            shared.release(name, token).addErrback(lambda _: None)

        return release_shared

    def __call__(self, key):
        """``async with locks(key):`` hold the lock of ``key`` for a block."""
        locks = self

        class _Held:
            async def __aenter__(self):
                self.release = await locks.acquire(key)

            async def __aexit__(self, *exc):
                self.release()

        return _Held()

    def in_use(self, key):
        """Is the lock for ``key`` held or waited for?"""
        return key in self._locks


@attr.s(frozen=True, slots=True)
class UploadInfo:
    """An upload as found in storage by :meth:`UploadStore.enumerate`."""

    repository = attr.ib()
    id = attr.ib()
    #: POSIX time from ``startedat``; else the data's modification time
    started_at = attr.ib()
    size = attr.ib()
    #: written or completed by this process right now
    active = attr.ib(default=False)

    def to_dict(self, now=None):
        now = time.time() if now is None else now
        return {
            "repository": self.repository,
            "id": self.id,
            "started_at": datetime.fromtimestamp(self.started_at, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            if self.started_at is not None
            else None,
            "age_seconds": round(now - self.started_at) if self.started_at is not None else None,
            "size": self.size,
            "active": self.active,
        }


class HashStates:
    """Running hashes of uploads in progress, in process memory only, at
    most ``limit`` of them (the least recently used go first: a lost
    state costs a re-read, never a wrong answer).

    Keyed by ``(repository name, upload id)``: an upload id is valid in its
    own repository only.  An entry also says that this process started or
    continued the upload and has not removed it since: resuming it then
    needs no request to learn that it exists and which digest algorithm
    it uses (:meth:`UploadStore.resume`).
    """

    def __init__(self, limit=16384, stored=False, store_alone_from=STORE_ALONE_FROM):
        """:param stored: also store each upload's state beside it at the end
            of a request that appended, for the other processes or nodes
            that continue its uploads (one small file, or one S3 ``PUT``,
            per request).
        :param store_alone_from: else, store it once the upload has
            received this many bytes (:data:`STORE_ALONE_FROM`)."""
        self.limit = limit
        self.stored = stored
        self.store_alone_from = store_alone_from
        self._states = collections.OrderedDict()

    def to_store(self, offset):
        """Is the state of an upload that has received ``offset`` bytes
        stored beside it?"""
        return self.stored or offset >= self.store_alone_from

    def take(self, key, algorithm, offset):
        """Remove and return the hasher for upload ``key`` if it covers
        exactly ``offset`` bytes with ``algorithm``; else None."""
        state = self._states.pop(key, None)
        if state is not None and state[0] == offset and state[1].name == algorithm:
            return state[1]
        return None

    def known(self, key):
        """(digest algorithm, offset) of an upload this process holds a
        state of, or None."""
        state = self._states.get(key)
        return (state[1].name, state[0]) if state is not None else None

    def put(self, key, offset, hasher):
        self._states[key] = (offset, hasher)
        self._states.move_to_end(key)
        while len(self._states) > self.limit:
            self._states.popitem(last=False)

    def forget(self, key):
        self._states.pop(key, None)

    def __len__(self):
        return len(self._states)


@attr.s(frozen=True)
class UploadContext:
    """What every upload of one repository works with: its collaborators
    in the storage model, handed down by :class:`UploadStore`."""

    name = attr.ib()
    driver = attr.ib()
    #: the global registryd.storage.blobs.BlobStore (where a verified upload goes)
    blobs = attr.ib()
    #: the repository's registryd.storage.blobs.LinkedBlobStore (linked on completion)
    linked_blobs = attr.ib()
    vacuum = attr.ib()
    #: registryd.storage.nodes_guard.NodesGuard
    guard = attr.ib()
    hash_states = attr.ib()
    locks = attr.ib()


class Upload:
    """One upload session of one repository, open for one request.

    It holds the upload's lock and (once it needed one) one appending
    writer, from :meth:`UploadStore.resume` or :meth:`UploadStore.start` until
    ``close``: a ``PATCH`` opens the writer once, learning the offset from
    it (``size``) and appending with it; a ``PUT`` appends its last chunk
    and commits with the same writer.  Use it as ``async with``.
    """

    def __init__(self, context, upload_id, algorithm, release, writer=None, size=0):
        self._context = context
        self.name = context.name
        self.id = upload_id
        self._state_key = (context.name, upload_id)
        self.algorithm = algorithm
        self._release = release
        self._writer = writer
        self.size = writer.size if writer is not None else size

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    @property
    def _driver(self):
        return self._context.driver

    @property
    def _data_path(self):
        return paths.upload_data(self.name, self.id)

    def range_header(self):
        """The ``Range`` header value for the bytes received so far:
        ``0-<last>``, and ``0-0`` for none (as Distribution answers)."""
        return f"0-{max(self.size - 1, 0)}"

    async def _open_writer(self):
        """The upload's appending writer, opened on first use.  Its ``size``
        is the truth about the stored bytes: ``stat`` may not count bytes a
        driver keeps out of sight until commit (S3 multipart uploads)."""
        if self._writer is None:
            self._writer = await self._driver.writer(self._data_path, append=True)
            self.size = self._writer.size
        return self._writer

    async def close(self):
        """Close the writer (keeping its bytes for a later request) and
        release the upload; idempotent."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                await writer.close()
        finally:
            if self._release is not None:
                release, self._release = self._release, None
                release()

    @translate_storage_errors
    async def append(self, source, completing=False):
        """Append everything ``source`` yields; returns the new size.

        The running hash is stored for whichever process continues the
        upload, unless ``completing``: the caller completes it right after
        (a monolithic upload, a ``PUT`` with a last chunk), in this process.

        If the source fails midway (the client went away), every byte that
        arrived is still written and hashed before the error propagates, so
        the client can resume from the offset a status request reports.
        """
        writer = await self._open_writer()
        start = writer.size
        states = self._context.hash_states
        # None when the stored bytes cannot be read back yet (an S3
        # multipart upload another node began): then this append only
        # writes, and complete() hashes the committed data.
        hasher = await self._hasher_at(start, lazy=True)
        sink = upload_sink(writer, hasher)
        failures = sink.failures
        try:
            await pump(source, sink)
        finally:
            # Also on cancellation: wait for queued work, keep the bytes.
            await sink.settle()
            if failures:
                # writer.size counts the failed writes too: a fresh writer
                # asks storage what it holds.
                states.forget(self._state_key)
                self._writer = None
                try:
                    await writer.close()
                    await self._open_writer()
                except Exception:
                    pass
            else:
                # Every write given is done (or queued, after a source that
                # failed: close waits for it), and writer.size counts it.
                self.size = writer.size
                if hasher is not None:
                    states.put(self._state_key, writer.size, hasher)
                else:
                    states.forget(self._state_key)
            if self.size - start >= RELEASE_AFTER:
                release_memory_later()  # the chunks' heap space (registryd.runtime.tuning)
        if failures:
            failures[0].raiseException()
        if (
            hasher is not None
            and self.size > start
            and states.to_store(self.size)
            and not completing
        ):
            await self._store_hash_state(hasher, self.size)
        return self.size

    async def _store_hash_state(self, hasher, offset):
        """Store ``hasher`` (covering the first ``offset`` bytes) for whichever
        process finishes the upload; before the request is answered, so the
        client's next one finds it wherever it lands.  Not stored is not
        fatal: that process then reads the bytes back."""
        state = state_of(hasher)
        if state is None:
            return
        path = paths.upload_hash_state(self.name, self.id, hasher.name, offset)
        try:
            await self._driver.put_content(path, state)
        except StorageError as error:
            log.warn(
                "upload {id}: running hash not stored ({error}); "
                "finishing it elsewhere reads its bytes again",
                id=self.id,
                error=error,
            )

    async def _stored_hasher(self, algorithm, offset):
        """``(hasher, at)``: the stored state of the largest offset ``at`` up
        to ``offset`` (1 or more) that can be read and restored, or None."""
        directory = paths.upload_hash_states(self.name, self.id, algorithm)
        try:
            names = await self._driver.list(directory)
        except PathNotFound:
            return None
        offsets = sorted(
            # (a name too long for an offset is someone else's: int() refuses
            # thousands of digits)
            (
                int(name)
                for name in names
                if name.isdecimal() and len(name) <= 20 and 0 < int(name) <= offset
            ),
            reverse=True,
        )
        for at in offsets:
            try:
                state = await self._driver.get_content(
                    paths.upload_hash_state(self.name, self.id, algorithm, at)
                )
            except PathNotFound:
                continue
            hasher = restore(algorithm, state)
            if hasher is not None:
                return hasher, at
        return None

    async def _hasher_at(self, offset, algorithm=None, lazy=False):
        """A hasher that has seen the first ``offset`` stored bytes.

        With ``lazy``, None instead when fewer than ``offset`` bytes can be
        read back: a driver may keep an appending writer's bytes out of
        sight until commit (S3 multipart uploads), and complete() hashes
        them once committed.
        """
        algorithm = algorithm or self.algorithm
        hasher = self._context.hash_states.take(self._state_key, algorithm, offset)
        if hasher is not None:
            return hasher
        if offset == 0:
            return new_resumable_hasher(algorithm)
        stored = await self._stored_hasher(algorithm, offset)
        hasher, start = stored if stored is not None else (new_resumable_hasher(algorithm), 0)
        if start == offset:
            return hasher
        try:
            reader = await self._driver.reader(self._data_path, start)
        except (PathNotFound, InvalidOffset):
            if lazy:
                return None
            raise errors.BlobUploadInvalid("upload data is missing; restart the upload") from None
        if lazy and reader.size < offset:
            await reader.close()
            return None
        worker = SerialWorker()
        remaining = offset - start

        class Limited:
            async def read(self, n):
                nonlocal remaining
                if remaining <= 0:
                    return b""
                data = await reader.read(min(n, remaining))
                remaining -= len(data)
                return data

        try:
            await pump(Limited(), lambda chunk: worker.submit(hasher.update, chunk))
        finally:
            await worker.drain()
            await reader.close()
        if remaining:
            raise errors.BlobUploadInvalid("upload data shorter than expected; restart the upload")
        return hasher

    @translate_storage_errors
    async def complete(self, digest, expected_size=None):
        """Verify the upload against ``digest`` and make it a blob of the
        repository.  On a mismatch nothing changes: the upload stays for
        another attempt.  Returns the blob's :class:`registryd.storage.blobs.BlobInfo`.
        """
        context = self._context
        # Make the stored bytes complete and readable (a driver may keep
        # appended bytes out of sight until commit, as S3 multipart
        # uploads do); this also creates an empty upload's data file.
        writer = await self._open_writer()
        self.size = writer.size
        self._writer = None
        await writer.commit()
        if expected_size is not None and expected_size != self.size:
            raise errors.SizeInvalid(
                f"upload has {self.size} bytes, size parameter says {expected_size}",
                detail={"size": self.size, "expected": expected_size},
            )
        hasher = await self._hasher_at(self.size, digest.algorithm)
        actual = Digest.from_hasher(hasher)
        # Keep the state: a retry with the right digest needs no rehash.
        context.hash_states.put(self._state_key, self.size, hasher)
        if actual != digest:
            raise errors.DigestInvalid(
                f"upload content has digest {actual}, not {digest}",
                detail={"expected": str(digest), "actual": str(actual)},
            )
        # Held from the existence check in commit until linked, so
        # online GC cannot sweep a stored copy this upload reuses.
        async with context.guard.using([digest]):
            blob = await context.blobs.commit(self, digest, self.size)
            await context.linked_blobs.link(digest)
        await context.vacuum.remove_upload(self.name, self.id)
        return blob

    @translate_storage_errors
    async def cancel(self):
        """Remove the upload and what it received."""
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        await self._context.vacuum.remove_upload(self.name, self.id)


@implementer(IUploadStore)
class UploadStore:
    """The uploads of one repository, under ``_uploads/<uuid>/``."""

    def __init__(self, context):
        self._context = context
        self.name = context.name

    @translate_storage_errors
    async def start(self, algorithm=DEFAULT_ALGORITHM):
        """A new upload (``algorithm``: the digest algorithm chosen at POST),
        open and held by the caller until it closes it."""
        check_algorithm(algorithm)
        context = self._context
        upload_id = new_upload_id()
        started_at = rfc3339_now()
        release = await context.locks.acquire(upload_id)
        try:
            # No data file yet: the first append or complete() makes it.
            if algorithm != DEFAULT_ALGORITHM:
                await context.driver.put_content(
                    paths.upload_algorithm(self.name, upload_id), algorithm.encode("ascii")
                )
            # startedat last: its presence marks the upload as existing.
            await context.driver.put_content(
                paths.upload_started_at(self.name, upload_id), started_at.encode("ascii")
            )
        except BaseException:
            # A full disk can refuse startedat after taking the data file:
            # leave no half-made upload nobody knows the id of.
            with contextlib.suppress(StorageError):  # else the purge of stale uploads will
                await context.vacuum.remove_upload(self.name, upload_id)
            release()
            raise
        # Known here from now on: resuming it needs no look-up (HashStates).
        context.hash_states.put((self.name, upload_id), 0, new_resumable_hasher(algorithm))
        return Upload(context, upload_id, algorithm, release)

    @translate_storage_errors
    async def resume(self, upload_id):
        """Upload ``upload_id``, locked for the caller and with its one
        appending writer open (whose size is the offset to continue from);
        BLOB_UPLOAD_UNKNOWN if there is no such upload."""
        check_upload_id(upload_id)
        release = await self._context.locks.acquire(upload_id)
        try:
            return await self._open(upload_id, release)
        except BaseException:
            release()
            raise

    @translate_storage_errors
    async def status(self, upload_id):
        """Upload ``upload_id`` as it stands (its size), already closed:
        a status request neither waits for nor disturbs one in progress."""
        check_upload_id(upload_id)
        upload = await self._open(upload_id, None)
        await upload.close()
        return upload

    async def _open(self, upload_id, release):
        """The upload with its appending writer open.

        An upload this process started or continued (it holds its state,
        :class:`HashStates`) is known to exist and its algorithm is known:
        no request asks, unless the writer finds other than the bytes this
        process last saw (another node appended, finished or cancelled it).
        Otherwise one listing of the upload's directory tells both
        (``startedat`` marks an upload; the algorithm file is read only
        where there is one).  So the one change this process cannot see
        is another node removing an upload that never received a byte: it
        is continued here rather than refused, and the digest check at the
        end still guards what becomes a blob.
        """
        driver = self._context.driver
        known = self._context.hash_states.known((self.name, upload_id))
        algorithm = known[0] if known is not None else await self._stored_algorithm(upload_id)
        writer = await driver.writer(paths.upload_data(self.name, upload_id), append=True)
        if known is not None and writer.size != known[1]:
            try:
                await self._stored_algorithm(upload_id)
            except errors.BlobUploadUnknown:
                await writer.close()
                raise
        return Upload(self._context, upload_id, algorithm, release, writer)

    async def _stored_algorithm(self, upload_id):
        """The digest algorithm of stored upload ``upload_id``;
        BLOB_UPLOAD_UNKNOWN when there is no such upload."""
        driver = self._context.driver
        try:
            names = await driver.list(paths.upload_dir(self.name, upload_id))
        except PathNotFound:
            names = []
        if paths.upload_started_at(self.name, upload_id).rsplit("/", 1)[1] not in names:
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id})
        algorithm_file = paths.upload_algorithm(self.name, upload_id)
        if algorithm_file.rsplit("/", 1)[1] not in names:
            return DEFAULT_ALGORITHM
        try:
            return (await driver.get_content(algorithm_file)).decode("ascii")
        except PathNotFound:
            return DEFAULT_ALGORITHM

    async def enumerate(self):
        """Every upload directory of the repository, as :class:`UploadInfo` records
        (names that are not upload ids are left alone, as Distribution
        leaves them)."""
        driver = self._context.driver
        try:
            ids = await driver.list(paths.uploads(self.name))
        except PathNotFound:
            return []
        found = []
        for upload_id in ids:
            try:
                check_upload_id(upload_id)
            except errors.BlobUploadInvalid:
                continue
            started = None
            try:
                started = parse_started_at(
                    (
                        await driver.get_content(paths.upload_started_at(self.name, upload_id))
                    ).decode("ascii", "replace")
                )
            except PathNotFound:
                pass
            size = 0
            try:
                info = await driver.stat(paths.upload_data(self.name, upload_id))
                size = info.size
                if started is None:
                    started = info.modified
            except PathNotFound:
                pass
            if started is None:
                try:
                    started = (await driver.stat(paths.upload_dir(self.name, upload_id))).modified
                except PathNotFound:
                    continue  # gone meanwhile
            found.append(
                UploadInfo(
                    self.name,
                    upload_id,
                    started,
                    size,
                    active=self._context.locks.in_use(upload_id),
                )
            )
        return found

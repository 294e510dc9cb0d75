"""Resumable blob uploads: bytes in, hashed and written, verified, committed.

An upload lives in storage as ``_uploads/<uuid>/data`` plus ``startedat``
(Distribution's layout), so it survives a restart and can be continued by
another registryd node on the same backend.  The running hash is an
optimisation kept in process memory, keyed by upload id and the offset it
covers: when it is missing or covers a different offset (a restart, another
node appended, a write failed) it is rebuilt by re-reading the stored data.
The stored bytes are always the truth.

Bytes flow: source (the request body) -> hasher (a thread) and writer (the
driver, its own thread) in parallel, in order, with a bounded amount in
flight, so memory never grows with the blob and the reactor thread only
moves buffers.
"""

from collections import deque
from datetime import datetime, timezone

from twisted.internet import defer

from registryd import errors
from registryd.digest import Digest, new_hasher
from registryd.storage import paths
from registryd.storage.errors import PathNotFound, translate_storage_errors
from registryd.threads import SerialWorker
from registryd.tuning import release_memory_later

#: Bytes taken from the source per step, and at most in flight to the
#: hasher and writer at once.
CHUNK_SIZE = 1024 * 1024
MAX_IN_FLIGHT = 6 * CHUNK_SIZE
#: An append that moved this much gives its buffers' memory back after.
RELEASE_AFTER = 16 * 1024 * 1024


async def stored_upload_size(driver, path):
    """How many bytes an upload's data file holds, as an appending writer
    sees it: C{stat} may not count bytes a driver keeps out of sight until
    commit (S3 multipart uploads), and only a writer knows where they end."""
    writer = await driver.writer(path, append=True)
    try:
        return writer.size
    finally:
        await writer.close()


def rfc3339_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class HashStates:
    """Running hashes of uploads in progress, in process memory only."""

    def __init__(self):
        self._states = {}

    def take(self, upload_id, algorithm, offset):
        """Remove and return the hasher for C{upload_id} if it covers
        exactly C{offset} bytes with C{algorithm}; else None."""
        state = self._states.pop(upload_id, None)
        if state is not None and state[0] == offset and state[1].name == algorithm:
            return state[1]
        return None

    def put(self, upload_id, offset, hasher):
        self._states[upload_id] = (offset, hasher)

    def forget(self, upload_id):
        self._states.pop(upload_id, None)

    def __len__(self):
        return len(self._states)


async def _pump(source, sinks):
    """Move all of C{source} into every sink, in order, bounded in flight.

    C{source.read(n)} returns Deferred bytes (b"" at the end); each sink is
    a callable taking a chunk and returning a Deferred.  Whatever happens
    (the source fails, the caller is cancelled), every chunk already taken
    from the source is handed to every sink before this returns or raises;
    the caller then waits for the sinks to finish their queued work.
    Returns the number of bytes moved.
    """
    pending = deque()
    in_flight = 0
    moved = 0
    while True:
        chunk = await source.read(CHUNK_SIZE)
        if not chunk:
            break
        moved += len(chunk)
        pending.append(
            (len(chunk), defer.gatherResults([sink(chunk) for sink in sinks], consumeErrors=True))
        )
        in_flight += len(chunk)
        while in_flight > MAX_IN_FLIGHT:
            size, done = pending.popleft()
            await done
            in_flight -= size
    while pending:
        _, done = pending.popleft()
        await done
    return moved


class Upload:
    """One upload session of one repository, as found in storage."""

    def __init__(self, registry, name, upload_id, algorithm, started_at, size):
        self.registry = registry
        self.name = name
        self.id = upload_id
        self.algorithm = algorithm
        self.started_at = started_at
        self.size = size

    @property
    def _driver(self):
        return self.registry.driver

    @property
    def _data_path(self):
        return paths.upload_data(self.name, self.id)

    def range_header(self):
        """The ``Range`` header value for the bytes received so far:
        ``0-<last>``, and ``0-0`` for none (as Distribution answers)."""
        return f"0-{max(self.size - 1, 0)}"

    @translate_storage_errors
    async def append(self, source):
        """Append everything C{source} yields; returns the new size.

        If the source fails midway (the client went away), every byte that
        arrived is still written and hashed before the error propagates, so
        the client can resume from the offset a status request reports.
        """
        async with self.registry.upload_lock(self.id):
            writer = await self._driver.writer(self._data_path, append=True)
            start = writer.size
            # None when the stored bytes cannot be read back yet (an S3
            # multipart upload another node began): then this append only
            # writes, and complete() hashes the committed data.
            hasher = await self._hasher_at(start, lazy=True)
            hash_worker = SerialWorker()
            failures = []

            def write(chunk):
                return writer.write(chunk).addErrback(failures.append)

            def digest(chunk):
                return hash_worker.submit(hasher.update, chunk)

            try:
                await _pump(source, [write, digest] if hasher is not None else [write])
            finally:
                # Also on cancellation: wait for queued work, keep the bytes.
                await hash_worker.drain()
                await writer.close()
                if writer.size - start >= RELEASE_AFTER:
                    release_memory_later()  # the chunks' heap space (registryd.tuning)
                if failures:
                    # writer.size counts the failed writes too: ask storage.
                    self.registry.hash_states.forget(self.id)
                    try:
                        self.size = await stored_upload_size(self._driver, self._data_path)
                    except Exception:
                        pass
                else:
                    self.size = writer.size
                    if hasher is not None:
                        self.registry.hash_states.put(self.id, writer.size, hasher)
                    else:
                        self.registry.hash_states.forget(self.id)
            if failures:
                failures[0].raiseException()
            return self.size

    async def _hasher_at(self, offset, algorithm=None, lazy=False):
        """A hasher that has seen the first C{offset} stored bytes.

        With C{lazy}, None instead when fewer than C{offset} bytes can be
        read back: a driver may keep an appending writer's bytes out of
        sight until commit (S3 multipart uploads), and complete() hashes
        them once committed.
        """
        algorithm = algorithm or self.algorithm
        hasher = self.registry.hash_states.take(self.id, algorithm, offset)
        if hasher is not None:
            return hasher
        hasher = new_hasher(algorithm)
        if offset == 0:
            return hasher
        try:
            reader = await self._driver.reader(self._data_path, 0)
        except PathNotFound:
            if lazy:
                return None
            raise errors.BlobUploadInvalid("upload data is missing; restart the upload") from None
        if lazy and reader.size < offset:
            await reader.close()
            return None
        worker = SerialWorker()
        remaining = offset

        class Limited:
            async def read(self, n):
                nonlocal remaining
                if remaining <= 0:
                    return b""
                data = await reader.read(min(n, remaining))
                remaining -= len(data)
                return data

        try:
            await _pump(Limited(), [lambda chunk: worker.submit(hasher.update, chunk)])
        finally:
            await worker.drain()
            await reader.close()
        if remaining:
            raise errors.BlobUploadInvalid("upload data shorter than expected; restart the upload")
        return hasher

    @translate_storage_errors
    async def complete(self, digest, expected_size=None):
        """Verify the upload against C{digest} and make it a blob of the
        repository.  On a mismatch nothing changes: the upload stays for
        another attempt.  Returns the blob's L{registryd.storage.registry.BlobInfo}.
        """
        async with self.registry.upload_lock(self.id):
            # Make the stored bytes complete and readable (a driver may keep
            # appended bytes out of sight until commit, as S3 multipart
            # uploads do); this also creates an empty upload's data file.
            # The committed size is the truth, also if another node
            # appended since this request looked.
            writer = await self._driver.writer(self._data_path, append=True)
            self.size = writer.size
            await writer.commit()
            if expected_size is not None and expected_size != self.size:
                raise errors.SizeInvalid(
                    f"upload has {self.size} bytes, size parameter says {expected_size}",
                    detail={"size": self.size, "expected": expected_size},
                )
            hasher = await self._hasher_at(self.size, digest.algorithm)
            actual = Digest.from_hasher(hasher)
            # Keep the state: a retry with the right digest needs no rehash.
            self.registry.hash_states.put(self.id, self.size, hasher)
            if actual != digest:
                raise errors.DigestInvalid(
                    f"upload content has digest {actual}, not {digest}",
                    detail={"expected": str(digest), "actual": str(actual)},
                )
            # Held from the existence check in commit_blob until linked, so
            # online GC cannot sweep a stored copy this upload reuses.
            async with self.registry.guard.using([digest]):
                blob = await self.registry.commit_blob(self._data_path, digest, self.size)
                await self.registry.repository(self.name).link_blob(digest)
            await self._remove()
            return blob

    @translate_storage_errors
    async def cancel(self):
        async with self.registry.upload_lock(self.id):
            await self._remove()

    async def _remove(self):
        self.registry.hash_states.forget(self.id)
        try:
            await self._driver.delete(paths.upload_dir(self.name, self.id))
        except PathNotFound:
            pass

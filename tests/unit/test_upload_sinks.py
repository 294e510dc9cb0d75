"""An upload on the filesystem hashes each piece in the writer's own thread
job (:class:`registryd.interfaces.IObservedWriter`), and keeps the
guarantees of the two-thread path it replaced there: every byte received
is written and hashed before an error reaches the client, the offset
reported is what storage holds, and the upload continues from it.

Real components: the filesystem driver behind the instrumented wrapper (as
composed in production), on a directory or on a small tmpfs that really
fills up (root needed, else skipped locally and failed under CI=true).
The hasher is a real :class:`~registryd.resumable_digest.ResumableHasher`
that also notes which thread fed it how many bytes.
"""

import os
import threading

import pytest
import pytest_twisted
from twisted.internet import defer

from registryd import errors
from registryd.digest import Digest
from registryd.http.web import BodyConnectionLost
from registryd.resumable_digest import ResumableHasher
from registryd.storage import _paths as paths  # to look at the stored upload
from registryd.storage.drivers.filesystem import FilesystemDriver
from registryd.storage.instrumented import InstrumentedDriver
from registryd.storage.registry import Registry
from tests.e2e.tools import Tmpfs

MiB = 1024 * 1024
#: The threads of FilesystemDriver's writers (its BlockingExecutor's)
WRITER_THREADS = "registryd-filesystem"


class RecordingHasher(ResumableHasher):
    """A real running hash that notes (thread name, bytes) per update."""

    def __init__(self, algorithm="sha256", context=None):
        super().__init__(algorithm, context)
        self.updates = []

    def update(self, data):
        self.updates.append((threading.current_thread().name, len(data)))
        super().update(data)


class PiecesThenFailure:
    """A request body that brings ``pieces`` and then breaks (the client
    went away), or ends when ``error`` is None; each read answers on a
    later reactor turn, as a socket's would."""

    def __init__(self, pieces, error=None):
        self._pieces = list(pieces)
        self._error = error

    def read(self, size):
        from twisted.internet import reactor

        result = defer.Deferred()
        if self._pieces:
            piece = self._pieces.pop(0)
            if len(piece) > size:
                piece, rest = piece[:size], piece[size:]
                self._pieces.insert(0, rest)
            reactor.callLater(0, result.callback, piece)
        elif self._error is not None:
            reactor.callLater(0, result.errback, self._error)
        else:
            reactor.callLater(0, result.callback, b"")
        return result


def registry_on(root):
    return Registry(InstrumentedDriver(FilesystemDriver(root)))


async def started_upload(registry, name="app"):
    """A new upload whose running hash is a :class:`RecordingHasher`."""
    upload = await registry.repository(name).uploads.start()
    hasher = RecordingHasher()
    registry.hash_states.put((name, upload.id), 0, hasher)
    return upload, hasher


def stored(root, name, upload_id):
    with open(os.path.join(root, paths.upload_data(name, upload_id).lstrip("/")), "rb") as data:
        return data.read()


@pytest_twisted.ensureDeferred
async def test_each_piece_is_hashed_in_the_job_that_wrote_it(tmp_path):
    """One thread hand-off per piece: the writer's thread hashes it too."""
    root = str(tmp_path / "root")
    registry = registry_on(root)
    pieces = [os.urandom(256 * 1024 + i) for i in range(12)]
    upload, hasher = await started_upload(registry)
    async with upload:
        assert await upload.append(PiecesThenFailure(pieces)) == sum(map(len, pieces))
        assert hasher.updates == [(WRITER_THREADS, len(piece)) for piece in pieces]
        blob = await upload.complete(Digest.of(b"".join(pieces)))
    assert blob.size == sum(map(len, pieces))


@pytest_twisted.ensureDeferred
async def test_a_source_failing_midway_leaves_every_received_byte_written_and_hashed(tmp_path):
    """The client goes away after 3.5 MiB, with pieces still queued for the
    writer: the append raises only once all of them are written and
    hashed, the status offset is what arrived, and the running hash kept
    covers exactly that (the stored bytes are swapped for others before
    the upload is finished from that offset: only a hash kept in memory,
    not one rebuilt from storage, still matches)."""
    root = str(tmp_path / "root")
    registry = registry_on(root)
    received = [os.urandom(MiB) for _ in range(3)] + [os.urandom(MiB // 2)]
    rest = os.urandom(MiB + 17)
    everything = b"".join(received) + rest
    upload, hasher = await started_upload(registry)
    async with upload:
        with pytest.raises(BodyConnectionLost):
            await upload.append(PiecesThenFailure(received, BodyConnectionLost("gone")))
    offset = len(everything) - len(rest)
    assert sum(size for _, size in hasher.updates) == offset
    assert {thread for thread, _ in hasher.updates} == {WRITER_THREADS}
    assert stored(root, "app", upload.id) == everything[:offset]
    assert (await registry.repository("app").uploads.status(upload.id)).size == offset
    assert registry.hash_states.known(("app", upload.id)) == ("sha256", offset)

    with open(os.path.join(root, paths.upload_data("app", upload.id).lstrip("/")), "r+b") as data:
        data.write(os.urandom(offset))
    async with await registry.repository("app").uploads.resume(upload.id) as resumed:
        assert resumed.size == offset
        await resumed.append(PiecesThenFailure([rest]))
        blob = await resumed.complete(Digest.of(everything))
    assert blob.digest == Digest.of(everything)


@pytest_twisted.ensureDeferred
async def test_a_write_failing_midway_reports_the_stored_offset_and_the_upload_resumes(
    tmp_path,
):
    """The disk fills up in the middle of an append: a named 503, no piece
    hashed past a failed write, the offset reported is what the disk
    holds, the running hash is dropped (it may cover more than was
    written), and once there is space again the client resumes from that
    offset and the upload completes with the right digest (the hash
    rebuilt from the stored bytes)."""
    with Tmpfs(tmp_path / "disk", size="8m") as disk:
        root = os.path.join(disk.directory, "root")
        registry = registry_on(root)
        upload, hasher = await started_upload(registry)
        filler = os.path.join(disk.directory, "filler")
        with open(filler, "wb") as stream:
            stream.write(b"\0" * (disk.free() - 2 * MiB - MiB // 3))
        pieces = [os.urandom(MiB) for _ in range(6)]
        everything = b"".join(pieces)
        async with upload:
            with pytest.raises(errors.Unavailable) as refused:
                await upload.append(PiecesThenFailure(pieces))
            assert "storage full" in str(refused.value)
            offset = upload.size
        kept = stored(root, "app", upload.id)
        assert len(kept) == offset and 0 < offset < len(everything)
        assert kept == everything[:offset]
        assert sum(size for _, size in hasher.updates) <= offset
        assert {thread for thread, _ in hasher.updates} <= {WRITER_THREADS}
        assert registry.hash_states.known(("app", upload.id)) is None
        assert (await registry.repository("app").uploads.status(upload.id)).size == offset

        os.unlink(filler)
        async with await registry.repository("app").uploads.resume(upload.id) as resumed:
            assert resumed.size == offset
            await resumed.append(PiecesThenFailure([everything[offset:]]))
            blob = await resumed.complete(Digest.of(everything))
        assert blob.digest == Digest.of(everything)


@pytest_twisted.ensureDeferred
async def test_a_failing_observer_fails_its_write_and_not_the_bytes(tmp_path):
    """An observer's error is its write's outcome; the bytes are written
    and later writes go on (the writer itself did not fail)."""
    driver = InstrumentedDriver(FilesystemDriver(str(tmp_path / "root")))
    writer = await driver.writer("/upload")

    def broken(data):
        raise ValueError("observer")

    with pytest.raises(ValueError):
        await writer.write_observed(b"first", broken)
    await writer.write_observed(b" second", lambda data: None)
    await writer.commit()
    assert await driver.get_content("/upload") == b"first second"

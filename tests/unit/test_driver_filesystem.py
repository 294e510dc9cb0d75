"""The filesystem driver: the shared driver suite, plus what is its own
(host layout, permissions, configuration, not blocking the reactor)."""

import gc
import os
import stat
import time
import warnings

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from registryd.storage.base import check_path
from registryd.storage.drivers import InvalidParameter, create_driver, nowait
from registryd.storage.drivers.filesystem import FilesystemDriver
from registryd.storage.errors import InvalidPath, StorageError
from tests.drivers.driver_suite import DriverSuite, MiB


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


@pytest.fixture
def driver(root):
    return FilesystemDriver(root)


class TestFilesystemDriver(DriverSuite):
    """The shared suite, on a root that does not exist yet; the module's
    ``driver`` fixture provides the driver."""


# Host layout


@pytest_twisted.ensureDeferred
async def test_paths_map_under_root(driver, root):
    """Driver paths are host paths under the root, so registryd and
    Distribution's docker-registry can share a directory."""
    await driver.put_content("/docker/registry/v2/repositories/a/b/link", b"sha256:00")
    assert (root / "docker/registry/v2/repositories/a/b/link").read_bytes() == b"sha256:00"
    (root / "docker/registry/v2/written-elsewhere").write_bytes(b"by another process")
    assert (
        await driver.get_content("/docker/registry/v2/written-elsewhere") == b"by another process"
    )


@pytest_twisted.ensureDeferred
async def test_permissions_follow_umask(driver, root):
    previous = os.umask(0o022)
    try:
        await driver.put_content("/a/b/content", b"x")
        writer = await driver.writer("/a/c/upload")
        await writer.close()
    finally:
        os.umask(previous)
    for path in ["a", "a/b", "a/c"]:
        assert stat.S_IMODE((root / path).stat().st_mode) == 0o755
    for path in ["a/b/content", "a/c/upload"]:
        assert stat.S_IMODE((root / path).stat().st_mode) == 0o644


@pytest_twisted.ensureDeferred
async def test_failed_put_leaves_no_temporary_file(driver, root):
    await driver.put_content("/dir/sub/file", b"x")
    with pytest.raises(StorageError):
        await driver.put_content("/dir/sub", b"a directory is in the way")
    assert sorted(os.listdir(root / "dir")) == ["sub"]


@pytest_twisted.ensureDeferred
async def test_reader_open_cancelled_closes_file(driver):
    """klein cancels handlers of clients that went away: a reader being
    opened for one has its file closed, not left to the garbage collector."""
    from twisted.internet import reactor, task

    await driver.put_content("/blob", b"x" * 1000)

    def open_files():
        return len(os.listdir("/proc/self/fd"))

    before = open_files()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(20):
            driver.reader("/blob").addErrback(lambda failure: None).cancel()
        deadline = time.monotonic() + 5
        while open_files() > before and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.01, lambda: None)
        await task.deferLater(reactor, 0.05, lambda: None)
        gc.collect()
    assert open_files() <= before
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest_twisted.ensureDeferred
async def test_reactor_not_blocked_by_large_io(driver):
    """A LoopingCall keeps ticking while 256 MiB are written and read back.

    Awaiting an already-fired Deferred does not return to the reactor, so a
    driver doing its I/O on the reactor thread would let no tick happen
    during a phase; the maximum gap catches a driver blocking in big steps.
    """
    from twisted.internet import reactor, task

    ticks = []
    loop = task.LoopingCall(lambda: ticks.append(time.monotonic()))
    loop.clock = reactor
    loop.start(0.002)
    try:
        piece = os.urandom(4 * MiB)
        started = time.monotonic()
        writer = await driver.writer("/blobs/huge")
        for _ in range(64):
            await writer.write(piece)
        await writer.close()
        written = time.monotonic()
        reader = await driver.reader("/blobs/huge")
        total = 0
        while chunk := await reader.read(4 * MiB):
            total += len(chunk)
        await reader.close()
        read = time.monotonic()
    finally:
        loop.stop()
    assert total == 256 * MiB
    assert sum(started < tick < written for tick in ticks) >= 3, "no ticks while writing"
    assert sum(written < tick < read for tick in ticks) >= 3, "no ticks while reading"
    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
    assert max(gaps) < 0.25, f"reactor stalled for {max(gaps):.3f}s"


@pytest_twisted.ensureDeferred
async def test_streaming_writes_run_in_the_drivers_own_threads(root):
    """A writer's writes run in the driver's threads (bounded by
    ``maxthreads``), not in Twisted's thread pool, whose per-call
    coordination cost an image push more CPU than hashing did."""
    import threading

    driver = FilesystemDriver(root, max_threads=2)
    seen = set()
    writer = await driver.writer("/blobs/threads")
    real_write = writer._file.write

    def write(data):
        seen.add(threading.current_thread().name)
        return real_write(data)

    writer._file.write = write
    for _ in range(8):
        await writer.write(b"x" * 1024)
    await writer.commit()
    assert seen == {"registryd-filesystem"}
    assert driver._executor.worker_threads.threads <= 2


# Configuration


def test_default_root_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    driver = create_driver("filesystem", {})
    assert driver.root == str(tmp_path / "registry-data")
    assert driver.max_threads == 100
    assert not (tmp_path / "registry-data").exists()  # created on first write
    assert create_driver("filesystem", None).root == driver.root


def test_relative_root_made_absolute_at_creation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    driver = create_driver("filesystem", {"rootdirectory": "data/registry"})
    monkeypatch.chdir("/")
    assert driver.root == str(tmp_path / "data" / "registry")


@pytest.mark.parametrize("value, expected", [(25, 25), (1, 1), ("50", 50), (" 100 ", 100)])
def test_maxthreads_accepted(tmp_path, value, expected):
    driver = create_driver("filesystem", {"rootdirectory": str(tmp_path), "maxthreads": value})
    assert driver.max_threads == expected


@pytest.mark.parametrize("value", [0, -1, "many", "", True, 2.5, None, [25]])
def test_maxthreads_refused(tmp_path, value):
    with pytest.raises(InvalidParameter) as caught:
        create_driver("filesystem", {"rootdirectory": str(tmp_path), "maxthreads": value})
    assert caught.value.key == "storage.filesystem.maxthreads"
    assert str(caught.value).startswith("storage.filesystem.maxthreads: ")


@pytest.mark.parametrize("value", ["", 42, None, "/var/lib/\x00registry"])
def test_rootdirectory_refused(value):
    with pytest.raises(InvalidParameter) as caught:
        create_driver("filesystem", {"rootdirectory": value})
    assert caught.value.key == "storage.filesystem.rootdirectory"


def test_unknown_parameter_named(tmp_path):
    with pytest.raises(InvalidParameter) as caught:
        create_driver("filesystem", {"rootdirectory": str(tmp_path), "rootdir": "/x"})
    assert caught.value.key == "storage.filesystem.rootdir"
    assert "maxthreads, rootdirectory" in str(caught.value)


# Answers on the reactor thread (IImmediateMetadata)


@pytest_twisted.ensureDeferred
async def test_cached_stats_and_settled_listings_are_answered_at_once(driver, root):
    """What the kernel's caches have is answered without a Deferred: a
    stat, and a listing kept while its directory is unchanged (settled:
    older than the file clock's coarseness)."""
    if not nowait.available():
        pytest.skip("no openat2(RESOLVE_CACHED) here: every stat goes to a thread")
    await driver.put_content("/tags/a/link", b"x")
    await driver.put_content("/tags/b/link", b"x")
    assert driver.stat_now("/tags/a/link") == await driver.stat("/tags/a/link")
    assert driver.list_now("/tags") is None  # never listed
    then = time.time() - 60
    os.utime(root / "tags", (then, then))
    assert await driver.list("/tags") == ["a", "b"]
    assert driver.list_now("/tags") == ["a", "b"]
    await driver.put_content("/tags/c/link", b"x")  # the directory changes
    assert driver.list_now("/tags") is None


@given(st.text(alphabet="/.a\\\x00\n\x85-", max_size=12))
@settings(max_examples=300, deadline=None)
def test_host_paths_are_what_check_path_allows_and_joins(tmp_path_factory, path):
    """Host paths are remembered per driver path; whatever the path, the
    answer is check_path's, asked once or again, and a refused path is
    refused every time."""
    driver = FilesystemDriver(tmp_path_factory.getbasetemp() / "root")
    try:
        expected = os.path.join(driver.root, *check_path(path))
    except InvalidPath:
        for _ in range(2):
            with pytest.raises(InvalidPath):
                driver.stat_now(path)
        return
    for _ in range(2):
        assert driver._host_path(path) == expected

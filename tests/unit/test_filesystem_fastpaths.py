"""The filesystem driver's fast paths give the same answers as the slow ones.

Small reads and stats answered on the reactor thread (nowait), listings of
large directories reused while unchanged, writeback started while writing,
and the reader's descriptor for sendfile.
"""

import os
import shutil
import time

import pytest
import pytest_twisted

from registryd.storage.drivers import nowait
from registryd.storage.drivers.filesystem import FilesystemDriver, _ListingCache
from registryd.storage.errors import PathNotFound


@pytest.fixture
def driver(tmp_path):
    return FilesystemDriver(str(tmp_path / "root"))


class CountingExecutor:
    """Counts calls that went to a thread."""

    def __init__(self, executor):
        self.executor = executor
        self.calls = 0

    def run(self, function, *args):
        self.calls += 1
        return self.executor.run(function, *args)


@pytest_twisted.ensureDeferred
async def test_small_reads_and_stats_agree_with_the_disk(driver, tmp_path):
    await driver.put_content("/a/link", b"sha256:" + b"0" * 64)
    for _ in range(3):  # cold (thread) and warm (reactor thread) alike
        assert await driver.get_content("/a/link") == b"sha256:" + b"0" * 64
        info = await driver.stat("/a/link")
        assert info.size == 71 and not info.is_dir
        assert (await driver.stat("/a")).is_dir
    for missing in ("/a/missing", "/a/link/below", "/nothing/at/all"):
        with pytest.raises(PathNotFound):
            await driver.get_content(missing)
        with pytest.raises(PathNotFound):
            await driver.stat(missing)
    with pytest.raises(PathNotFound):
        await driver.get_content("/a")  # a directory
    big = os.urandom(nowait.MAX_SIZE + 10)
    await driver.put_content("/a/big", big)
    assert await driver.get_content("/a/big") == big


@pytest_twisted.ensureDeferred
async def test_listings_are_reused_until_the_directory_changes(driver, tmp_path):
    base = tmp_path / "root" / "tags"
    base.mkdir(parents=True)
    names = [f"t{i:03d}" for i in range(30)]
    for name in names:
        (base / name).mkdir()
    past = time.time() - 60
    os.utime(base, (past, past))
    counting = CountingExecutor(driver._executor)
    driver._executor = counting

    assert await driver.list("/tags") == names
    assert counting.calls == 1
    listed = await driver.list("/tags")
    assert listed == names and counting.calls == 1 or not nowait.available()
    listed.append("mutated by a caller")
    assert await driver.list("/tags") == names  # callers get their own copy

    (base / "new").mkdir()  # changes the directory's times
    # Changed "just now" however busy the machine (a time ahead of the
    # clock, with nanoseconds): not kept (a coarse clock tick could hide a
    # second change), so the next listing reads the directory again.
    just_now = time.time_ns() + 3_600_000_000_123
    os.utime(base, ns=(just_now, just_now))
    assert await driver.list("/tags") == sorted(names + ["new"])
    calls = counting.calls
    assert await driver.list("/tags") == sorted(names + ["new"])
    assert counting.calls == calls + 1

    os.rmdir(base / "new")
    os.utime(base, (past, past + 1))
    assert await driver.list("/tags") == names
    shutil.rmtree(base)
    with pytest.raises(PathNotFound):
        await driver.list("/tags")


@pytest_twisted.ensureDeferred
async def test_small_listings_are_kept_too(driver, tmp_path):
    """A tags list of a few tags is answered from the kept listing, not by
    a thread's round trip (most of its cost), until the directory changes."""
    await driver.put_content("/few/a", b"")
    os.utime(tmp_path / "root" / "few", (0, 0))
    counting = CountingExecutor(driver._executor)
    driver._executor = counting
    assert await driver.list("/few") == ["a"]
    assert await driver.list("/few") == ["a"]
    assert counting.calls == 1 or not nowait.available()
    (tmp_path / "root" / "few" / "b").write_bytes(b"")
    assert await driver.list("/few") == ["a", "b"]


def test_kept_listings_are_bounded_by_directories_and_names(monkeypatch):
    monkeypatch.setattr(_ListingCache, "max_directories", 3)
    monkeypatch.setattr(_ListingCache, "max_names", 10)
    cache = _ListingCache()
    for index in range(5):
        cache.put(f"/d{index}", ("key", index), ["x"])
    assert list(cache._entries) == ["/d2", "/d3", "/d4"] and cache._names == 3
    cache.put("/big", ("key",), ["y"] * 9)  # 12 names: the oldest go
    assert list(cache._entries) == ["/d4", "/big"] and cache._names == 10
    cache.put("/huge", ("key",), ["z"] * 11)  # more than all: not kept
    assert "/huge" not in cache._entries and cache._names == 10
    cache.put("/big", None, ["y"])  # changed too recently: dropped
    assert list(cache._entries) == ["/d4"] and cache._names == 1


@pytest_twisted.ensureDeferred
async def test_writes_with_writeback_and_commit(driver, tmp_path, monkeypatch):
    from registryd.storage.drivers import filesystem

    monkeypatch.setattr(filesystem, "WRITEBACK_EVERY", 64 * 1024)
    started = []
    real = nowait.start_writeback
    monkeypatch.setattr(nowait, "start_writeback", lambda *a: started.append(a) or real(*a))
    data = os.urandom(1024 * 1024)
    writer = await driver.writer("/up/data")
    for offset in range(0, len(data), 100_000):
        await writer.write(data[offset : offset + 100_000])
    await writer.close()
    writer = await driver.writer("/up/data", append=True)
    await writer.write(b"tail")
    await writer.commit()
    assert (tmp_path / "root" / "up" / "data").read_bytes() == data + b"tail"
    assert started  # asked the kernel to start writing back
    offsets = [(offset, length) for _, offset, length in started]
    assert offsets[0][0] == 0
    for (offset, length), (following, _) in zip(offsets, offsets[1:]):
        assert following == offset + length  # contiguous ranges, none twice


@pytest_twisted.ensureDeferred
async def test_reader_offers_its_descriptor_until_closed(driver):
    await driver.put_content("/r/data", b"0123456789")
    reader = await driver.reader("/r/data", 4)
    fd = reader.fileno()
    assert os.pread(fd, 3, reader.offset) == b"456"
    await reader.close()
    with pytest.raises(ValueError):
        reader.fileno()


def age_tree(top, seconds=60):
    """Date every directory under ``top`` ``seconds`` back (with
    nanoseconds, as ext4 keeps them): settled, so walks may keep them."""
    past = time.time_ns() - seconds * 1_000_000_000 + 123
    for directory, _, _ in os.walk(top):
        os.utime(directory, ns=(past, past))


@pytest_twisted.ensureDeferred
async def test_walk_listings_are_stats_while_directories_are_unchanged(
    driver, tmp_path, monkeypatch
):
    """A walk (the catalog) lists thousands of small directories that rarely
    change: the second time, each costs one stat in the thread, and the
    listing kept from the first walk is answered, a copy per caller."""
    from registryd.storage.drivers import filesystem

    for path in ("/r/a/x", "/r/b/y", "/r/b/z"):
        await driver.put_content(path, b"")
    age_tree(tmp_path / "root")
    answers = []
    real = filesystem._list_many
    monkeypatch.setattr(
        filesystem, "_list_many", lambda wanted: answers.append(real(wanted)) or answers[-1]
    )
    wanted = ["/r", "/r/a", "/r/b", "/r/missing", "/r/a/x"]
    expected = [["a", "b"], ["x"], ["y", "z"], None, None]
    assert await driver.list_many(wanted) == expected
    listed = await driver.list_many(wanted)
    assert listed == expected
    assert answers[-1][:3] == [filesystem._UNCHANGED] * 3
    listed[0].append("mutated by a caller")
    assert await driver.list_many(wanted) == expected

    (tmp_path / "root" / "r" / "b" / "new").write_bytes(b"")
    assert (await driver.list_many(["/r/b"])) == [["new", "y", "z"]]
    os.unlink(tmp_path / "root" / "r" / "a" / "x")
    assert (await driver.list_many(["/r/a", "/r"])) == [[], ["a", "b"]]
    shutil.rmtree(tmp_path / "root" / "r" / "a")
    assert (await driver.list_many(["/r/a", "/r"])) == [None, ["b"]]


def test_a_listing_is_kept_once_its_directory_times_are_past_the_clock_tick(tmp_path):
    """Two changes within one tick of the filesystem's clock can leave a
    directory's times as the first set them, so a listing taken between
    them is kept only once that tick is surely over: 0.1 s for times with
    nanoseconds (the kernel's tick is 10 ms at most), 2 s for times that
    may count whole seconds or milliseconds."""
    from registryd.storage.drivers.filesystem import _settled

    directory = tmp_path / "d"
    directory.mkdir()
    now = time.time()

    def settled_with_mtime(nanoseconds):
        os.utime(directory, ns=(nanoseconds, nanoseconds))
        return _settled(os.stat(directory), now)

    whole_second = int(now - 1) * 1_000_000_000
    assert settled_with_mtime(int((now - 0.5) * 1e9) // 1000 * 1000 + 7)
    assert not settled_with_mtime(int((now - 0.05) * 1e9) // 1000 * 1000 + 7)
    assert not settled_with_mtime(whole_second)
    assert not settled_with_mtime(whole_second + 1_000_000)  # milliseconds
    assert settled_with_mtime(whole_second - 2_000_000_000)
    assert not settled_with_mtime(int((now + 30) * 1e9) + 7)  # another node's clock ahead

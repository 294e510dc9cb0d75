"""The storage driver contract, as one test suite that every driver runs.

A driver's test module subclasses :class:`DriverSuite` (the name does not
start with ``Test``, so pytest does not collect the base class itself) and
provides a ``driver`` fixture returning a fresh, empty driver::

    class TestS3Driver(DriverSuite):
        @pytest_twisted.async_yield_fixture
        async def driver(self):
            driver = ...  # a fresh bucket or prefix
            yield driver
            ...           # clean up

The suite only uses the public interface, so a new backend passing it
behaves, as far as the registry model can tell, like the ones before it.
Behaviour the interface leaves open (whether empty directories survive a
delete, what a listing of a never-written root is) is not tested here.
"""

import contextlib
import hashlib
import os
import time

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface.verify import verifyObject

from registryd.interfaces import (
    IImmediateMetadata,
    IObservedWriter,
    IStorageDriver,
    IStorageReader,
    IStorageWriter,
)
from registryd.storage.errors import InvalidOffset, InvalidPath, PathNotFound, StorageError

MiB = 1024 * 1024

BAD_PATHS = [
    "",
    "relative",
    "relative/path",
    "/a/../b",
    "/..",
    "/a/.",
    "/./a",
    "//a",
    "/a//b",
    "/a/",
    "/a\x00b",
    "/a\\b",
    "/tag\n",  # a newline (a tag once let in as secret%0a)
    "/a\rb",
    "/a\tb",
    "/a\x1fb",
    "/a\x7fb",
    "/a\x85b",
    b"/bytes",
]

# Every IStorageDriver method, called with the bad path in each path argument.
PATH_CALLS = {
    "get_content": lambda driver, path: driver.get_content(path),
    "put_content": lambda driver, path: driver.put_content(path, b"x"),
    "reader": lambda driver, path: driver.reader(path),
    "reader-offset": lambda driver, path: driver.reader(path, 1),
    "writer": lambda driver, path: driver.writer(path),
    "writer-append": lambda driver, path: driver.writer(path, append=True),
    "stat": lambda driver, path: driver.stat(path),
    "list": lambda driver, path: driver.list(path),
    "move-source": lambda driver, path: driver.move(path, "/moved"),
    "move-destination": lambda driver, path: driver.move("/good", path),
    "delete": lambda driver, path: driver.delete(path),
    "redirect_url": lambda driver, path: driver.redirect_url(path, "GET"),
}


async def read_all(reader, piece):
    """Read ``reader`` to its end in ``piece``-sized reads; the bytes and the
    number of reads."""
    chunks = []
    while True:
        chunk = await reader.read(piece)
        assert type(chunk) is bytes
        assert len(chunk) <= piece
        if not chunk:
            return b"".join(chunks), len(chunks)
        chunks.append(chunk)


class DriverSuite:
    """Tests of IStorageDriver semantics; subclasses provide ``driver``."""

    # Interfaces

    @pytest_twisted.ensureDeferred
    async def test_provides_interfaces(self, driver):
        assert verifyObject(IStorageDriver, driver)
        assert isinstance(driver.name, str) and driver.name
        await driver.put_content("/file", b"data")
        reader = await driver.reader("/file")
        writer = await driver.writer("/other")
        try:
            assert verifyObject(IStorageReader, reader)
            assert verifyObject(IStorageWriter, writer)
        finally:
            await reader.close()
            await writer.close()

    # Whole files

    @pytest_twisted.ensureDeferred
    async def test_put_get_roundtrip(self, driver):
        content = bytes(range(256)) * 3
        await driver.put_content("/docker/registry/v2/blobs/data", content)
        got = await driver.get_content("/docker/registry/v2/blobs/data")
        assert type(got) is bytes
        assert got == content

    @pytest_twisted.ensureDeferred
    async def test_put_empty(self, driver):
        await driver.put_content("/empty", b"")
        assert await driver.get_content("/empty") == b""
        assert (await driver.stat("/empty")).size == 0

    @pytest_twisted.ensureDeferred
    async def test_put_overwrites(self, driver):
        await driver.put_content("/a/link", b"sha256:" + b"0" * 64)
        await driver.put_content("/a/link", b"short")
        assert await driver.get_content("/a/link") == b"short"

    @pytest_twisted.ensureDeferred
    async def test_put_copies_mutable_content(self, driver):
        content = bytearray(b"before")
        put = driver.put_content("/file", content)
        content[:] = b"AFTER!"
        await put
        assert await driver.get_content("/file") == b"before"
        await driver.put_content("/view", memoryview(b"viewed"))
        assert await driver.get_content("/view") == b"viewed"

    @pytest_twisted.ensureDeferred
    async def test_get_missing(self, driver):
        await driver.put_content("/dir/file", b"x")
        for path in ["/missing", "/dir/missing", "/missing/file", "/dir/file/below", "/dir", "/"]:
            with pytest.raises(PathNotFound) as caught:
                await driver.get_content(path)
            assert caught.value.path == path

    @pytest_twisted.ensureDeferred
    async def test_put_where_a_directory_or_file_is_in_the_way(self, driver):
        await driver.put_content("/dir/file", b"x")
        for path in ["/dir", "/dir/file/below", "/"]:
            with pytest.raises(StorageError):
                await driver.put_content(path, b"y")
            with pytest.raises(StorageError):
                writer = await driver.writer(path)
                await writer.cancel()
        assert await driver.get_content("/dir/file") == b"x"
        assert await driver.list("/dir") == ["file"]

    @pytest_twisted.ensureDeferred
    async def test_a_deleted_directory_can_become_a_file_and_back(self, driver):
        """What a driver remembers about directories (the s3 driver does)
        follows its own deletes and writes."""
        await driver.put_content("/a/b/c", b"x")
        await driver.delete("/a/b")
        await driver.put_content("/a/b", b"a file now")
        for path in ["/a/b/c", "/a/b/d/e"]:
            with pytest.raises(StorageError):
                await driver.put_content(path, b"y")
            with pytest.raises(StorageError):
                writer = await driver.writer(path)
                await writer.cancel()
        assert await driver.get_content("/a/b") == b"a file now"
        await driver.delete("/a/b")
        await driver.put_content("/a/b/c", b"a directory again")
        with pytest.raises(StorageError):
            await driver.put_content("/a/b", b"y")
        assert await driver.list("/a/b") == ["c"]

    # Paths

    @pytest.mark.parametrize("call", sorted(PATH_CALLS))
    @pytest_twisted.ensureDeferred
    async def test_invalid_paths_rejected(self, driver, call):
        await driver.put_content("/good", b"kept")
        for path in BAD_PATHS:
            result = PATH_CALLS[call](driver, path)
            assert isinstance(result, defer.Deferred), f"{call}({path!r}) raised synchronously"
            with pytest.raises(InvalidPath):
                await result
                pytest.fail(f"{call}({path!r}) accepted an invalid path")
        assert await driver.get_content("/good") == b"kept"
        assert await driver.list("/") == ["good"]

    @pytest_twisted.ensureDeferred
    async def test_redirect_url(self, driver):
        await driver.put_content("/blob", b"x")
        url = await driver.redirect_url("/blob", "GET")
        assert url is None or isinstance(url, str)

    # Readers

    @pytest_twisted.ensureDeferred
    async def test_reader_from_start(self, driver):
        content = os.urandom(10_000)
        await driver.put_content("/blob", content)
        reader = await driver.reader("/blob")
        assert (reader.size, reader.offset) == (10_000, 0)
        assert await reader.read(0) == b""
        first = await reader.read(4096)
        assert first == content[:4096]
        assert reader.offset == 4096
        rest, _ = await read_all(reader, 4096)
        assert first + rest == content
        assert reader.offset == reader.size == 10_000
        assert await reader.read(4096) == b""  # still at the end
        await reader.close()

    @pytest_twisted.ensureDeferred
    async def test_reader_mid_file_in_pieces(self, driver):
        content = bytes(range(256)) * 40
        await driver.put_content("/blob", content)
        reader = await driver.reader("/blob", 5000)
        assert (reader.size, reader.offset) == (len(content), 5000)
        data, reads = await read_all(reader, 999)
        assert data == content[5000:]
        assert reads == -(-(len(content) - 5000) // 999)
        await reader.close()

    @pytest_twisted.ensureDeferred
    async def test_reader_offsets_at_and_past_end(self, driver):
        await driver.put_content("/blob", b"0123456789")
        reader = await driver.reader("/blob", 10)
        assert reader.offset == reader.size == 10
        assert await reader.read(100) == b""
        await reader.close()
        for offset in [11, 1000, -1]:
            with pytest.raises(InvalidOffset) as caught:
                await driver.reader("/blob", offset)
            assert (caught.value.path, caught.value.offset) == ("/blob", offset)

    @pytest_twisted.ensureDeferred
    async def test_reader_missing(self, driver):
        await driver.put_content("/dir/file", b"x")
        for path in ["/missing", "/dir", "/dir/file/below", "/"]:
            with pytest.raises(PathNotFound):
                await driver.reader(path)

    @pytest_twisted.ensureDeferred
    async def test_reader_closed(self, driver):
        await driver.put_content("/blob", b"x")
        reader = await driver.reader("/blob")
        await reader.close()
        await reader.close()  # idempotent
        with pytest.raises(StorageError):
            await reader.read(1)

    # Writers

    @pytest_twisted.ensureDeferred
    async def test_writer_new_file(self, driver):
        writer = await driver.writer("/uploads/u1/data")
        assert writer.size == 0
        pending = writer.write(b"hello, ")
        assert writer.size == 7  # counted when submitted, not when written
        await pending
        await writer.write(bytearray(b"world"))
        assert writer.size == 12
        await writer.commit()
        assert await driver.get_content("/uploads/u1/data") == b"hello, world"
        assert (await driver.stat("/uploads/u1/data")).size == 12

    @pytest_twisted.ensureDeferred
    async def test_writer_replaces_existing_file(self, driver):
        await driver.put_content("/file", b"a much longer old content")
        writer = await driver.writer("/file")
        assert writer.size == 0
        await writer.write(b"new")
        await writer.close()
        assert await driver.get_content("/file") == b"new"

    @pytest_twisted.ensureDeferred
    async def test_writer_append_resumes(self, driver):
        first = await driver.writer("/upload", append=True)  # missing: starts empty
        assert first.size == 0
        await first.write(b"abc")
        await first.close()
        second = await driver.writer("/upload", append=True)
        assert second.size == 3
        await second.write(b"def")
        assert second.size == 6
        await second.commit()
        assert await driver.get_content("/upload") == b"abcdef"

    @pytest_twisted.ensureDeferred
    async def test_writes_without_waiting_apply_in_order(self, driver):
        writer = await driver.writer("/upload")
        pieces = [bytes([i]) * (1000 + i) for i in range(100)]
        pending = [writer.write(piece) for piece in pieces]
        assert writer.size == sum(map(len, pieces))
        await defer.gatherResults(pending)
        await writer.commit()
        assert await driver.get_content("/upload") == b"".join(pieces)

    @pytest_twisted.ensureDeferred
    async def test_close_waits_for_queued_writes(self, driver):
        writer = await driver.writer("/upload")
        pieces = [os.urandom(64 * 1024) for _ in range(16)]
        for piece in pieces:
            writer.write(piece)  # not waited for
        await writer.close()
        assert await driver.get_content("/upload") == b"".join(pieces)

    @pytest_twisted.ensureDeferred
    async def test_cancelled_write_is_still_applied(self, driver):
        # klein cancels a handler's Deferred when the client goes away; the
        # bytes received so far must stay so the upload can be resumed.
        writer = await driver.writer("/upload")
        pending = writer.write(b"x" * 100_000)
        pending.addErrback(lambda failure: failure.trap(defer.CancelledError))
        pending.cancel()
        await writer.close()
        assert await driver.get_content("/upload") == b"x" * 100_000

    @pytest_twisted.ensureDeferred
    async def test_observed_writes_are_written_then_observed_in_order(self, driver):
        """A writer with IObservedWriter hands each piece of ``write_observed``
        to its observer after writing it, in order with plain writes, and
        ``drain`` waits for the observers too; a closed writer refuses
        without observing.  One without it has no such method for a
        caller to find by accident."""
        writer = await driver.writer("/upload")
        if not IObservedWriter.providedBy(writer):
            assert not hasattr(writer, "write_observed")
            await writer.close()
            return
        assert verifyObject(IObservedWriter, writer)
        observed = []
        pieces = [os.urandom(1000 + i) for i in range(40)]
        for index, piece in enumerate(pieces):
            if index % 3:
                writer.write_observed(bytearray(piece), observed.append)  # not waited for
            else:
                writer.write(piece)
        assert writer.size == sum(map(len, pieces))
        await writer.drain()
        assert observed == [piece for index, piece in enumerate(pieces) if index % 3]
        assert all(type(piece) is bytes for piece in observed)
        await writer.close()
        with pytest.raises(StorageError):
            await writer.write_observed(b"late", observed.append)
        assert len(observed) == len(pieces) - len(pieces[::3])
        assert await driver.get_content("/upload") == b"".join(pieces)

    @pytest_twisted.ensureDeferred
    async def test_writer_cancel_removes_file(self, driver):
        writer = await driver.writer("/dir/upload")
        await writer.write(b"discarded")
        await writer.cancel()
        with pytest.raises(PathNotFound):
            await driver.stat("/dir/upload")
        with pytest.raises(PathNotFound):
            await driver.get_content("/dir/upload")

    @pytest_twisted.ensureDeferred
    async def test_writer_cancel_of_appending_writer(self, driver):
        await driver.put_content("/upload", b"old")
        writer = await driver.writer("/upload", append=True)
        await writer.write(b"new")
        await writer.cancel()
        with pytest.raises(PathNotFound):
            await driver.get_content("/upload")

    @pytest_twisted.ensureDeferred
    async def test_writer_closed(self, driver):
        writer = await driver.writer("/upload")
        await writer.write(b"x")
        await writer.commit()
        for operation in [lambda: writer.write(b"y"), writer.commit, writer.cancel]:
            with pytest.raises(StorageError):
                await operation()
        await writer.close()  # closing again is harmless
        assert await driver.get_content("/upload") == b"x"

    # stat

    @pytest_twisted.ensureDeferred
    async def test_stat(self, driver):
        before = time.time()
        await driver.put_content("/dir/sub/file", b"12345")
        info = await driver.stat("/dir/sub/file")
        assert (info.path, info.size, info.is_dir) == ("/dir/sub/file", 5, False)
        assert before - 60 < info.modified < time.time() + 60
        for path in ["/dir", "/dir/sub", "/"]:
            info = await driver.stat(path)
            assert (info.path, info.size, info.is_dir) == (path, 0, True)
        for path in ["/missing", "/dir/missing", "/dir/sub/file/below"]:
            with pytest.raises(PathNotFound):
                await driver.stat(path)

    @pytest_twisted.ensureDeferred
    async def test_immediate_answers_are_the_deferred_ones(self, driver):
        """A driver that answers some stats and listings at once
        (IImmediateMetadata) answers them as its Deferred methods do, or
        not at all (None); one that does not declare it has no such
        methods for a caller to find by accident."""
        if not IImmediateMetadata.providedBy(driver):
            assert not hasattr(driver, "stat_now") and not hasattr(driver, "list_now")
            return
        for path in ["/r/b", "/r/a", "/r/c/x"]:
            await driver.put_content(path, b"12345")
        for path in ["/r", "/r/a", "/r/c", "/r/c/x", "/"]:
            now = driver.stat_now(path)
            assert now is None or now == await driver.stat(path), path
        for path in ["/r", "/r/c", "/"]:
            now = driver.list_now(path)
            assert now is None or now == await driver.list(path), path
        for path in ["/missing", "/r/missing", "/r/a/below"]:
            for answer_now in (driver.stat_now, driver.list_now):
                with contextlib.suppress(PathNotFound):
                    assert answer_now(path) is None, path
        for path in BAD_PATHS:
            for answer_now in (driver.stat_now, driver.list_now):
                with pytest.raises(InvalidPath):
                    answer_now(path)

    # list

    @pytest_twisted.ensureDeferred
    async def test_list(self, driver):
        for path in ["/r/b", "/r/a", "/r/c/x", "/r/c/y/z", "/r/_layers/l", "/top"]:
            await driver.put_content(path, b"x")
        assert await driver.list("/r") == ["_layers", "a", "b", "c"]
        assert await driver.list("/r/c") == ["x", "y"]
        assert await driver.list("/r/c/y") == ["z"]
        assert await driver.list("/") == ["r", "top"]
        for path in ["/missing", "/r/missing", "/r/a", "/top", "/r/a/below"]:
            with pytest.raises(PathNotFound) as caught:
                await driver.list(path)
            assert caught.value.path == path

    @pytest_twisted.ensureDeferred
    async def test_list_many(self, driver):
        for path in ["/r/b", "/r/a", "/r/c/x", "/top"]:
            await driver.put_content(path, b"x")
        listings = await driver.list_many(["/r", "/missing", "/r/c", "/top", "/"])
        assert listings == [["a", "b", "c"], None, ["x"], None, ["r", "top"]]
        assert await driver.list_many([]) == []

    @pytest_twisted.ensureDeferred
    async def test_list_many_refuses_invalid_paths(self, driver):
        with pytest.raises(InvalidPath):
            await driver.list_many(["/ok", "/../escape"])

    # move

    @pytest_twisted.ensureDeferred
    async def test_move_replaces_destination(self, driver):
        await driver.put_content("/uploads/u/data", b"new content")
        await driver.put_content("/blobs/data", b"old")
        await driver.move("/uploads/u/data", "/blobs/data")
        assert await driver.get_content("/blobs/data") == b"new content"
        with pytest.raises(PathNotFound):
            await driver.get_content("/uploads/u/data")

    @pytest_twisted.ensureDeferred
    async def test_move_creates_parents(self, driver):
        await driver.put_content("/source", b"content")
        await driver.move("/source", "/x/y/z/destination")
        assert await driver.get_content("/x/y/z/destination") == b"content"
        assert await driver.list("/x/y/z") == ["destination"]
        assert await driver.list("/") == ["x"]

    @pytest_twisted.ensureDeferred
    async def test_move_missing_source(self, driver):
        await driver.put_content("/destination", b"kept")
        with pytest.raises(PathNotFound) as caught:
            await driver.move("/missing", "/destination")
        assert caught.value.path == "/missing"
        assert await driver.get_content("/destination") == b"kept"

    @pytest_twisted.ensureDeferred
    async def test_move_onto_itself(self, driver):
        await driver.put_content("/file", b"content")
        await driver.move("/file", "/file")
        assert await driver.get_content("/file") == b"content"

    # delete

    @pytest_twisted.ensureDeferred
    async def test_delete_file(self, driver):
        await driver.put_content("/dir/file", b"x")
        await driver.put_content("/dir/sibling", b"y")
        await driver.delete("/dir/file")
        with pytest.raises(PathNotFound):
            await driver.get_content("/dir/file")
        assert await driver.list("/dir") == ["sibling"]

    @pytest_twisted.ensureDeferred
    async def test_delete_tree(self, driver):
        for path in ["/repo/a", "/repo/b/c", "/repo/b/d/e", "/other"]:
            await driver.put_content(path, b"x")
        await driver.delete("/repo")
        for path in ["/repo", "/repo/b", "/repo/b/d/e"]:
            with pytest.raises(PathNotFound):
                await driver.stat(path)
        assert await driver.list("/") == ["other"]

    @pytest_twisted.ensureDeferred
    async def test_delete_missing(self, driver):
        await driver.put_content("/file", b"x")
        for path in ["/missing", "/missing/below", "/file/below"]:
            with pytest.raises(PathNotFound) as caught:
                await driver.delete(path)
            assert caught.value.path == path
        assert await driver.get_content("/file") == b"x"

    # Streams and concurrency

    @pytest_twisted.ensureDeferred
    async def test_large_stream_roundtrip(self, driver):
        """64 MiB written in 1 MiB pieces and read back in pieces of
        another size, compared by sha256: the path a layer push and pull take."""
        block = os.urandom(MiB)
        written = hashlib.sha256()
        writer = await driver.writer("/blobs/large")
        for index in range(64):
            piece = index.to_bytes(4, "big") + block[4:]  # each piece differs
            written.update(piece)
            await writer.write(piece)
        assert writer.size == 64 * MiB
        await writer.commit()

        reader = await driver.reader("/blobs/large")
        assert reader.size == 64 * MiB
        read = hashlib.sha256()
        while chunk := await reader.read(MiB + 12345):
            read.update(chunk)
        assert reader.offset == 64 * MiB
        await reader.close()
        assert read.hexdigest() == written.hexdigest()

    @pytest_twisted.ensureDeferred
    async def test_concurrent_put_content_is_atomic(self, driver):
        """Concurrent writers of one path leave one complete value, and
        readers meanwhile see only complete values."""
        old = b"old" * 1000
        values = [bytes([index]) * (256 * 1024 + index) for index in range(8)]
        await driver.put_content("/tags/latest/link", old)
        puts, gets = [], []
        for value in values:
            puts.append(driver.put_content("/tags/latest/link", value))
            gets.append(driver.get_content("/tags/latest/link"))
        await defer.gatherResults(puts)
        for got in await defer.gatherResults(gets):
            assert got == old or got in values
        assert await driver.get_content("/tags/latest/link") in values
        assert await driver.list("/tags/latest") == ["link"]  # no temporary files left

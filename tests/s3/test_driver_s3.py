"""The s3 driver against a real S3 store (OpenStack Swift's s3api): the
shared driver suite, plus what is the s3 driver's own: multipart writers
and resumed appends, the key layout, moves and deletes at scale."""

import hashlib
import os
import time

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from registryd.interfaces import IStorageDriver
from registryd.storage.drivers import create_driver
from registryd.storage.drivers import s3 as s3_module
from registryd.storage.drivers.s3 import S3Driver
from registryd.storage.drivers.s3_client import S3Error
from registryd.storage.drivers.s3_parameters import MIN_CHUNK_SIZE
from registryd.storage.drivers.s3_streams import TAIL_SUFFIX
from registryd.storage.errors import PathNotFound, StorageError, StorageRefused
from tests.drivers.driver_suite import DriverSuite, MiB


def make_driver(swift, prefix, **extra):
    return create_driver("s3", swift.parameters(prefix, **extra))


@pytest.fixture
def driver(swift, prefix):
    driver = make_driver(swift, prefix)
    yield driver
    driver.close()


class TestS3Driver(DriverSuite):
    """The shared suite; the module's ``driver`` fixture provides a driver
    on a fresh key prefix of the session's bucket."""


def test_made_by_plugin(driver):
    assert isinstance(driver, S3Driver)
    assert verifyObject(IStorageDriver, driver)
    assert driver.name == "s3"


async def in_thread(function, *args):
    """Blocking botocore checks, off the reactor thread."""
    from twisted.internet.threads import deferToThread

    return await deferToThread(function, *args)


def sha(data):
    return hashlib.sha256(data).hexdigest()


# Layout


@pytest_twisted.ensureDeferred
async def test_keys_follow_distribution_layout(swift, prefix):
    """Keys are <rootdirectory>/<path> without the leading slash, as
    Distribution's s3 driver names them, so both can share a bucket."""
    driver = make_driver(swift, prefix, rootdirectory=f"/{prefix}/deep/")
    try:
        await driver.put_content("/docker/registry/v2/repositories/a/_layers/link", b"x")
        assert await in_thread(swift.keys, prefix) == [
            f"{prefix}/deep/docker/registry/v2/repositories/a/_layers/link"
        ]
        assert await driver.list("/") == ["docker"]
    finally:
        driver.close()


# Writers


@pytest_twisted.ensureDeferred
async def test_writer_streams_parts_while_writing(swift, prefix):
    """Parts go to the store as the bytes arrive: memory holds at most
    about one part, and nothing is visible at the path before commit."""
    driver = make_driver(swift, prefix, chunksize=MIN_CHUNK_SIZE)
    try:
        data = os.urandom(12 * MiB)
        writer = await driver.writer("/uploads/u/data")
        largest_buffer = 0
        for start in range(0, len(data), MiB):
            await writer.write(data[start : start + MiB])
            largest_buffer = max(largest_buffer, len(writer._unsent))
        assert largest_buffer < MIN_CHUNK_SIZE + MiB
        uploads = await in_thread(swift.multipart_uploads, prefix)
        assert [key for key, _ in uploads] == [f"{prefix}/uploads/u/data"]
        listed = await in_thread(
            lambda: swift.client.list_parts(
                Bucket="registryd-tests", Key=uploads[0][0], UploadId=uploads[0][1]
            )
        )
        assert [part["Size"] for part in listed["Parts"]] == [MIN_CHUNK_SIZE, MIN_CHUNK_SIZE]
        with pytest.raises(PathNotFound):
            await driver.stat("/uploads/u/data")
        await writer.commit()
        assert sha(await driver.get_content("/uploads/u/data")) == sha(data)
        assert await in_thread(swift.multipart_uploads, prefix) == []
        assert await in_thread(swift.keys, prefix) == [f"{prefix}/uploads/u/data"]
    finally:
        driver.close()


@pytest_twisted.ensureDeferred
async def test_appends_alternate_between_nodes(swift, prefix):
    """A resumable upload continued by two registryd nodes in turn, each
    append ending with a short tail: every writer finds the size where the
    other left it, and the committed file is every byte in order.  (This
    passes through all states: one small object, a committed object
    copied into a multipart upload, tails, full parts, Swift's missing
    ETags of copied parts.)"""
    nodes = [make_driver(swift, prefix, chunksize=MIN_CHUNK_SIZE) for _ in range(2)]
    try:
        pieces = [os.urandom(MIN_CHUNK_SIZE // 2) for _ in range(6)]
        expected = 0
        for index, piece in enumerate(pieces):
            writer = await nodes[index % 2].writer("/uploads/u/data", append=True)
            assert writer.size == expected
            await writer.write(piece)
            expected += len(piece)
            assert writer.size == expected
            await writer.close()
        writer = await nodes[0].writer("/uploads/u/data", append=True)
        assert writer.size == expected
        await writer.commit()
        stored = await nodes[1].get_content("/uploads/u/data")
        assert sha(stored) == sha(b"".join(pieces))
        # Nothing left behind: no multipart upload, no tail object.
        assert await in_thread(swift.multipart_uploads, prefix) == []
        assert await in_thread(swift.keys, prefix) == [f"{prefix}/uploads/u/data"]
    finally:
        for node in nodes:
            node.close()


@pytest_twisted.ensureDeferred
async def test_tail_objects_are_not_listed(swift, prefix):
    driver = make_driver(swift, prefix, chunksize=MIN_CHUNK_SIZE)
    try:
        writer = await driver.writer("/u/data")
        await writer.write(os.urandom(MIN_CHUNK_SIZE + 1000))
        await writer.close()
        assert f"{prefix}/u/data{TAIL_SUFFIX}" in await in_thread(swift.keys, prefix)
        await driver.put_content("/u/startedat", b"now")
        assert await driver.list("/u") == ["startedat"]
        await driver.delete("/u")
        assert await in_thread(swift.keys, prefix) == []
        assert await in_thread(swift.multipart_uploads, prefix) == []
    finally:
        driver.close()


@pytest_twisted.ensureDeferred
async def test_abandoned_writer_loses_only_uncounted_bytes(swift, prefix):
    """A node that dies mid-append: the next writer's size counts exactly
    the bytes the store kept, so the client resumes from the truth."""
    driver = make_driver(swift, prefix, chunksize=MIN_CHUNK_SIZE)
    try:
        data = os.urandom(MIN_CHUNK_SIZE + 2 * MiB)
        writer = await driver.writer("/u/data", append=True)
        await writer.write(data)  # one part uploaded, 2 MiB only in memory
        # ...and the writer is never closed.
        resumed = await driver.writer("/u/data", append=True)
        assert resumed.size == MIN_CHUNK_SIZE
        await resumed.write(data[MIN_CHUNK_SIZE:])
        await resumed.commit()
        assert sha(await driver.get_content("/u/data")) == sha(data)
    finally:
        driver.close()


@pytest.mark.parametrize("abandoned", [False, True])
@pytest_twisted.ensureDeferred
async def test_upload_without_parts_holds_nothing(swift, prefix, monkeypatch, abandoned):
    """A multipart upload whose first part has not arrived -- a writer is
    uploading it right now, or failed or died doing so -- does not hide
    the committed file; once clearly abandoned it is aborted."""
    if abandoned:
        monkeypatch.setattr(s3_module, "ABANDONED_AFTER", -3600)
    driver = make_driver(swift, prefix)
    try:
        await driver.put_content("/u/data", b"committed")
        key = f"{prefix}/u/data"
        await in_thread(
            lambda: swift.client.create_multipart_upload(Bucket="registryd-tests", Key=key)
        )
        writer = await driver.writer("/u/data", append=True)
        assert writer.size == len(b"committed")
        await writer.write(b" and more")
        await writer.commit()
        assert await driver.get_content("/u/data") == b"committed and more"
        left = await in_thread(swift.multipart_uploads, prefix)
        assert len(left) == (0 if abandoned else 1)
        await driver.delete("/u")  # as when the registry removes an upload
        assert await in_thread(swift.multipart_uploads, prefix) == []
    finally:
        driver.close()


@pytest_twisted.ensureDeferred
async def test_reactor_not_blocked_while_streaming(swift, prefix):
    """A LoopingCall keeps ticking while parts upload and download."""
    from twisted.internet import reactor, task

    driver = make_driver(swift, prefix, chunksize=MIN_CHUNK_SIZE)
    ticks = []
    loop = task.LoopingCall(lambda: ticks.append(time.monotonic()))
    loop.clock = reactor
    loop.start(0.005)
    try:
        data = os.urandom(12 * MiB)
        writer = await driver.writer("/blob")
        for start in range(0, len(data), 2 * MiB):
            await writer.write(data[start : start + 2 * MiB])
        await writer.commit()
        reader = await driver.reader("/blob")
        read = bytearray()
        while chunk := await reader.read(MiB):
            read += chunk
        await reader.close()
    finally:
        loop.stop()
        driver.close()
    assert sha(bytes(read)) == sha(data)
    gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
    assert len(ticks) > 10
    assert max(gaps) < 0.25, f"reactor stalled for {max(gaps):.3f}s"


# Readers


@pytest_twisted.ensureDeferred
async def test_reader_reopens_a_broken_connection(driver):
    data = os.urandom(3 * MiB)
    await driver.put_content("/blob", data)
    reader = await driver.reader("/blob", 1000)
    first = await reader.read(MiB)
    reader._body.close()  # the connection to the store breaks
    rest = bytearray()
    while chunk := await reader.read(MiB):
        rest += chunk
    await reader.close()
    assert first + bytes(rest) == data[1000:]


# Moves and deletes


@pytest_twisted.ensureDeferred
async def test_large_move_is_a_multipart_copy(swift, prefix):
    driver = make_driver(
        swift,
        prefix,
        multipartcopythresholdsize=MIN_CHUNK_SIZE,
        multipartcopychunksize=MIN_CHUNK_SIZE,
    )
    try:
        data = os.urandom(12 * MiB)
        writer = await driver.writer("/uploads/u/data")
        await writer.write(data)
        await writer.commit()
        await driver.move("/uploads/u/data", "/blobs/sha256/ab/data")
        head = await in_thread(
            lambda: swift.client.head_object(
                Bucket="registryd-tests", Key=f"{prefix}/blobs/sha256/ab/data"
            )
        )
        assert head["ETag"].strip('"').endswith("-2")  # two copied parts
        assert sha(await driver.get_content("/blobs/sha256/ab/data")) == sha(data)
        with pytest.raises(PathNotFound):
            await driver.stat("/uploads/u/data")
    finally:
        driver.close()


@pytest_twisted.ensureDeferred
async def test_moving_a_directory_is_refused(driver):
    await driver.put_content("/dir/file", b"x")
    with pytest.raises(StorageError) as caught:
        await driver.move("/dir", "/elsewhere")
    assert "directories" in str(caught.value)
    assert await driver.get_content("/dir/file") == b"x"


@pytest_twisted.ensureDeferred
async def test_delete_is_batched_and_aborts_uploads(swift, prefix, monkeypatch):
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 4)
    driver = make_driver(swift, prefix)
    calls = []
    driver._caller.client.meta.events.register(
        "before-call.s3.DeleteObjects", lambda **kwargs: calls.append(1)
    )
    try:
        for index in range(10):
            await driver.put_content(f"/tree/{index % 3}/file{index}", b"x")
        key = f"{prefix}/tree/upload"
        await in_thread(
            lambda: swift.client.create_multipart_upload(Bucket="registryd-tests", Key=key)
        )
        await driver.put_content("/kept", b"y")
        await driver.delete("/tree")
        assert await in_thread(swift.keys, prefix) == [f"{prefix}/kept"]
        assert await in_thread(swift.multipart_uploads, prefix) == []
        assert len(calls) == 3  # 10 keys, 4 per request
    finally:
        driver.close()


@pytest_twisted.ensureDeferred
async def test_listings_are_paginated(driver, monkeypatch):
    monkeypatch.setattr(driver, "list_page_size", 3)
    names = [f"file{index:02d}" for index in range(8)] + ["dir-a", "dir-b"]
    for name in names:
        path = f"/d/{name}/x" if name.startswith("dir") else f"/d/{name}"
        await driver.put_content(path, b"x")
    assert await driver.list("/d") == sorted(names)
    await driver.delete("/d")
    with pytest.raises(PathNotFound):
        await driver.stat("/d")


# Redirects


@pytest_twisted.ensureDeferred
async def test_redirect_urls_are_presigned(driver):
    import urllib.request

    await driver.put_content("/blobs/data", b"presigned content")
    url = await driver.redirect_url("/blobs/data", "GET")
    assert "X-Amz-Signature=" in url

    def fetch(method):
        with urllib.request.urlopen(
            urllib.request.Request(url if method == "GET" else head_url, method=method), timeout=10
        ) as response:
            return response.status, response.read(), response.headers.get("Content-Length")

    head_url = await driver.redirect_url("/blobs/data", "HEAD")
    assert await in_thread(fetch, "GET") == (200, b"presigned content", "17")
    status, body, length = await in_thread(fetch, "HEAD")
    assert (status, body, length) == (200, b"", "17")
    assert await driver.redirect_url("/blobs/data", "DELETE") is None
    assert await driver.redirect_url("/", "GET") is None


# Credentials and options


@pytest_twisted.ensureDeferred
async def test_credentials_from_the_environment(swift, prefix, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", swift.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", swift.secret_key)
    parameters = swift.parameters(prefix)
    del parameters["accesskey"], parameters["secretkey"]
    driver = create_driver("s3", parameters)
    try:
        await driver.put_content("/file", b"by environment")
        assert await driver.get_content("/file") == b"by environment"
    finally:
        driver.close()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    driver = create_driver("s3", parameters)
    try:
        # Wrong credentials refuse every key: a named, retryable refusal of
        # the store as a whole (a 503 for clients), not a missing file.
        with pytest.raises(StorageRefused) as caught:
            await driver.get_content("/file")
        assert str(caught.value).startswith("storage permission denied (S3 "), str(caught.value)
        assert str(caught.value).endswith(" in S3 get_object /file")
    finally:
        driver.close()


@pytest_twisted.ensureDeferred
async def test_encrypt_asks_for_server_side_encryption(swift, prefix):
    """Swift has no server-side encryption: the request for it is refused
    by name, which shows it is made (AWS, Ceph and MinIO accept it)."""
    driver = make_driver(swift, prefix, encrypt=True)
    try:
        with pytest.raises(S3Error) as caught:
            await driver.put_content("/file", b"x")
        assert caught.value.code == "NotImplemented"
        assert "encryption" in str(caught.value).lower()
    finally:
        driver.close()


@pytest_twisted.ensureDeferred
async def test_tree_checks_see_past_a_page_of_siblings(swift, prefix):
    """A directory's probe is one listing of names starting with it; when
    siblings sorting before ``name/`` fill that page, the driver asks the
    long way and still tells a file, a directory and nothing apart."""
    writer = make_driver(swift, prefix)
    for path in ["/d/a-1", "/d/a-2", "/d/a", "/e/a-1", "/e/a-2", "/e/a/x"]:
        await writer.put_content(path, b"x")
    for path in ["/f/a-1", "/f/a-2", "/f/a.3"]:
        await writer.put_content(path, b"x")
    await writer.close()
    driver = make_driver(swift, prefix)  # knows no directories yet
    driver.list_page_size = 2
    try:
        with pytest.raises(StorageError, match="not a directory"):
            await driver.put_content("/d/a/below", b"y")
        await driver.put_content("/e/a/y", b"y")  # a directory
        await driver.put_content("/f/a/y", b"y")  # nothing there yet
        assert await driver.list("/e/a") == ["x", "y"]
        assert await driver.get_content("/f/a/y") == b"y"
    finally:
        await driver.close()

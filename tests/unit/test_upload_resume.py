"""How an upload is found again: what a POST stores, what a node that
started or continued an upload remembers (no look-up to resume it), and
what another node on the same storage reads instead (one listing)."""

import os

import pytest
import pytest_twisted

from registryd import errors
from registryd.digest import Digest
from registryd.storage import _paths as paths  # to look at what a POST stores
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.registry import Registry
from registryd.storage.uploads import HashStates
from tests.unit.test_gc import _Source


@pytest_twisted.ensureDeferred
async def test_a_post_stores_no_data_until_bytes_arrive():
    registry = Registry(InMemoryDriver())
    async with await registry.repository("app").uploads.start() as upload:
        pass
    assert await registry.driver.list(paths.upload_dir("app", upload.id)) == ["startedat"]
    status = await registry.repository("app").uploads.status(upload.id)
    assert status.size == 0


@pytest_twisted.ensureDeferred
async def test_another_node_resumes_an_upload_with_its_algorithm():
    """Node B never saw the upload: it learns from storage that it exists
    and is sha512, and finishes it.  Node A, which started it, sees that
    the stored bytes are not those it last saw, asks storage, and finds
    the upload gone."""
    driver = InMemoryDriver()
    node_a, node_b = Registry(driver), Registry(driver)
    first, second = b"a" * 3000, b"b" * 2000
    async with await node_a.repository("app").uploads.start("sha512") as upload:
        await upload.append(_Source(first))
    async with await node_b.repository("app").uploads.resume(upload.id) as resumed:
        assert (resumed.algorithm, resumed.size) == ("sha512", len(first))
        await resumed.append(_Source(second))
        blob = await resumed.complete(Digest.of(first + second, "sha512"))
    assert blob.digest.algorithm == "sha512"
    with pytest.raises(errors.BlobUploadUnknown):
        await node_a.repository("app").uploads.resume(upload.id)


@pytest_twisted.ensureDeferred
async def test_an_upload_is_known_only_in_its_own_repository():
    registry = Registry(InMemoryDriver())
    async with await registry.repository("app").uploads.start() as upload:
        pass
    with pytest.raises(errors.BlobUploadUnknown):
        await registry.repository("other").uploads.resume(upload.id)


def test_upload_states_are_bounded():
    import hashlib

    states = HashStates(limit=2)
    for name in ("a", "b", "c"):
        states.put(("app", name), 0, hashlib.sha256())
    assert len(states) == 2
    assert states.known(("app", "a")) is None  # the oldest went first
    assert states.known(("app", "c")) == ("sha256", 0)


async def _swap_stored_bytes(driver, name, upload_id, start, size):
    """Replace ``size`` stored bytes from ``start`` with others: a node that
    hashes them again gets another digest, so a completion that still
    matches the original one shows which bytes were not read back."""
    path = paths.upload_data(name, upload_id)
    data = bytearray(await driver.get_content(path))
    data[start : start + size] = os.urandom(size)
    await driver.put_content(path, bytes(data))


@pytest_twisted.ensureDeferred
async def test_another_node_completes_an_upload_from_its_stored_running_hash():
    """With ``--workers`` a client's PUT often reaches another process than
    its PATCH: that one continues from the hash the PATCH stored (as
    Distribution does) instead of reading the upload back."""
    driver = InMemoryDriver()
    node_a, node_b = (Registry(driver, store_hash_states=True) for _ in "ab")
    data = os.urandom(100_003)
    async with await node_a.repository("app").uploads.start() as upload:
        await upload.append(_Source(data))
    assert await driver.list(paths.upload_hash_states("app", upload.id, "sha256")) == ["100003"]
    await _swap_stored_bytes(driver, "app", upload.id, 0, len(data))
    async with await node_b.repository("app").uploads.resume(upload.id) as resumed:
        blob = await resumed.complete(Digest.of(data))
    assert blob.digest == Digest.of(data)


@pytest_twisted.ensureDeferred
async def test_a_node_reads_back_only_what_follows_the_last_usable_stored_hash():
    """States are kept per offset; one that cannot be restored (damaged,
    or foreign) and names that are not offsets are passed over, and only
    the bytes after the state used are read back."""
    driver = InMemoryDriver()
    node_a, node_b = (Registry(driver, store_hash_states=True) for _ in "ab")
    first, second = os.urandom(5000), os.urandom(3000)
    async with await node_a.repository("app").uploads.start("sha512") as upload:
        await upload.append(_Source(first))
    async with await node_a.repository("app").uploads.resume(upload.id) as resumed:
        await resumed.append(_Source(second))
    states = paths.upload_hash_states("app", upload.id, "sha512")
    await driver.put_content(f"{states}/8000", b"sha\x07 damaged")
    await driver.put_content(f"{states}/latest", b"not an offset")
    await driver.put_content(f"{states}/{'9' * 5000}", b"nor this")
    await _swap_stored_bytes(driver, "app", upload.id, 0, len(first))
    async with await node_b.repository("app").uploads.resume(upload.id) as resumed:
        blob = await resumed.complete(Digest.of(first + second, "sha512"))
    assert blob.digest == Digest.of(first + second, "sha512")


@pytest_twisted.ensureDeferred
async def test_a_registry_alone_stores_no_running_hash_of_a_small_upload():
    """One process without nodes: nobody else continues its uploads, and
    reading a small one back after a restart costs less than a stored
    state would cost every ``PATCH`` (a write, an S3 request)."""
    registry = Registry(InMemoryDriver())
    async with await registry.repository("app").uploads.start() as upload:
        await upload.append(_Source(b"x" * 3000))
    assert await registry.driver.list(paths.upload_dir("app", upload.id)) == ["data", "startedat"]


@pytest_twisted.ensureDeferred
async def test_a_registry_alone_stores_the_running_hash_of_a_large_upload():
    """From ``store_alone_from`` bytes on (64 MiB, lowered here to keep the
    test small: ``tests/e2e/test_upload_restart.py`` pushes past the real
    one), a process restarted in the middle of the push would read back
    more than storing the state costs: each request that appends stores
    it, and a restarted process (a new Registry) completes the upload
    from it."""
    driver = InMemoryDriver()
    registry = Registry(driver)
    registry.hash_states.store_alone_from = 5000
    first, second = os.urandom(4999), os.urandom(2)
    async with await registry.repository("app").uploads.start() as upload:
        await upload.append(_Source(first))
    states = paths.upload_hash_states("app", upload.id, "sha256")
    assert await driver.list(paths.upload_dir("app", upload.id)) == ["data", "startedat"]
    async with await registry.repository("app").uploads.resume(upload.id) as resumed:
        await resumed.append(_Source(second))
    assert await driver.list(states) == ["5001"]
    await _swap_stored_bytes(driver, "app", upload.id, 0, len(first))
    restarted = Registry(driver)
    async with await restarted.repository("app").uploads.resume(upload.id) as resumed:
        blob = await resumed.complete(Digest.of(first + second))
    assert blob.digest == Digest.of(first + second)

"""How an upload is found again: what a POST stores, what a node that
started or continued an upload remembers (no look-up to resume it), and
what another node on the same storage reads instead (one listing)."""

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

"""Blob descriptors without Redis: a repository's blob stat (blob HEAD and
GET, a pushed manifest's references) revalidated by a stat of the blob's
link (registryd.storage.cache.LinkCache) instead of reading the link, and
a stat of the data.  Two Registry objects on one filesystem root stand for
two processes (worker processes, or nodes on one bucket without Redis):
what one removes or rewrites, the other sees at once.  Also what a tags
list asks of storage.
"""

import os
import shutil

import pytest
import pytest_twisted

from registryd import errors
from registryd.digest import Digest
from registryd.storage.drivers.filesystem import FilesystemDriver
from registryd.storage.registry import Registry
from tests.unit.test_gc import _Source


class CountingDriver:
    """A real driver, with the calls the model makes of it counted."""

    def __init__(self, driver):
        self._driver = driver
        self.calls = []

    def __getattr__(self, name):
        attribute = getattr(self._driver, name)
        if not callable(attribute) or name.startswith("__"):
            return attribute  # zope.interface's __provides__: the driver's

        def counted(*args, **kwargs):
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return counted


@pytest.fixture
def processes(tmp_path):
    """(registry of process A, with its driver counted; registry of B)."""
    counted = CountingDriver(FilesystemDriver(tmp_path / "root"))
    return (
        Registry(counted, delete_enabled=True),
        Registry(FilesystemDriver(tmp_path / "root"), delete_enabled=True),
        counted,
        tmp_path / "root",
    )


async def push_blob(registry, data):
    digest = Digest.of(data)
    async with await registry.repository("team/app").uploads.start() as upload:
        await upload.append(_Source(data))
        await upload.complete(digest)
    return digest


def settle(root, digest):
    """Date the blob's link 10 s back: older than the cache's settled time
    (a link written within it is not kept, as the same clock tick could
    hide a rewrite)."""
    link = root / "docker/registry/v2/repositories/team/app/_layers" / digest.algorithm
    link = link / digest.hex / "link"
    then = os.stat(link).st_mtime - 10
    os.utime(link, (then, then))


@pytest_twisted.ensureDeferred
async def test_a_settled_link_costs_two_stats_per_blob_stat(processes):
    a, _, counted, root = processes
    digest = await push_blob(a, b"layer bytes")
    settle(root, digest)
    blobs = a.repository("team/app").blobs
    counted.calls.clear()
    first = await blobs.stat(digest)
    # asked once (a manifest's check of a blob just pushed): what it cost
    # without the cache, a link read and a data stat (answered at once
    # from the kernel's caches, without a Deferred)
    assert counted.calls == ["get_content", "stat_now"]
    assert await blobs.stat(digest) == first  # validated and kept
    counted.calls.clear()
    for _ in range(3):
        assert await blobs.stat(digest) == first
    # a stat of the link instead of reading it, and of the data
    assert counted.calls == ["stat_now", "stat_now"] * 3


@pytest_twisted.ensureDeferred
async def test_what_another_process_unlinks_or_relinks_is_seen_at_once(processes):
    a, b, _, root = processes
    data = b"layer bytes"
    digest = await push_blob(a, data)
    settle(root, digest)
    blobs_a = a.repository("team/app").blobs
    for _ in range(2):
        assert (await blobs_a.stat(digest)).size == len(data)
    assert await b.vacuum.remove_layer_link("team/app", digest)
    with pytest.raises(errors.BlobUnknown):
        await blobs_a.stat(digest)
    # linked again by B to other data (Distribution links a sha512 name to
    # sha256 data): A follows the new link, not its cached descriptor
    other = await push_blob(b, b"other, longer layer bytes")
    await b.repository("team/app").blobs.link(digest, other)
    blob = await blobs_a.stat(digest)
    assert (blob.stored_as, blob.size) == (other, len(b"other, longer layer bytes"))


@pytest_twisted.ensureDeferred
async def test_data_another_process_removes_is_unknown_at_once(processes):
    """The data of a blob goes while its repositories' links stay: the
    vacuum of another process removes it first (garbage collection by
    another worker or ``registryd gc``, stopped before it came to the
    links), Distribution's garbage collection leaves the links, or someone
    removes the directory.  The next stat of a link the cache kept says
    the blob is unknown."""
    a, b, _, root = processes
    blobs_a = a.repository("team/app").blobs
    collected = await push_blob(a, b"collected layer")
    removed = await push_blob(a, b"removed layer")
    for digest in (collected, removed):
        settle(root, digest)
        for _ in range(2):  # kept in the cache
            await blobs_a.stat(digest)
    assert len(a.blob_link_cache) == 2
    assert await b.vacuum.remove_blob(collected)
    shutil.rmtree(root / "docker/registry/v2/blobs" / removed.algorithm / removed.hex[:2])
    for digest in (collected, removed):
        with pytest.raises(errors.BlobUnknown):
            await blobs_a.stat(digest)


@pytest_twisted.ensureDeferred
async def test_a_tags_list_with_tags_asks_for_the_listing_alone(processes):
    """The tags directory is inside ``_manifests``: a listing with tags in
    it shows the repository has manifests without a stat of its own; an
    empty one still asks whether the repository is there."""
    a, _, counted, root = processes
    await a.repository("team/app").tags.tag("v1", Digest.of(b"a manifest"))
    tags = root / "docker/registry/v2/repositories/team/app/_manifests/tags"
    then = os.stat(tags).st_mtime - 60  # a listing is kept once settled
    os.utime(tags, (then, then))
    store = a.repository("team/app").tags
    assert await store.all() == ["v1"]
    counted.calls.clear()
    assert await store.all() == ["v1"]
    assert counted.calls == ["list_now"]
    with pytest.raises(errors.NameUnknown):
        await a.repository("team/none").tags.all()

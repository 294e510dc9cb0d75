"""Garbage collection on the registry model (inmemory storage).

Pushes go through the model's own write paths (uploads, mounts, manifest
puts), so what is collected is exactly what registryd writes; time is moved
with the collector's clock instead of sleeping.
"""

import json
import os
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from registryd import errors
from registryd.digest import Digest
from registryd.ops.gc import GCReport, collect_garbage
from registryd.ops.walk import references_in
from registryd.storage import _paths as paths  # to plant states another registry may leave
from registryd.storage.drivers.filesystem import FilesystemDriver
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.errors import PathNotFound, StorageUnavailable
from registryd.storage.guard import PushGuard
from registryd.storage.registry import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
HOUR = 3600.0


def later(hours=2):
    """A clock ``hours`` ahead: everything written so far is old."""
    return lambda: time.time() + hours * HOUR


class _Source:
    def __init__(self, data):
        self.data = data

    async def read(self, size):
        chunk, self.data = self.data[:size], self.data[size:]
        return chunk


async def push_blob(registry, name, data=None, algorithm="sha256"):
    data = os.urandom(3000) if data is None else data
    async with await registry.repository(name).uploads.start(algorithm) as upload:
        await upload.append(_Source(data))
        blob = await upload.complete(Digest.of(data, algorithm))
    return {"mediaType": LAYER, "digest": str(blob.digest), "size": len(data)}


async def push_image(registry, name, tag=None, layers=None, subject=None, artifact_type=None):
    """An OCI image (fresh config and two layers unless ``layers`` given);
    returns (manifest digest, [blob descriptors])."""
    config = await push_blob(registry, name, json.dumps({"n": os.urandom(8).hex()}).encode())
    config["mediaType"] = CONFIG
    layers = layers if layers is not None else [await push_blob(registry, name) for _ in range(2)]
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    if subject is not None:
        manifest["subject"] = subject
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    body = json.dumps(manifest).encode()
    reference = tag or str(Digest.of(body))
    stored = await registry.repository(name).manifests.put(reference, body, OCI_MANIFEST)
    return stored.digest, [config] + layers, body


async def push_index(registry, name, tag, children):
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": str(digest),
                "size": len(body),
                "platform": {"architecture": arch, "os": "linux"},
            }
            for (digest, _, body), arch in zip(children, ["amd64", "arm64", "s390x"])
        ],
    }
    body = json.dumps(index).encode()
    stored = await registry.repository(name).manifests.put(tag, body, OCI_INDEX)
    return stored.digest


async def exists(registry, digest):
    try:
        await registry.driver.stat(paths.blob_data(Digest.parse(str(digest))))
    except PathNotFound:
        return False
    return True


async def all_blobs(registry):
    return {str(d) for d in await registry.blobs.enumerate()}


@pytest.fixture
def registry():
    return Registry(InMemoryDriver(), delete_enabled=True)


@pytest_twisted.ensureDeferred
async def test_unreferenced_blobs_go_referenced_stay(registry):
    digest, blobs, _ = await push_image(registry, "app", "v1")
    orphans = [await push_blob(registry, "app", os.urandom(1000 + i)) for i in range(3)]
    other_repo_orphan = await push_blob(registry, "other", b"x" * 500)

    report = await collect_garbage(registry, clock=later())

    assert isinstance(report, GCReport)
    removed = {d for d, _ in report.blobs_removed}
    assert removed == {b["digest"] for b in orphans} | {other_repo_orphan["digest"]}
    assert report.bytes_reclaimed == sum(b["size"] for b in orphans) + 500
    for blob in blobs:
        assert await exists(registry, blob["digest"])
    assert await exists(registry, digest)
    assert await all_blobs(registry) == {str(digest)} | {b["digest"] for b in blobs}
    # The repositories' links to swept blobs are gone too (Distribution 3 does this).
    assert sorted(report.layer_links_removed) == sorted(
        [("app", b["digest"]) for b in orphans] + [("other", other_repo_orphan["digest"])]
    )
    for blob in orphans:
        assert not await registry.repository("app").blobs.has(Digest.parse(blob["digest"]))
    assert (await registry.repository("app").manifests.get("v1")).digest == digest
    assert report.repositories == 2 and report.manifests_marked == 1 and report.blobs_marked == 4
    assert "removed 4 blobs (3503 bytes)" in report.summary()


@pytest_twisted.ensureDeferred
async def test_dry_run_removes_nothing_and_reports_the_same(registry):
    await push_image(registry, "app", "v1")
    orphan = await push_blob(registry, "app")
    before = await all_blobs(registry)

    dry = await collect_garbage(registry, dry_run=True, clock=later())
    assert [d for d, _ in dry.blobs_removed] == [orphan["digest"]]
    assert dry.layer_links_removed == [("app", orphan["digest"])]
    assert await all_blobs(registry) == before
    assert await registry.repository("app").blobs.has(Digest.parse(orphan["digest"]))
    assert "would remove 1 blobs" in dry.summary()

    real = await collect_garbage(registry, clock=later())
    assert real.blobs_removed == dry.blobs_removed
    assert await all_blobs(registry) == before - {orphan["digest"]}


@pytest_twisted.ensureDeferred
async def test_young_blobs_and_fresh_links_survive_the_grace_period(tmp_path):
    registry = Registry(FilesystemDriver(str(tmp_path)))
    young = await push_blob(registry, "app")
    digest = Digest.parse(young["digest"])
    report = await collect_garbage(registry)  # real clock: written just now
    assert report.blobs_removed == []
    assert report.protected == [(young["digest"], "younger than the grace period")]
    # Old data that was linked again a moment ago (a re-push or a mount)
    # is protected by the link's age.
    await registry.repository("other").blobs.mount(digest, "app")
    old = time.time() - 2 * HOUR
    for path in (paths.blob_data(digest), paths.layer_link("app", digest)):
        os.utime(str(tmp_path) + path, (old, old))
    report = await collect_garbage(registry)
    assert report.blobs_removed == []
    assert report.protected == [
        (young["digest"], "linked into other less than the grace period ago")
    ]
    assert (await collect_garbage(registry, grace_period=0)).blobs_removed == [
        (young["digest"], 3000)
    ]


@pytest_twisted.ensureDeferred
async def test_all_revisions_are_roots_without_delete_untagged(registry):
    untagged, untagged_blobs, _ = await push_image(registry, "app")
    child1 = await push_image(registry, "app")
    child2 = await push_image(registry, "app")
    index = await push_index(registry, "app", "multi", [child1, child2])

    report = await collect_garbage(registry, clock=later())

    assert report.blobs_removed == [] and report.manifests_removed == []
    assert report.manifests_marked == 4
    for digest in [untagged, child1[0], child2[0], index]:
        assert await exists(registry, digest)
    for blob in untagged_blobs + child1[1] + child2[1]:
        assert await exists(registry, blob["digest"])


@pytest_twisted.ensureDeferred
async def test_delete_untagged_keeps_index_children_and_referrers(registry):
    shared_layer = await push_blob(registry, "app")
    # Untagged, alone: goes, with its unique blobs; the shared layer stays.
    lonely, lonely_blobs, _ = await push_image(
        registry, "app", layers=[shared_layer, await push_blob(registry, "app")]
    )
    # Tagged index: its untagged children and their blobs stay.
    child1 = await push_image(registry, "app")
    child2 = await push_image(registry, "app", layers=[shared_layer])
    index = await push_index(registry, "app", "multi", [child1, child2])
    # A signature (untagged) of the tagged index stays; one of the
    # removed manifest goes.
    index_body = await registry.repository("app").manifests.get("multi")
    subject = {"mediaType": OCI_INDEX, "digest": str(index), "size": len(index_body.body)}
    signature, signature_blobs, _ = await push_image(
        registry, "app", subject=subject, artifact_type="application/vnd.example.sig"
    )
    lonely_subject = {"mediaType": OCI_MANIFEST, "digest": str(lonely), "size": 100}
    orphan_signature, orphan_signature_blobs, _ = await push_image(
        registry, "app", subject=lonely_subject
    )
    # A tag moved away: its old target loses its last tag.
    moved_from, moved_blobs, _ = await push_image(registry, "app", "latest")
    moved_to, _, _ = await push_image(registry, "app", "latest")

    dry = await collect_garbage(registry, dry_run=True, delete_untagged=True, clock=later())
    report = await collect_garbage(registry, delete_untagged=True, clock=later())
    assert sorted(dry.manifests_removed) == sorted(report.manifests_removed)
    assert sorted(dry.blobs_removed) == sorted(report.blobs_removed)

    assert sorted(report.manifests_removed) == sorted(
        ("app", str(d)) for d in (lonely, orphan_signature, moved_from)
    )
    gone = {str(lonely), str(orphan_signature), str(moved_from)}
    gone |= {b["digest"] for b in lonely_blobs[::2]}  # config and the unique layer
    gone |= {b["digest"] for b in orphan_signature_blobs + moved_blobs}
    assert {d for d, _ in report.blobs_removed} == gone
    manifests = registry.repository("app").manifests
    for digest in (index, child1[0], child2[0], signature, moved_to):
        assert await manifests.has(digest)
        assert await exists(registry, digest)
    for blob in child1[1] + child2[1] + signature_blobs + [shared_layer]:
        assert await exists(registry, blob["digest"])
    for digest in (lonely, orphan_signature, moved_from):
        assert not await manifests.has(digest)
    # The tag's history no longer names the removed manifest; the referrers
    # index keeps the signature of the index only.
    history = await registry.driver.list(f"{paths.tag_dir('app', 'latest')}/index/sha256")
    assert history == [moved_to.hex]
    assert [d["digest"] for d in await manifests.referrers(index)] == [str(signature)]
    assert await manifests.referrers(lonely) == []
    assert (await manifests.get("latest")).digest == moved_to


@pytest_twisted.ensureDeferred
async def test_delete_untagged_spares_young_untagged_manifests(registry):
    """A multi-platform push sends untagged children before the tagged
    index: a collection in between must not take them."""
    child, child_blobs, _ = await push_image(registry, "app")
    report = await collect_garbage(registry, delete_untagged=True)  # real clock
    assert report.manifests_removed == [] and report.blobs_removed == []
    assert await registry.repository("app").manifests.has(child)
    for blob in child_blobs:
        assert await exists(registry, blob["digest"])


@pytest_twisted.ensureDeferred
async def test_a_blob_held_by_a_push_is_not_swept(registry):
    orphan = await push_blob(registry, "app")
    digest = Digest.parse(orphan["digest"])
    async with registry.guard.using([digest]):
        report = await collect_garbage(registry, clock=later())
    assert report.protected == [(str(digest), "in use by a push")]
    assert await exists(registry, digest)


@pytest_twisted.ensureDeferred
async def test_a_manifest_put_between_mark_and_sweep_keeps_its_old_blobs(registry):
    """The race the grace period cannot cover: blobs pushed long ago,
    unreferenced when marking, referenced by a manifest put before the
    sweep (the client saw them with HEAD and did not upload them again)."""
    digest, blobs, body = await push_image(registry, "app", "v1")
    await registry.repository("app").manifests.delete(str(digest))
    assert not await registry.repository("app").manifests.has(digest)

    async def push_again():
        await registry.repository("app").manifests.put("v1", body, OCI_MANIFEST)

    report = await collect_garbage(registry, clock=later(), before_sweep=push_again)
    assert report.blobs_removed == []
    assert {d for d, _ in report.protected} >= {b["digest"] for b in blobs}
    stored = await registry.repository("app").manifests.get("v1")
    for blob in blobs:
        assert await registry.repository("app").blobs.has(Digest.parse(blob["digest"]))
    assert stored.digest == digest


@pytest_twisted.ensureDeferred
async def test_a_push_waits_for_a_deletion_and_then_finds_the_blob_gone(registry):
    """A push that wants a blob while the sweep deletes it must not see
    it exist and then lose it: it waits, then uploads it again."""
    digest, blobs, body = await push_image(registry, "app", "v1")
    await registry.repository("app").manifests.delete(str(digest))
    driver = registry.driver
    data_of = {
        b["digest"]: await driver.get_content(paths.blob_data(Digest.parse(b["digest"])))
        for b in blobs
    }
    gate = defer.Deferred()
    original_delete = driver.delete
    attempts = []

    async def slow_delete(path):
        if "/blobs/" in path and not gate.called:
            await gate
        return await original_delete(path)

    driver.delete = slow_delete
    collecting = defer.ensureDeferred(collect_garbage(registry, clock=later()))
    # The sweep is now blocked inside the deletions of the whole image.
    image = {str(digest)} | {b["digest"] for b in blobs}
    assert set(registry.guard.local._deleting) == image

    async def put():
        try:
            await registry.repository("app").manifests.put("v1", body, OCI_MANIFEST)
        except errors.ManifestBlobUnknown as error:
            attempts.append(error.detail["missing"])
        else:
            attempts.append("stored")

    putting = defer.ensureDeferred(put())
    assert attempts == []  # waiting for the deletions
    gate.callback(None)
    await collecting
    await putting
    # It found the blobs gone (a client uploads them again), rather than
    # finding them present and losing them a moment later.
    assert len(attempts) == 1 and set(attempts[0]) == image - {str(digest)}
    for blob in blobs:
        assert not await exists(registry, blob["digest"])
    driver.delete = original_delete
    for blob in blobs:  # what the client does next
        await push_blob(registry, "app", data_of[blob["digest"]])
    await registry.repository("app").manifests.put("v1", body, OCI_MANIFEST)
    assert (await collect_garbage(registry, clock=later())).blobs_removed == []


@pytest_twisted.ensureDeferred
async def test_sha512_links_to_sha256_data_keep_the_data(registry):
    """Distribution 2.8 stores a sha512-addressed blob under its sha256
    digest and links the sha512 name to it."""
    data = os.urandom(2048)
    sha256, sha512 = Digest.of(data), Digest.of(data, "sha512")
    await registry.driver.put_content(paths.blob_data(sha256), data)
    await registry.driver.put_content(paths.layer_link("app", sha512), str(sha256).encode())
    layer = {"mediaType": LAYER, "digest": str(sha512), "size": len(data)}
    manifest, _, _ = await push_image(registry, "app", "v1", layers=[layer])
    report = await collect_garbage(registry, clock=later())
    assert report.blobs_removed == []
    assert await exists(registry, sha256)
    # Unreferenced, both go: the data and the alias link.
    await registry.repository("app").manifests.delete(str(manifest))
    report = await collect_garbage(registry, clock=later())
    assert str(sha256) in {d for d, _ in report.blobs_removed}
    assert ("app", str(sha512)) in report.layer_links_removed
    assert not await registry.repository("app").blobs.has(sha512)


@pytest_twisted.ensureDeferred
async def test_manifests_are_read_leniently(registry):
    """An unknown manifest type still protects what it names; a body that
    is not JSON is reported and protects nothing but itself."""
    blob = await push_blob(registry, "app")
    strange = json.dumps(
        {
            "mediaType": "application/vnd.example.future+json",
            "parts": [{"thing": {"digest": blob["digest"]}}],
            "subject": {"digest": str(Digest.of(b"not kept"))},
        }
    ).encode()
    not_json = b"\x00not json"
    for body in (strange, not_json):
        digest = Digest.of(body)
        await registry.driver.put_content(paths.blob_data(digest), body)
        await registry.driver.put_content(
            paths.manifest_revision_link("app", digest), str(digest).encode()
        )
    report = await collect_garbage(registry, clock=later())
    assert report.blobs_removed == []
    assert report.warnings == [f"app@{Digest.of(not_json)}: manifest is not JSON"]
    refs, subject = references_in(strange)
    assert refs == {Digest.parse(blob["digest"])}
    assert subject == Digest.of(b"not kept")


@pytest_twisted.ensureDeferred
async def test_a_storage_error_while_marking_deletes_nothing(registry):
    await push_image(registry, "app", "v1")
    orphan = await push_blob(registry, "app")
    original = registry.driver.get_content

    def failing(path):
        if "/blobs/" in path:
            return defer.fail(StorageUnavailable("backend down"))
        return original(path)

    registry.driver.get_content = failing
    with pytest.raises(StorageUnavailable):
        await collect_garbage(registry, clock=later())
    registry.driver.get_content = original
    assert await exists(registry, orphan["digest"])


@pytest_twisted.ensureDeferred
async def test_dangling_links_from_an_earlier_collector_are_removed(registry):
    orphan = await push_blob(registry, "app")
    digest = Digest.parse(orphan["digest"])
    await registry.driver.delete(paths.blob_dir(digest))  # as docker-registry 2.8 leaves it
    report = await collect_garbage(registry, clock=later())
    assert report.layer_links_removed == [("app", str(digest))]
    with pytest.raises(PathNotFound):
        await registry.driver.stat(paths.layer_link("app", digest))


def test_guard_refuses_what_was_held_during_a_collection():
    guard = PushGuard()
    with guard.collecting():
        assert guard.begin_delete("sha256:a")
        guard.end_delete("sha256:a")

        async def hold():
            async with guard.using(["sha256:b"]):
                assert not guard.begin_delete("sha256:b")

        defer.ensureDeferred(hold())
        # Released, but held since the collection started: still refused.
        assert guard.in_use("sha256:b") and not guard.begin_delete("sha256:b")
    assert not guard.in_use("sha256:b")
    assert guard.begin_delete("sha256:b")


@pytest_twisted.ensureDeferred
async def test_names_with_a_newline_left_by_an_older_registryd_are_passed_over(tmp_path):
    """An older registryd let ``secret%0a`` in as a tag, and ``app%0a`` as a
    mount source: directories with a newline, which the drivers now refuse
    to touch.  GC and the catalog pass over them instead of failing."""
    registry = Registry(FilesystemDriver(str(tmp_path)), delete_enabled=True)
    digest, blobs, _ = await push_image(registry, "app", "v1")
    repositories = str(tmp_path) + paths.repositories()
    stray_tag = f"{repositories}/app/_manifests/tags/secret\n/current"
    os.makedirs(stray_tag)
    with open(f"{stray_tag}/link", "w") as link:
        link.write(str(digest))
    os.makedirs(f"{repositories}/app\n/_manifests/tags")

    report = await collect_garbage(registry, clock=later(), delete_untagged=True)

    assert report.blobs_removed == []
    assert await registry.repositories() == ["app"]
    assert await registry.repository_page() == (["app"], False)
    assert await registry.repository("app").tags.all() == ["v1"]

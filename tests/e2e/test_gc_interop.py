"""registryd-gc against Distribution's ``docker-registry garbage-collect``
(Debian's 2.8.2) on copies of one directory that Distribution wrote.

The data: tagged images, a tag moved away (its old image is untagged), an
image deleted by digest whose layer another repository still uses, blobs
pushed with no manifest, and a tagged multi-platform index whose children
are untagged.  Both collectors run on identical copies (every file aged
past registryd's default grace period) and must leave the same blobs,
manifests and tags -- except where Distribution 2.8 is known to be wrong:
with --delete-untagged it removes the children of a tagged index and their
layers (fixed in Distribution 3), which registryd keeps.  What registryd
leaves is then served whole by docker-registry itself.
"""

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import tools
from tests.e2e.tools import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    http_request,
    make_image,
    push_blob,
    push_image,
    put_manifest,
    sha256_digest,
)

pytestmark = pytest.mark.e2e

V2 = "docker/registry/v2"


def image_with(layers):
    """An image (as make_image returns) whose layers are ``layers``."""
    base = make_image(())
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": base["config_digest"],
                "size": len(base["config"]),
            },
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": d, "size": len(b)} for d, b in layers
            ],
        }
    ).encode()
    return dict(base, manifest=manifest, digest=sha256_digest(manifest), layers=list(layers))


def build(distribution_factory, root):
    """Push the data set with docker-registry; return what it is made of."""
    server = distribution_factory(root)
    url = server.url
    made = {}
    made["a"] = make_image((3000, 2000))
    push_image(url, "gc/app", "v1", made["a"])
    made["b"] = make_image((1500,))
    push_image(url, "gc/app", "v2", made["b"])
    made["c"] = make_image((1700,))
    push_image(url, "gc/app", "v2", made["c"])  # b is now untagged
    made["d"] = image_with(
        [made["a"]["layers"][0], (sha256_digest(b"d-only" * 100), b"d-only" * 100)]
    )
    push_image(url, "gc/gone", "v1", made["d"])
    response = http_request("DELETE", f"{url}/v2/gc/gone/manifests/{made['d']['digest']}")
    assert response.status == 202, response
    made["orphans"] = [push_blob(url, "gc/orphans", os.urandom(900 + i)) for i in range(3)]
    made["children"] = [make_image((1100,)), make_image((1200,))]
    for child in made["children"]:
        push_image(url, "gc/multi", child["digest"], child)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": child["digest"],
                    "size": len(child["manifest"]),
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for child, arch in zip(made["children"], ["amd64", "arm64"])
            ],
        }
    ).encode()
    put_manifest(url, "gc/multi", "latest", index, OCI_INDEX)
    made["index"] = sha256_digest(index)
    server.stop()
    return made


def copy_aged(source, destination):
    shutil.copytree(source, destination)
    old = time.time() - 2 * 3600
    for directory, _, files in os.walk(destination):
        for name in files:
            os.utime(os.path.join(directory, name), (old, old))
    return destination


def write_config(path, root):
    path.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
    )
    return path


def distribution_gc(tmp_path, root, *flags):
    """Run ``docker-registry garbage-collect``; the digests it names."""
    executable = tools.require_tool("docker-registry")
    config = write_config(tmp_path / f"dist-{root.name}.yml", root)
    result = tools.run(
        [executable, "garbage-collect", *flags, config], env=tools._clean_env(("REGISTRY_",))
    )
    output = result.stdout.decode()
    return set(re.findall(r"blob eligible for deletion: (sha256:[0-9a-f]{64})", output))


def registryd_gc(tmp_path, root, *flags, module=False):
    """Run registryd-gc (or ``python -m registryd gc``) with --json."""
    config = write_config(tmp_path / f"reg-{root.name}.yml", root)
    if module:
        command = [sys.executable, "-m", "registryd", "gc"]
    else:
        command = [sys.executable, "-c", "from registryd.ops.gc_command import main; main()"]
    env = tools._clean_env((), {"PYTHONPATH": str(tools.REPO_ROOT)})
    result = tools.run([*command, "--config", config, *flags, "--json"], env=env)
    return json.loads(result.stdout)


def state(root):
    """(blob digests with data, (repo, revision) pairs, (repo, tag, digest))."""
    v2 = Path(root) / V2
    blobs = {
        f"{alg.name}:{entry.name}"
        for alg in (v2 / "blobs").iterdir()
        for prefix in alg.iterdir()
        for entry in prefix.iterdir()
        if (entry / "data").exists()
    }
    revisions, tags = set(), set()
    for manifests in (v2 / "repositories").rglob("_manifests"):
        repo = str(manifests.parent.relative_to(v2 / "repositories"))
        for link in manifests.glob("revisions/*/*/link"):
            revisions.add((repo, link.read_text()))
        for link in manifests.glob("tags/*/current/link"):
            tags.add((repo, link.parent.parent.name, link.read_text()))
    return blobs, revisions, tags


def pull_everything(url, tags):
    """GET every tag's manifest and, through indexes, every blob."""
    for repo, tag, _ in sorted(tags):
        queue = [tag]
        while queue:
            reference = queue.pop()
            response = tools.get_manifest(url, repo, reference)
            assert response.status == 200, (repo, reference, response)
            document = response.json()
            queue += [child["digest"] for child in document.get("manifests", [])]
            for blob in [document.get("config")] + document.get("layers", []):
                if blob:
                    response = http_request("GET", f"{url}/v2/{repo}/blobs/{blob['digest']}")
                    assert response.status == 200, (repo, reference, blob["digest"])
                    assert sha256_digest(response.body) == blob["digest"]


def test_same_result_as_docker_registry(tmp_path, distribution_factory, registryd_factory):
    made = build(distribution_factory, tmp_path / "original")
    before = state(tmp_path / "original")
    ours = copy_aged(tmp_path / "original", tmp_path / "ours")
    theirs = copy_aged(tmp_path / "original", tmp_path / "theirs")

    # Dry runs name the same blobs and remove nothing.
    dry = registryd_gc(tmp_path, ours, "--dry-run")
    assert {b["digest"] for b in dry["blobs_removed"]} == distribution_gc(
        tmp_path, theirs, "--dry-run"
    )
    assert state(ours) == state(theirs) == before

    report = registryd_gc(tmp_path, ours)
    removed = distribution_gc(tmp_path, theirs)
    assert {b["digest"] for b in report["blobs_removed"]} == removed
    assert state(ours) == state(theirs)
    blobs, revisions, tags = state(ours)
    # What goes: the deleted image's own blobs and the orphans; what stays:
    # every revision (untagged b included) and the layer d shared with a.
    expected = {made["d"]["digest"], made["d"]["layers"][1][0]} | set(made["orphans"])
    expected.add(made["d"]["config_digest"])
    assert removed == expected
    assert made["a"]["layers"][0][0] in blobs and ("gc/app", made["b"]["digest"]) in revisions
    assert report["bytes_reclaimed"] == sum(b["size"] for b in report["blobs_removed"]) > 0
    # registryd also drops the repositories' links to what it removed.
    orphan = made["orphans"][0].split(":")[1]
    assert not (ours / V2 / "repositories/gc/orphans/_layers/sha256" / orphan).exists()
    assert (theirs / V2 / "repositories/gc/orphans/_layers/sha256" / orphan).exists()

    # A second run finds nothing left (and `python -m registryd gc` works too).
    again = registryd_gc(tmp_path, ours, module=True)
    assert again["blobs_removed"] == [] and again["manifests_removed"] == []

    served = registryd_factory(ours)
    pull_everything(served.url, tags)


def test_delete_untagged_agrees_except_where_distribution_28_breaks_indexes(
    tmp_path, distribution_factory
):
    made = build(distribution_factory, tmp_path / "original")
    ours = copy_aged(tmp_path / "original", tmp_path / "ours")
    theirs = copy_aged(tmp_path / "original", tmp_path / "theirs")

    report = registryd_gc(tmp_path, ours, "--delete-untagged")
    removed_by_them = distribution_gc(tmp_path, theirs, "--delete-untagged")
    removed_by_us = {b["digest"] for b in report["blobs_removed"]}

    # The index's children: manifests, configs and layers.
    children = {child["digest"] for child in made["children"]}
    children_blobs = {
        digest
        for child in made["children"]
        for digest in [child["config_digest"]] + [d for d, _ in child["layers"]]
    }
    assert removed_by_us <= removed_by_them
    assert removed_by_them - removed_by_us <= children_blobs
    # The untagged image b goes, with its own blobs; the rest as without the flag.
    b = made["b"]
    assert {b["digest"], b["config_digest"], b["layers"][0][0]} <= removed_by_us
    assert {(m["repository"], m["digest"]) for m in report["manifests_removed"]} == {
        ("gc/app", b["digest"])
    }
    ours_blobs, ours_revisions, ours_tags = state(ours)
    theirs_blobs, theirs_revisions, theirs_tags = state(theirs)
    assert ours_tags == theirs_tags
    assert ours_revisions - theirs_revisions <= {("gc/multi", child) for child in children}
    assert theirs_revisions <= ours_revisions
    # registryd keeps the tagged index whole: docker-registry serves all of it.
    for child in made["children"]:
        assert ("gc/multi", child["digest"]) in ours_revisions
    server = tools.DistributionRegistry(root=ours, tmpdir=tmp_path / "serve").start()
    try:
        pull_everything(server.url, ours_tags)
    finally:
        server.stop()

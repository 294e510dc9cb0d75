"""Rebuilding the referrers index from the manifests (registryd.ops.referrers).

Manifests are pushed through the model's own write path; the index is then
damaged the ways it can be in practice (a root directory from Distribution,
which never writes it; an interrupted PUT or DELETE; stray names) and the
rebuild must bring the referrers API's answer back.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from registryd import errors
from registryd.digest import Digest
from registryd.ops.referrers import ReferrersReport, rebuild_referrers
from registryd.storage import _paths as paths  # to plant states another registry may leave
from registryd.storage.drivers.filesystem import FilesystemDriver
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.errors import PathNotFound
from registryd.storage.registry import Registry
from tests.support import registryd_command
from tests.unit.test_gc import OCI_MANIFEST, push_image

REPO_ROOT = Path(__file__).resolve().parents[2]
SBOM = "application/vnd.example.sbom+json"
SIGNATURE = "application/vnd.example.signature"


@pytest.fixture
def registry():
    return Registry(InMemoryDriver(), delete_enabled=True)


def descriptor(digest, body):
    return {"mediaType": OCI_MANIFEST, "digest": str(digest), "size": len(body)}


async def referrer_digests(registry, name, subject):
    found = await registry.repository(name).manifests.referrers(subject)
    return sorted(item["digest"] for item in found)


async def image_with_referrers(registry, name="app"):
    """An image and two referrers of it (an SBOM and a signature)."""
    subject, _, body = await push_image(registry, name, "v1")
    sbom, _, _ = await push_image(
        registry, name, layers=[], subject=descriptor(subject, body), artifact_type=SBOM
    )
    signature, _, _ = await push_image(
        registry, name, layers=[], subject=descriptor(subject, body), artifact_type=SIGNATURE
    )
    return subject, sorted([str(sbom), str(signature)])


async def remove_index(registry, name):
    await registry.driver.delete(f"{paths.repository(name)}/_referrers")


@pytest_twisted.ensureDeferred
async def test_an_index_that_is_right_is_left_alone(registry):
    subject, referrers = await image_with_referrers(registry)
    report = await rebuild_referrers(registry)
    assert isinstance(report, ReferrersReport)
    assert (report.repositories, report.entries_kept) == (1, 2)
    assert report.entries_added == report.entries_removed == []
    assert report.manifests_read == 3
    assert await referrer_digests(registry, "app", subject) == referrers


@pytest_twisted.ensureDeferred
async def test_a_missing_index_is_rebuilt_from_the_subjects(registry):
    """As for a root directory Distribution wrote: no _referrers at all."""
    subject, referrers = await image_with_referrers(registry)
    await remove_index(registry, "app")
    assert await referrer_digests(registry, "app", subject) == []

    dry = await rebuild_referrers(registry, dry_run=True)
    assert sorted(str(d) for _, _, d in dry.entries_added) == referrers
    assert "would add 2" in dry.summary()
    assert await referrer_digests(registry, "app", subject) == []  # dry run: nothing written

    report = await rebuild_referrers(registry)
    assert [(repo, str(s)) for repo, s, _ in report.entries_added] == [("app", str(subject))] * 2
    assert await referrer_digests(registry, "app", subject) == referrers
    again = await rebuild_referrers(registry)
    assert again.entries_added == again.entries_removed == [] and again.entries_kept == 2


@pytest_twisted.ensureDeferred
async def test_stale_entries_are_removed(registry):
    """Entries naming a manifest that is gone (a DELETE cut short after the
    revision went) or whose subject is another digest, and their emptied
    subject directory; a name that is not a digest is not touched."""
    subject, referrers = await image_with_referrers(registry)
    gone = Digest.of(b"a manifest that was deleted")
    await registry.driver.put_content(paths.referrer_link("app", subject, gone), str(gone).encode())
    other_subject = Digest.of(b"some other subject")
    wrong = Digest.parse(referrers[0])
    await registry.driver.put_content(
        paths.referrer_link("app", other_subject, wrong), str(wrong).encode()
    )
    stray = f"{paths.referrers('app', subject)}/sha256/not-a-digest/link"
    await registry.driver.put_content(stray, b"whatever")

    dry = await rebuild_referrers(registry, dry_run=True)
    assert len(dry.entries_removed) == 2
    assert await registry.driver.get_content(paths.referrer_link("app", subject, gone))

    report = await rebuild_referrers(registry)
    removed = {(str(s), str(d)) for _, s, d in report.entries_removed}
    assert removed == {(str(subject), str(gone)), (str(other_subject), str(wrong))}
    assert report.entries_kept == 2
    with pytest.raises(PathNotFound):
        await registry.driver.stat(paths.referrer_link("app", subject, gone))
    with pytest.raises(PathNotFound):
        await registry.driver.stat(paths.referrers("app", other_subject))
    assert await registry.driver.get_content(stray) == b"whatever"
    assert await referrer_digests(registry, "app", subject) == referrers


@pytest_twisted.ensureDeferred
async def test_one_repository_at_a_time(registry):
    subject_a, _ = await image_with_referrers(registry, "team/a")
    subject_b, referrers_b = await image_with_referrers(registry, "team/b")
    await remove_index(registry, "team/a")
    await remove_index(registry, "team/b")

    report = await rebuild_referrers(registry, repositories=["team/b"])
    assert report.repositories == 1
    assert {repo for repo, _, _ in report.entries_added} == {"team/b"}
    assert await referrer_digests(registry, "team/a", subject_a) == []
    assert await referrer_digests(registry, "team/b", subject_b) == referrers_b

    with pytest.raises(errors.NameUnknown):
        await rebuild_referrers(registry, repositories=["nobody/here"])
    with pytest.raises(errors.NameInvalid):
        await rebuild_referrers(registry, repositories=["Bad/../Name"])


@pytest_twisted.ensureDeferred
async def test_unreadable_manifests_are_warnings_not_failures(registry):
    subject, referrers = await image_with_referrers(registry)
    broken = Digest.of(b"not json at all")
    await registry.driver.put_content(paths.blob_data(broken), b"not json at all")
    await registry.driver.put_content(
        paths.manifest_revision_link("app", broken), str(broken).encode()
    )
    missing = Digest.of(b"data never written")
    await registry.driver.put_content(
        paths.manifest_revision_link("app", missing), str(missing).encode()
    )
    await remove_index(registry, "app")

    report = await rebuild_referrers(registry)
    assert sorted(report.warnings) == sorted(
        [
            f"app@{broken}: manifest is not JSON",
            f"app@{missing}: manifest data is missing",
        ]
    )
    assert await referrer_digests(registry, "app", subject) == referrers
    assert report.to_dict()["warnings"] == report.warnings
    assert report.lines()[-1] == report.summary()


@pytest_twisted.ensureDeferred
async def test_python_m_registryd_referrers_on_a_directory(tmp_path):
    """The offline tool, in a process of its own (it runs a reactor), on a
    filesystem root whose index is gone."""
    root = tmp_path / "data"
    registry = Registry(FilesystemDriver(str(root)))
    subject, referrers = await image_with_referrers(registry)
    await remove_index(registry, "app")
    config = tmp_path / "registryd.yaml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "registryd", "referrers", "--config", str(config)]

    dry = subprocess.run(command + ["--dry-run"], capture_output=True, env=env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.decode().splitlines()
    assert f"would add app: {referrers[0]} refers to {subject}" in lines
    assert not (root / "docker/registry/v2/repositories/app/_referrers").exists()

    real = subprocess.run(command + ["--json", "app"], capture_output=True, env=env, timeout=60)
    assert real.returncode == 0, real.stderr
    report = json.loads(real.stdout)
    assert sorted(entry["referrer"] for entry in report["entries_added"]) == referrers
    for referrer in referrers:
        link = root / paths.referrer_link("app", subject, Digest.parse(referrer)).lstrip("/")
        assert link.read_text() == referrer

    bad = subprocess.run(command + ["UPPER/case"], capture_output=True, env=env, timeout=60)
    assert bad.returncode == 2 and b"registryd-referrers: 'UPPER/case':" in bad.stderr
    unknown = subprocess.run(command + ["nobody"], capture_output=True, env=env, timeout=60)
    assert unknown.returncode == 1 and b"registryd-referrers: failed" in unknown.stderr


@pytest_twisted.ensureDeferred
async def test_referrers_needs_config_to_write_like_gc(tmp_path):
    """Without ``--config`` the tool refuses to write (exit status 2, one
    line saying why), as ``registryd gc`` refuses to delete: run in the
    wrong directory it used to rebuild whatever ``./registry-data`` held
    and report success.  ``--dry-run`` still looks at ``./registry-data``."""
    root = tmp_path / "registry-data"
    registry = Registry(FilesystemDriver(str(root)))
    subject, referrers = await image_with_referrers(registry)
    await remove_index(registry, "app")
    for command in (["referrers"], ["referrers", "app"]):
        refused = registryd_command(*command, cwd=tmp_path)
        assert refused.returncode == 2
        assert refused.stdout == ""
        assert refused.stderr == (
            "registryd-referrers: --config FILE is required to write the index (the registry's "
            "configuration, naming its storage); add --dry-run to look at ./registry-data "
            "without it\n"
        )
    assert not (root / "docker/registry/v2/repositories/app/_referrers").exists()
    looked = registryd_command("referrers", "--dry-run", cwd=tmp_path)
    assert looked.returncode == 0, looked.stderr
    assert f"would add app: {referrers[0]} refers to {subject}" in looked.stdout.splitlines()
    assert not (root / "docker/registry/v2/repositories/app/_referrers").exists()

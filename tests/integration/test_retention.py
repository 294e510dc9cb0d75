"""lifecycle.retention over a real registry: the dry-run report lists
exactly which tags and manifests go and why the others stay; the real run
deletes them (as tags/manifest deletes a client sees) and keeps index
children and referrers of what stays; a push during a run keeps what it
pushed; ``python -m registryd retention`` does the same from the
configuration file."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from registryd.lifecycle.retention import Keep, RetentionConfig, RetentionRule
from registryd.lifecycle.retention_runner import Retention
from registryd.storage import _paths as paths  # to backdate pushes, as time would
from registryd.storage.drivers.filesystem import FilesystemDriver
from tests.integration.test_manifests_api import (
    EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    push_blob,
    push_image,
    put_manifest,
)
from tests.integration.test_tag_details import recording
from tests.service_support import wait_for
from tests.support import serving, sha256

DAY = 86400
REPO_ROOT = Path(__file__).resolve().parents[2]
RULE = RetentionRule(
    "ci/**",
    Keep(newest=2, pulled_within=7 * DAY, tags=["release"]),
    True,
    where="lifecycle.retention.rules[0]",
)
CONFIG = RetentionConfig(rules=[RULE])


async def code(server, method, path):
    response = await server.client.request(method, server.v2(path))
    await response.content()
    return response.code


def backdate(server, name, tag, days):
    link = Path(str(server.root) + paths.tag_current_link(name, tag))
    moment = time.time() - days * DAY
    os.utime(link, (moment, moment))


async def populate(server):
    """ci/app with tags of different ages, a pulled one, a release, an
    index with untagged children and a referrer of a tag that goes; and
    other/app, which no rule covers.  Returns the digests by name."""
    name = "ci/app"
    digests = {}
    for tag, days in [("old1", 40), ("old2", 35), ("pulled", 50), ("release", 60), ("new1", 0)]:
        body = await push_image(server, name, layers=1)
        assert (await put_manifest(server, name, tag, body)).code == 201
        backdate(server, name, tag, days)
        digests[tag] = sha256(body)
    children = []
    for _ in range(2):
        body = await push_image(server, name, layers=1)
        assert (await put_manifest(server, name, sha256(body), body)).code == 201
        children.append({"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body)})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    assert (await put_manifest(server, name, "new2", index, OCI_INDEX)).code == 201
    digests["new2"] = sha256(index)
    digests["children"] = [child["digest"] for child in children]
    await push_blob(server, name, EMPTY_CONFIG)
    referrer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": sha256(EMPTY_CONFIG),
                "size": 2,
            },
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": digests["old1"], "size": 1},
        }
    ).encode()
    assert (await put_manifest(server, name, sha256(referrer), referrer)).code == 201
    digests["referrer"] = sha256(referrer)
    body = await push_image(server, "other/app", layers=1)
    assert (await put_manifest(server, "other/app", "ancient", body)).code == 201
    backdate(server, "other/app", "ancient", 400)
    # A pull (HEAD by tag, as clients resolve) keeps "pulled".
    assert await code(server, "HEAD", f"{name}/manifests/pulled") == 200
    return digests


@pytest_twisted.ensureDeferred
async def test_dry_run_reports_then_the_run_deletes_what_no_clause_keeps(tmp_path):
    recorders = []
    async with serving(tmp_path, pulls=recording(recorders)) as server:
        d = await populate(server)
        retention = Retention(server.registry, CONFIG, recorders[0])
        report = await retention.run(dry_run=True)
        lines = list(report.lines())
        assert (
            lines[0] == "retention (dry run): 1 repositories, would delete 2 tags and 3 manifests"
        )
        assert lines[1] == "ci/app (lifecycle.retention.rules[0])"
        tag_lines = {line.split()[2]: line for line in lines[2:] if " tag " in line}
        assert tag_lines["old1"] == (
            f"  delete tag      old1  {d['old1']}  no keep clause holds: #4 newest, pushed 40d ago, pulled never"
        )
        assert tag_lines["old2"] == (
            f"  delete tag      old2  {d['old2']}  no keep clause holds: #3 newest, pushed 35d ago, pulled never"
        )
        assert tag_lines["new1"].startswith(
            f"  keep   tag      new1  {d['new1']}  among the newest 2 (#"
        )
        assert tag_lines["pulled"].startswith(
            f"  keep   tag      pulled  {d['pulled']}  pulled within 7d ("
        )
        assert (
            tag_lines["release"]
            == f"  keep   tag      release  {d['release']}  tag matches ['release']"
        )
        manifest_lines = {line.split()[2]: line for line in lines[2:] if " manifest " in line}
        assert manifest_lines[d["old1"]] == f"  delete manifest {d['old1']}  untagged"
        assert manifest_lines[d["old2"]] == f"  delete manifest {d['old2']}  untagged"
        assert manifest_lines[d["referrer"]] == f"  delete manifest {d['referrer']}  untagged"
        for child in d["children"]:
            assert manifest_lines[child] == f"  keep   manifest {child}  child of {d['new2']}"
        assert manifest_lines[d["new2"]] == f"  keep   manifest {d['new2']}  tagged new2"
        assert len(manifest_lines) == 9 and len(tag_lines) == 6
        # A dry run deletes nothing (looked at without pulling, which would keep old1).
        response = await server.client.get(server.v2("ci/app/tags/list"))
        assert json.loads(await response.content())["tags"] == [
            "new1",
            "new2",
            "old1",
            "old2",
            "pulled",
            "release",
        ]

        report = await retention.run()
        assert report.deleted() == (2, 3), list(report.lines())
        for tag in ("old1", "old2"):
            assert await code(server, "GET", f"ci/app/manifests/{tag}") == 404
            assert await code(server, "GET", f"ci/app/manifests/{d[tag]}") == 404
        assert await code(server, "GET", f"ci/app/manifests/{d['referrer']}") == 404
        for tag in ("pulled", "release", "new1", "new2"):
            assert await code(server, "GET", f"ci/app/manifests/{tag}") == 200
        for child in d["children"]:
            assert await code(server, "GET", f"ci/app/manifests/{child}") == 200
        assert await code(server, "GET", "other/app/manifests/ancient") == 200
        assert (await retention.run()).deleted() == (0, 0)


class PausingDriver(FilesystemDriver):
    """The first delete waits until ``resume`` fires (``paused`` says it is waiting)."""

    def __init__(self, root):
        super().__init__(root)
        self.paused = False
        self.resume = defer.Deferred()

    def delete(self, path):
        if "/_manifests/tags/" in path and not self.paused:
            self.paused = True
            return self.resume.addCallback(lambda _: super(PausingDriver, self).delete(path))
        return super().delete(path)


@pytest_twisted.ensureDeferred
async def test_a_push_during_a_run_keeps_what_it_pushed(tmp_path):
    driver = PausingDriver(str(tmp_path / "registry-data"))
    async with serving(tmp_path, driver=driver) as server:
        d = await populate(server)
        running = defer.ensureDeferred(
            Retention(server.registry, CONFIG, recording([])(server.registry)).run()
        )
        await wait_for(lambda: driver.paused, timeout=30)
        # The run has decided that old2 and its manifest go; a push now
        # moves old2 elsewhere and tags old2's manifest again.
        moved = await push_image(server, "ci/app", layers=1)
        assert (await put_manifest(server, "ci/app", "old2", moved)).code == 201
        response = await server.client.put(
            server.v2(f"ci/app/manifests/{d['old2']}?tag=again"),
            data=(
                await (
                    await server.client.get(server.v2(f"ci/app/manifests/{d['old2']}"))
                ).content()
            ),
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert response.code == 201, await response.content()
        driver.resume.callback(None)
        report = await running
        decisions = {d.name: d for r in report.repositories for d in r.tags + r.manifests}
        assert (
            decisions["old2"].delete is False
            and decisions["old2"].reason == "written during the run: kept"
        )
        assert decisions[d["old2"]].delete is False
        assert await code(server, "GET", "ci/app/manifests/old2") == 200
        assert await code(server, "GET", "ci/app/manifests/again") == 200
        assert await code(server, "GET", "ci/app/manifests/old1") == 404


@pytest_twisted.ensureDeferred
async def test_python_m_registryd_retention_from_the_configuration(tmp_path):
    async with serving(tmp_path) as server:
        d = await populate(server)
    config = tmp_path / "registryd.yaml"
    config.write_text(f"""\
version: 0.1
storage:
  filesystem: {{rootdirectory: {tmp_path / "registry-data"}}}
lifecycle:
  retention:
    rules:
      - repository: "ci/**"
        keep: {{newest: 2, tags: [release]}}
        untagged: delete
""")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "registryd", "retention", "--config", str(config)]
    dry = await deferToThread(
        subprocess.run, command + ["--dry-run"], capture_output=True, env=env, timeout=120
    )
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.decode().splitlines()
    # The pull was recorded by no daemon here: "pulled" goes too.
    assert lines[0] == "retention (dry run): 1 repositories, would delete 3 tags and 4 manifests"
    real = await deferToThread(
        subprocess.run, command + ["--json"], capture_output=True, env=env, timeout=120
    )
    assert real.returncode == 0, real.stderr
    report = json.loads(real.stdout)
    assert (report["dry_run"], report["deleted_tags"], report["deleted_manifests"]) == (False, 3, 4)
    [repository] = report["repositories"]
    assert {t["tag"] for t in repository["tags"] if t["action"] == "delete"} == {
        "old1",
        "old2",
        "pulled",
    }
    assert {m["digest"] for m in repository["manifests"] if m["action"] == "delete"} == {
        d["old1"],
        d["old2"],
        d["pulled"],
        d["referrer"],
    }
    missing = await deferToThread(
        subprocess.run,
        [sys.executable, "-m", "registryd", "retention", "--config", str(config) + ".nope"],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert missing.returncode == 2 and b"Traceback" not in missing.stderr

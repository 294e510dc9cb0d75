"""GET /v2/<name>/_registryd/tags over a real socket: each tag's digest,
media type, size, platforms, push and pull times and protection, paged
like tags/list; pull times seen by another node once flushed; and a pull
that never waits for the pull record's write."""

import json
import time

import pytest_twisted
from twisted.internet import defer

from registryd.lifecycle.immutable import ImmutableRule, ImmutableTags
from registryd.lifecycle.pulls import PullRecorder
from registryd.storage.drivers.filesystem import FilesystemDriver
from tests.integration.test_manifests_api import (
    OCI_INDEX,
    OCI_MANIFEST,
    header,
    push_blob,
    put_manifest,
)
from tests.service_support import wait_for
from tests.support import serving, sha256

RULES = ImmutableTags([ImmutableRule("team/**", ["v*"], where="lifecycle.immutable[0]")])


def recording(recorders):
    """A start_registry ``pulls`` factory keeping the recorder it makes."""
    from twisted.internet import reactor

    def make(registry):
        recorder = PullRecorder(registry, reactor)
        recorders.append(recorder)
        return recorder

    return make


async def push_platform_image(server, name, architecture, variant=None):
    platform = {"architecture": architecture, "os": "linux"}
    if variant:
        platform["variant"] = variant
    config = await push_blob(server, name, json.dumps(platform).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    layer = await push_blob(server, name, architecture.encode() * 100)
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [layer],
        }
    ).encode()
    return body, len(body) + config["size"] + layer["size"], platform


async def details(server, name, query=""):
    response = await server.client.get(server.v2(f"{name}/_registryd/tags{query}"))
    assert response.code == 200, await response.content()
    assert header(response, "Content-Type") == "application/json"
    return response, json.loads(await response.content())


@pytest_twisted.ensureDeferred
async def test_details_of_images_and_indexes(tmp_path):
    recorders = []
    async with serving(tmp_path, immutable_tags=RULES, pulls=recording(recorders)) as server:
        name = "team/app"
        before = time.time() - 2
        amd64, amd64_size, _ = await push_platform_image(server, name, "amd64")
        arm64, arm64_size, _ = await push_platform_image(server, name, "arm64", "v8")
        assert (await put_manifest(server, name, "v1", amd64)).code == 201
        assert (await put_manifest(server, name, sha256(arm64), arm64)).code == 201
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": sha256(amd64),
                        "size": len(amd64),
                        "platform": {"os": "linux", "architecture": "amd64"},
                    },
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": sha256(arm64),
                        "size": len(arm64),
                        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                    },
                ],
            }
        ).encode()
        assert (await put_manifest(server, name, "latest", index, OCI_INDEX)).code == 201

        _, listing = await details(server, name)
        assert listing["name"] == name
        latest, v1 = listing["tags"]
        assert v1 == {
            "tag": "v1",
            "digest": sha256(amd64),
            "mediaType": OCI_MANIFEST,
            "size": amd64_size,
            "platforms": ["linux/amd64"],
            "pushed": v1["pushed"],
            "pulled": None,
            "protected": True,
            "rule": "lifecycle.immutable[0] (repository 'team/**', tags ['v*'])",
        }
        assert latest == {
            "tag": "latest",
            "digest": sha256(index),
            "mediaType": OCI_INDEX,
            "size": len(index) + amd64_size + arm64_size,
            "platforms": ["linux/amd64", "linux/arm64/v8"],
            "pushed": latest["pushed"],
            "pulled": None,
            "protected": False,
        }
        pushed = time.mktime(time.strptime(v1["pushed"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        assert before <= pushed <= time.time() + 2

        # A HEAD by tag (how clients resolve it) counts as a pull at once.
        response = await server.client.head(server.v2(f"{name}/manifests/v1"))
        await response.content()
        _, listing = await details(server, name)
        assert listing["tags"][1]["pulled"] is not None and listing["tags"][0]["pulled"] is None
        # A GET by digest counts for the tags naming it.
        response = await server.client.get(server.v2(f"{name}/manifests/{sha256(index)}"))
        await response.content()
        _, listing = await details(server, name)
        assert listing["tags"][0]["pulled"] is not None

        # Paged as tags/list.
        response, listing = await details(server, name, "?n=1")
        assert [entry["tag"] for entry in listing["tags"]] == ["latest"]
        assert (
            header(response, "Link") == f'</v2/{name}/_registryd/tags?n=1&last=latest>; rel="next"'
        )
        _, listing = await details(server, name, "?n=1&last=latest")
        assert [entry["tag"] for entry in listing["tags"]] == ["v1"]

        # Another node on the same storage sees the pulls once flushed.
        await recorders[0].flush()
        other_recorders = []
        async with serving(tmp_path, pulls=recording(other_recorders)) as other:
            _, listing = await details(other, name)
            assert [entry["pulled"] is not None for entry in listing["tags"]] == [True, True]
            assert [entry["protected"] for entry in listing["tags"]] == [
                False,
                False,
            ]  # its config has no rules


@pytest_twisted.ensureDeferred
async def test_unknown_repository_is_name_unknown(server):
    response = await server.client.get(server.v2("nothing/_registryd/tags"))
    assert response.code == 404
    assert [e["code"] for e in json.loads(await response.content())["errors"]] == ["NAME_UNKNOWN"]


class StalledRecordDriver(FilesystemDriver):
    """Writes of pull records wait until ``release`` fires."""

    def __init__(self, root):
        super().__init__(root)
        self.release = defer.Deferred()
        self.stalled = 0

    def put_content(self, path, content):
        if not path.endswith("/pulls.json"):
            return super().put_content(path, content)
        self.stalled += 1
        return self.release.addCallback(
            lambda _: super(StalledRecordDriver, self).put_content(path, content)
        )


@pytest_twisted.ensureDeferred
async def test_a_pull_never_waits_for_the_pull_record(tmp_path):
    recorders = []
    driver = StalledRecordDriver(str(tmp_path / "registry-data"))
    async with serving(tmp_path, driver=driver, pulls=recording(recorders)) as server:
        body, _, _ = await push_platform_image(server, "team/app", "amd64")
        assert (await put_manifest(server, "team/app", "v1", body)).code == 201
        response = await server.client.get(server.v2("team/app/manifests/v1"))
        await response.content()
        flushing = recorders[0].flush()
        await wait_for(lambda: driver.stalled == 1, timeout=30)
        assert not flushing.called
        for _ in range(3):  # the record's write hangs; pulls go on
            response = await server.client.get(server.v2("team/app/manifests/v1"))
            assert response.code == 200
            await response.content()
        driver.release.callback(None)
        await flushing
        await recorders[0].flush()
        _, listing = await details(server, "team/app")
        assert listing["tags"][0]["pulled"] is not None

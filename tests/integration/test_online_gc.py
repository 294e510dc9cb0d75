"""Online garbage collection while clients push over a real socket.

The dangerous pushes are not the fresh ones (their blobs are younger than
the grace period) but those that reuse old, unreferenced blobs: the client
sees them with HEAD, does not upload them again, and puts a manifest that
references them -- possibly between the collector's mark and its sweep.
Here pushers do exactly that, in a loop, while collections run back to
back; afterwards every manifest a client was told is stored must be whole,
and the garbage nobody came back for must be gone.
"""

import json
import os
import time

import pytest_twisted
from twisted.internet import defer

from registryd.config import Config
from registryd.ops.maintenance import Maintenance
from tests.support import sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


async def upload(server, name, data):
    response = await server.client.post(
        server.v2(f"{name}/blobs/uploads/?digest={sha256(data)}"), data=data
    )
    assert response.code == 201, await response.content()
    await response.content()


async def has_blob(server, name, digest):
    response = await server.client.head(server.v2(f"{name}/blobs/{digest}"))
    await response.content()
    return response.code == 200


def make_image(layers=2):
    config = json.dumps({"id": os.urandom(8).hex()}).encode()
    blobs = {sha256(config): config}
    for _ in range(layers):
        data = os.urandom(20_000)
        blobs[sha256(data)] = data
    digests = list(blobs)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digests[0],
                "size": len(blobs[digests[0]]),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": d,
                    "size": len(blobs[d]),
                }
                for d in digests[1:]
            ],
        }
    ).encode()
    return manifest, blobs


async def push(server, name, tag, image, stats):
    """Push like docker does: skip blobs HEAD finds; on MANIFEST_BLOB_UNKNOWN
    (a collector took one meanwhile) upload what is missing and retry."""
    manifest, blobs = image
    for digest, data in blobs.items():
        if await has_blob(server, name, digest):
            stats["reused"] += 1
        else:
            await upload(server, name, data)
    for _ in range(5):
        response = await server.client.put(
            server.v2(f"{name}/manifests/{tag}"),
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        body = await response.content()
        if response.code == 201:
            return
        assert response.code == 400, body
        missing = json.loads(body)["errors"][0]["detail"]["missing"]
        stats["retried"] += 1
        for digest in missing:
            await upload(server, name, blobs[digest])
    raise AssertionError(f"could not push {name}:{tag}")


def age_everything(root, seconds):
    old = time.time() - seconds
    for directory, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(directory, name), (old, old))


@pytest_twisted.ensureDeferred
async def test_concurrent_pushes_never_lose_referenced_blobs(server):
    registry = server.registry
    # History: images pushed and deleted long ago.  Their blobs are still
    # linked in the repository (HEAD says 200) but nothing references them.
    old = [make_image() for _ in range(6)]
    for i, image in enumerate(old):
        await push(server, "app", f"old{i}", image, {"reused": 0, "retried": 0})
        response = await server.client.delete(server.v2(f"app/manifests/{sha256(image[0])}"))
        assert response.code == 202
        await response.content()
    age_everything(server.root, 2 * 3600)

    stats = {"reused": 0, "retried": 0}
    pushed = []  # (name, tag, image) the registry accepted
    maintenance = Maintenance(registry, Config())
    reports = []
    pushing = True

    async def pusher(number):
        # Even pushers bring old images back (reusing old blobs), odd ones
        # push new images (fresh blobs, protected by the grace period).
        for round_ in range(6):
            if number % 2 == 0:
                image, name = old[(number + round_) % 3], "app"
            else:
                image, name = make_image(), f"fresh/p{number}"
            tag = f"p{number}-r{round_}"
            await push(server, name, tag, image, stats)
            pushed.append((name, tag, image))

    async def collector():
        while pushing:
            reports.append(await maintenance.gc(dry_run=False))

    collecting = defer.ensureDeferred(collector())
    await defer.gatherResults(
        [defer.ensureDeferred(pusher(n)) for n in range(4)], consumeErrors=True
    )
    pushing = False
    await collecting
    reports.append(await maintenance.gc(dry_run=False))

    assert len(reports) >= 3 and stats["reused"] > 0
    # Everything a client was told is stored is whole.
    for name, tag, (manifest, blobs) in pushed:
        response = await server.client.get(server.v2(f"{name}/manifests/{tag}"))
        assert response.code == 200
        assert await response.content() == manifest
        for digest, data in blobs.items():
            response = await server.client.get(server.v2(f"{name}/blobs/{digest}"))
            assert response.code == 200, (name, tag, digest)
            assert await response.content() == data
    # Old images nobody pushed again are gone, blobs and links.
    removed = {digest for report in reports for digest, _ in report.blobs_removed}
    for manifest, blobs in old[3:]:
        assert sha256(manifest) in removed
        for digest in blobs:
            assert digest in removed
            assert not await has_blob(server, "app", digest)
    assert sum(report.bytes_reclaimed for report in reports) > 3 * 40_000
    assert registry.guard.held == []

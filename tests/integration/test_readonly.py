"""Read-only mode over a real socket: every write is 405 UNSUPPORTED with a
message saying why, reads go on, and turning it off (as the manhole does)
lets pushes continue where they stopped."""

import json
import os

import pytest_twisted

from tests.support import raw_request, sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


async def refused(response):
    body = json.loads(await response.content())
    assert response.code == 405, body
    assert header(response, "Allow") == "GET, HEAD"
    (error,) = body["errors"]
    assert error["code"] == "UNSUPPORTED"
    assert "read-only mode" in error["message"]
    return True


async def push_blob(server, name, data):
    response = await server.client.post(
        server.v2(f"{name}/blobs/uploads/?digest={sha256(data)}"), data=data
    )
    assert response.code == 201, await response.content()
    await response.content()
    return sha256(data)


@pytest_twisted.ensureDeferred
async def test_writes_are_refused_reads_served(server):
    config = b"{}"
    config_digest = await push_blob(server, "app", config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    response = await server.client.put(
        server.v2("app/manifests/v1"), data=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.code == 201
    await response.content()
    response = await server.client.post(server.v2("app/blobs/uploads/"))
    upload = header(response, "Location")
    await response.content()

    server.registry.read_only = True
    big = os.urandom(3 * 1024 * 1024)
    client = server.client
    assert await refused(await client.post(server.v2("app/blobs/uploads/")))
    assert await refused(
        await client.post(server.v2(f"app/blobs/uploads/?digest={sha256(big)}"), data=big)
    )
    assert await refused(
        await client.post(server.v2(f"new/blobs/uploads/?mount={config_digest}&from=app"))
    )
    assert await refused(await client.patch(upload, data=big))
    assert await refused(await client.put(f"{upload}?digest={sha256(b'')}"))
    assert await refused(await client.delete(upload))
    assert await refused(
        await client.put(
            server.v2("app/manifests/v2"), data=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
    )
    assert await refused(await client.delete(server.v2(f"app/manifests/{sha256(manifest)}")))
    assert await refused(await client.delete(server.v2(f"app/blobs/{config_digest}")))
    # The connection stays usable after a refused streamed body.
    status, headers, _ = await raw_request(
        server, "POST", "/v2/app/blobs/uploads/", body=b"x" * 1000
    )
    assert status == 405 and headers["allow"] == "GET, HEAD"
    # Nothing was written: no new repository, no new upload, tag unchanged.
    assert sorted(os.listdir(server.root / "docker/registry/v2/repositories")) == ["app"]
    assert len(os.listdir(server.root / "docker/registry/v2/repositories/app/_uploads")) == 1

    for path in ("", "_catalog", "app/tags/list", "app/manifests/v1", f"app/blobs/{config_digest}"):
        response = await client.get(server.v2(path))
        assert response.code == 200, path
        await response.content()
    response = await client.head(server.v2("app/manifests/v1"))
    assert response.code == 200
    response = await client.get(upload)  # an upload's status is a read
    assert response.code == 204 and header(response, "Range") == "0-0"
    await response.content()

    # Off again: the upload started before goes on.
    server.registry.read_only = False
    data = os.urandom(1000)
    response = await client.put(f"{upload}?digest={sha256(data)}", data=data)
    assert response.code == 201, await response.content()
    await response.content()


def test_the_configuration_switches_it_on():
    import yaml

    from registryd.config import parse_config
    from registryd.runtime.composition import compose
    from registryd.runtime.service import RegistryService
    from registryd.runtime.startup import from_config

    config = parse_config(
        yaml.safe_load(
            "version: 0.1\nstorage:\n  inmemory:\n  maintenance:\n    readonly: {enabled: true}\n"
            "http: {addr: '127.0.0.1:0'}\n"
        )
    )
    service = RegistryService(compose(from_config(config)))
    assert service.registry.read_only is True
    assert service.getServiceNamed("upload purging").interval == 86400.0
    assert service.manhole is None

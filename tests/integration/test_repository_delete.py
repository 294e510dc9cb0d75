"""DELETE /v2/<name>/_registryd/repository over a real socket: what goes,
what stays (other repositories, blobs for GC, a push in flight), and how
an emptied repository disappears from the catalog and tags list."""

import json
import os
import socket

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.integration.test_manifests_api import (
    EMPTY_CONFIG,
    OCI_MANIFEST,
    error_codes,
    header,
    push_blob,
    push_image,
    put_manifest,
)
from tests.service_support import wait_for
from tests.support import serving, sha256


async def status(server, method, path, **kwargs):
    response = await server.client.request(method, server.v2(path), **kwargs)
    await response.content()
    return response.code


async def catalog(server):
    response = await server.client.get(server.v2("_catalog"))
    return json.loads(await response.content())["repositories"]


async def push_tagged(server, name, tag, layers=1):
    body = await push_image(server, name, layers=layers)
    response = await put_manifest(server, name, tag, body)
    assert response.code == 201, await response.content()
    return body


@pytest_twisted.ensureDeferred
async def test_delete_repository_removes_tags_manifests_links_referrers_and_uploads(server):
    name = "team/app"
    body = await push_tagged(server, name, "v1")
    await push_tagged(server, name, "v2")
    layer = json.loads(body)["layers"][0]["digest"]
    await push_blob(server, name, EMPTY_CONFIG)
    artifact = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": sha256(EMPTY_CONFIG),
                "size": 2,
            },
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body)},
        }
    ).encode()
    assert (await put_manifest(server, name, sha256(artifact), artifact)).code == 201
    response = await server.client.post(server.v2(f"{name}/blobs/uploads/"))
    await response.content()
    upload = header(response, "Location")
    await push_tagged(server, "team/other", "v1")

    response = await server.client.delete(server.v2(f"{name}/_registryd/repository"))
    assert response.code == 202, await response.content()

    assert await status(server, "GET", f"{name}/manifests/v1") == 404
    assert await status(server, "GET", f"{name}/manifests/{sha256(body)}") == 404
    assert await status(server, "GET", f"{name}/blobs/{layer}") == 404
    response = await server.client.get(server.v2(f"{name}/referrers/{sha256(body)}"))
    assert json.loads(await response.content())["manifests"] == []
    assert (await server.client.get(upload)).code == 404
    response = await server.client.get(server.v2(f"{name}/tags/list"))
    assert response.code == 404
    assert await error_codes(response) == ["NAME_UNKNOWN"]
    assert await catalog(server) == ["team/other"]
    assert await status(server, "GET", "team/other/manifests/v1") == 200
    # The blob's data stays for garbage collection: another repository
    # can still mount it.
    assert (
        await status(server, "POST", f"team/other/blobs/uploads/?mount={layer}&from=team/other")
        == 202
    )
    # Nothing left: a second delete finds no repository.
    response = await server.client.delete(server.v2(f"{name}/_registryd/repository"))
    assert response.code == 404
    assert await error_codes(response) == ["NAME_UNKNOWN"]


@pytest_twisted.ensureDeferred
async def test_delete_repository_refused_when_deletes_are_disabled(tmp_path):
    async with serving(tmp_path, delete_enabled=False) as server:
        response = await server.client.delete(server.v2("team/app/_registryd/repository"))
        assert response.code == 405
        assert await error_codes(response) == ["UNSUPPORTED"]


def _start_patch(port, path, declared, payload):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n".encode()
    )
    sock.sendall(payload)
    return sock


def _finish_patch(sock, payload):
    with sock:
        sock.sendall(payload)
        return sock.recv(4096)


@pytest_twisted.ensureDeferred
async def test_delete_repository_keeps_the_upload_in_flight_and_what_it_acknowledges(server):
    """A layer upload under way while the repository is deleted goes on;
    the blob and the manifest pushed after it are there afterwards."""
    name = "team/busy"
    await push_tagged(server, name, "old")
    data = os.urandom(256 * 1024)
    response = await server.client.post(server.v2(f"{name}/blobs/uploads/"))
    await response.content()
    location = header(response, "Location")
    upload_id = header(response, "Docker-Upload-UUID")
    sock = _start_patch(
        server.port.getHost().port, location.split(server.url, 1)[1], len(data), data[:1000]
    )
    await wait_for(lambda: server.registry.upload_lock.in_use(upload_id), timeout=30)

    response = await server.client.delete(server.v2(f"{name}/_registryd/repository"))
    assert response.code == 202, await response.content()
    assert await status(server, "GET", f"{name}/manifests/old") == 404

    answer = await deferToThread(_finish_patch, sock, data[1000:])
    assert answer.startswith(b"HTTP/1.1 202"), answer
    response = await server.client.put(f"{location}?digest={sha256(data)}")
    assert response.code == 201, await response.content()
    config = await push_blob(server, name, b'{"architecture": "amd64", "os": "linux"}')
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(data),
                    "size": len(data),
                }
            ],
        }
    ).encode()
    assert (await put_manifest(server, name, "new", manifest)).code == 201
    response = await server.client.get(server.v2(f"{name}/tags/list"))
    assert json.loads(await response.content())["tags"] == ["new"]
    assert await catalog(server) == [name]

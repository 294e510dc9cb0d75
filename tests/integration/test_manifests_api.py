"""Manifests, tags, catalog and referrers over a real socket, with treq."""

import json
import os

import pytest_twisted

from tests.support import raw_request, sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
EMPTY_CONFIG = b"{}"


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


async def error_codes(response):
    return [e["code"] for e in json.loads(await response.content())["errors"]]


async def push_blob(server, name, data):
    response = await server.client.post(
        server.v2(f"{name}/blobs/uploads/?digest={sha256(data)}"), data=data
    )
    assert response.code == 201, await response.content()
    await response.content()
    return {"mediaType": "application/octet-stream", "digest": sha256(data), "size": len(data)}


async def push_image(
    server, name, layers=2, config_type="application/vnd.oci.image.config.v1+json"
):
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}
    ).encode()
    config_descriptor = await push_blob(server, name, config)
    config_descriptor["mediaType"] = config_type
    layer_descriptors = []
    for _ in range(layers):
        descriptor = await push_blob(server, name, os.urandom(2000))
        descriptor["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        layer_descriptors.append(descriptor)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_descriptor,
        "layers": layer_descriptors,
    }
    return json.dumps(manifest, indent=2).encode()


async def put_manifest(server, name, reference, body, media_type=OCI_MANIFEST):
    response = await server.client.put(
        server.v2(f"{name}/manifests/{reference}"), data=body, headers={"Content-Type": media_type}
    )
    return response


@pytest_twisted.ensureDeferred
async def test_put_get_head_by_tag_and_digest(server):
    body = await push_image(server, "img/app")
    response = await put_manifest(server, "img/app", "v1", body)
    assert response.code == 201, await response.content()
    digest = sha256(body)
    assert header(response, "Docker-Content-Digest") == digest
    assert header(response, "Location").endswith(f"/v2/img/app/manifests/{digest}")
    await response.content()
    for reference in ("v1", digest):
        response = await server.client.get(
            server.v2(f"img/app/manifests/{reference}"), headers={"Accept": OCI_MANIFEST}
        )
        assert response.code == 200
        assert await response.content() == body  # the exact bytes
        assert header(response, "Content-Type") == OCI_MANIFEST
        assert header(response, "Docker-Content-Digest") == digest
        status, headers, payload = await raw_request(
            server, "HEAD", f"/v2/img/app/manifests/{reference}"
        )
        assert status == 200 and payload == b""
        assert headers["content-length"] == str(len(body))
        assert headers["docker-content-digest"] == digest
    # the layout Distribution uses
    hexd = digest.split(":")[1]
    base = server.root / "docker/registry/v2/repositories/img/app/_manifests"
    assert (base / f"revisions/sha256/{hexd}/link").read_bytes() == digest.encode()
    assert (base / "tags/v1/current/link").read_bytes() == digest.encode()
    assert (base / f"tags/v1/index/sha256/{hexd}/link").read_bytes() == digest.encode()


@pytest_twisted.ensureDeferred
async def test_missing_blobs_are_named(server):
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(b"nope"),
                "size": 4,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(b"also nope"),
                    "size": 9,
                }
            ],
        }
    ).encode()
    response = await put_manifest(server, "img/missing", "v1", body)
    assert response.code == 400
    errors = json.loads(await response.content())["errors"]
    assert errors[0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert sha256(b"nope") in json.dumps(errors) and sha256(b"also nope") in json.dumps(errors)
    response = await server.client.get(server.v2("img/missing/manifests/v1"))
    assert response.code == 404
    assert await error_codes(response) == ["MANIFEST_UNKNOWN"]


@pytest_twisted.ensureDeferred
async def test_non_distributable_layer_urls_checked_when_configured(server):
    """validation.manifests.urls: a foreign layer is never required to be
    pushed, but its URLs must pass the configured patterns; a refused
    manifest is not stored."""
    from registryd.manifests.verify import URLPolicy

    image = json.loads(await push_image(server, "img/foreign", layers=1))
    foreign = {
        "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "digest": sha256(b"windows base layer"),
        "size": 18,
        "urls": ["https://www.example.com/base.tar.gz"],
    }
    image["layers"].append(foreign)
    body = json.dumps(image).encode()
    response = await put_manifest(server, "img/foreign", "v1", body)
    assert response.code == 201, await response.content()  # no policy: any URL

    server.registry.manifest_url_policy = URLPolicy(
        allow=[r"^https?://([^/]+\.)*example\.com/"], deny=[r"^https?://www\.example\.com/"]
    )
    response = await put_manifest(server, "img/foreign", "v2", body)
    assert response.code == 400
    errors = json.loads(await response.content())["errors"]
    assert [e["code"] for e in errors] == ["MANIFEST_BLOB_UNKNOWN"]
    assert errors[0]["detail"] == {"digest": foreign["digest"], "url": foreign["urls"][0]}
    assert "validation.manifests.urls.deny" in errors[0]["message"]
    response = await server.client.get(server.v2("img/foreign/manifests/v2"))
    assert response.code == 404
    await response.content()

    foreign["urls"] = ["https://mirror.example.com/base.tar.gz"]
    response = await put_manifest(server, "img/foreign", "v2", json.dumps(image).encode())
    assert response.code == 201, await response.content()


@pytest_twisted.ensureDeferred
async def test_digest_reference_must_match(server):
    body = await push_image(server, "img/d")
    response = await put_manifest(server, "img/d", sha256(b"other"), body)
    assert response.code == 400
    assert await error_codes(response) == ["DIGEST_INVALID"]


@pytest_twisted.ensureDeferred
async def test_put_by_digest_with_tags(server):
    body = await push_image(server, "img/t")
    digest = sha256(body)
    response = await server.client.put(
        server.v2(f"img/t/manifests/{digest}?tag=a&tag=b"),
        data=body,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.code == 201, await response.content()
    assert response.headers.getRawHeaders("OCI-Tag") == ["a, b"]
    response = await server.client.get(server.v2("img/t/tags/list"))
    assert json.loads(await response.content()) == {"name": "img/t", "tags": ["a", "b"]}


def oci_tags(response):
    """The OCI-Tag list (RFC 9110 section 5: fields joined by commas)."""
    return [
        tag.strip()
        for value in response.headers.getRawHeaders("OCI-Tag") or []
        for tag in value.split(",")
        if tag.strip()
    ]


@pytest_twisted.ensureDeferred
async def test_oci_tag_names_each_accepted_tag(server):
    """The spec's OCI-Tag response header lists every tag a manifest PUT
    set, once each: by sha256 and sha512 digest with ?tag=, and by tag;
    no header when a digest PUT sets no tag."""
    from tests.support import sha512

    body = await push_image(server, "img/ot")
    for digest in (sha256(body), sha512(body)):
        response = await server.client.put(
            server.v2(f"img/ot/manifests/{digest}?tag=1.2.3&tag=1.2&tag=1&tag=latest&tag=1"),
            data=body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert response.code == 201, await response.content()
        await response.content()
        assert header(response, "Docker-Content-Digest") == digest
        assert oci_tags(response) == ["1.2.3", "1.2", "1", "latest"]
        response = await server.client.get(server.v2("img/ot/manifests/1.2"))
        assert header(response, "Docker-Content-Digest") == digest
        assert await response.content() == body
    response = await put_manifest(server, "img/ot", "v9", body)
    assert response.code == 201
    await response.content()
    assert oci_tags(response) == ["v9"]
    response = await put_manifest(server, "img/ot", sha256(body), body)
    assert response.code == 201
    await response.content()
    assert response.headers.getRawHeaders("OCI-Tag") is None


@pytest_twisted.ensureDeferred
async def test_too_large_manifest(server):
    body = b"{" + b" " * (4 * 1024 * 1024) + b"}"
    response = await put_manifest(server, "img/big", "v1", body)
    assert response.code == 413
    await response.content()


@pytest_twisted.ensureDeferred
async def test_invalid_manifest_and_tag(server):
    response = await put_manifest(server, "img/bad", "v1", b"not json")
    assert response.code == 400
    assert await error_codes(response) == ["MANIFEST_INVALID"]
    body = await push_image(server, "img/bad")
    response = await put_manifest(server, "img/bad", ".dot", body)
    assert response.code == 400
    assert await error_codes(response) == ["TAG_INVALID"]


@pytest_twisted.ensureDeferred
async def test_tags_pagination(server):
    body = await push_image(server, "img/pages", layers=0)
    digest = sha256(body)
    names = [f"t{i:03d}" for i in range(25)]
    for name in names:
        response = await put_manifest(server, "img/pages", name, body)
        await response.content()
    response = await server.client.get(server.v2("img/pages/tags/list?n=10"))
    assert json.loads(await response.content())["tags"] == names[:10]
    link = header(response, "Link")
    assert link == '</v2/img/pages/tags/list?n=10&last=t009>; rel="next"'
    response = await server.client.get(server.v2("img/pages/tags/list?n=10&last=t019"))
    assert json.loads(await response.content())["tags"] == names[20:]
    assert header(response, "Link") is None
    response = await server.client.get(server.v2("img/pages/tags/list?n=x"))
    assert response.code == 400
    await response.content()
    response = await server.client.get(server.v2("nothing/here/tags/list"))
    assert response.code == 404
    assert await error_codes(response) == ["NAME_UNKNOWN"]
    assert digest


@pytest_twisted.ensureDeferred
async def test_catalog(server):
    for name in ("b/one", "a", "b/two", "c/d/e"):
        body = await push_image(server, name, layers=0)
        response = await put_manifest(server, name, "latest", body)
        await response.content()
    await push_blob(server, "blobs/only", b"no manifests here")
    response = await server.client.get(server.v2("_catalog"))
    assert json.loads(await response.content()) == {
        "repositories": ["a", "b/one", "b/two", "c/d/e"]
    }
    response = await server.client.get(server.v2("_catalog?n=2"))
    assert json.loads(await response.content()) == {"repositories": ["a", "b/one"]}
    assert header(response, "Link") == '</v2/_catalog?n=2&last=b%2Fone>; rel="next"'
    response = await server.client.get(server.v2("_catalog?n=2&last=b/one"))
    assert json.loads(await response.content()) == {"repositories": ["b/two", "c/d/e"]}


@pytest_twisted.ensureDeferred
async def test_delete_manifest_and_tag(server):
    body = await push_image(server, "img/del")
    digest = sha256(body)
    for tag in ("x", "y"):
        response = await put_manifest(server, "img/del", tag, body)
        await response.content()
    response = await server.client.delete(server.v2("img/del/manifests/x"))
    assert response.code == 202
    await response.content()
    response = await server.client.get(server.v2("img/del/tags/list"))
    assert json.loads(await response.content())["tags"] == ["y"]
    response = await server.client.delete(server.v2(f"img/del/manifests/{digest}"))
    assert response.code == 202
    await response.content()
    # Its last manifest gone, the repository is gone for clients.
    response = await server.client.get(server.v2("img/del/tags/list"))
    assert response.code == 404
    assert await error_codes(response) == ["NAME_UNKNOWN"]
    response = await server.client.get(server.v2("_catalog"))
    assert json.loads(await response.content()) == {"repositories": []}
    response = await server.client.get(server.v2(f"img/del/manifests/{digest}"))
    assert response.code == 404
    await response.content()


@pytest_twisted.ensureDeferred
async def test_referrers(server):
    name = "img/ref"
    body = await push_image(server, name)
    subject_digest = sha256(body)
    response = await put_manifest(server, name, "v1", body)
    await response.content()
    await push_blob(server, name, EMPTY_CONFIG)
    artifacts = []
    for artifact_type in ("application/vnd.example.sbom", "application/vnd.example.sig"):
        artifact = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": {
                    "mediaType": "application/vnd.oci.empty.v1+json",
                    "digest": sha256(EMPTY_CONFIG),
                    "size": 2,
                },
                "layers": [],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(body)},
                "annotations": {"org.example": artifact_type},
            }
        ).encode()
        response = await put_manifest(server, name, sha256(artifact), artifact)
        assert response.code == 201, await response.content()
        assert header(response, "OCI-Subject") == subject_digest
        await response.content()
        artifacts.append(artifact)
    response = await server.client.get(server.v2(f"{name}/referrers/{subject_digest}"))
    assert response.code == 200
    assert header(response, "Content-Type") == OCI_INDEX
    index = json.loads(await response.content())
    assert index["mediaType"] == OCI_INDEX
    assert sorted(d["digest"] for d in index["manifests"]) == sorted(sha256(a) for a in artifacts)
    assert {d["artifactType"] for d in index["manifests"]} == {
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    }
    response = await server.client.get(
        server.v2(f"{name}/referrers/{subject_digest}?artifactType=application/vnd.example.sig")
    )
    assert header(response, "OCI-Filters-Applied") == "artifactType"
    index = json.loads(await response.content())
    assert [d["digest"] for d in index["manifests"]] == [sha256(artifacts[1])]
    # deleting a referrer removes it from the index
    response = await server.client.delete(server.v2(f"{name}/manifests/{sha256(artifacts[1])}"))
    assert response.code == 202
    await response.content()
    response = await server.client.get(server.v2(f"{name}/referrers/{subject_digest}"))
    index = json.loads(await response.content())
    assert [d["digest"] for d in index["manifests"]] == [sha256(artifacts[0])]
    # a subject never pushed: an empty index, not 404
    response = await server.client.get(server.v2(f"{name}/referrers/{sha256(b'never')}"))
    assert response.code == 200
    assert json.loads(await response.content())["manifests"] == []
    response = await server.client.get(server.v2(f"{name}/referrers/sha256:bad"))
    assert response.code == 400
    await response.content()


@pytest_twisted.ensureDeferred
async def test_oci_index_requires_children(server):
    child = await push_image(server, "img/idx")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha256(child),
                    "size": len(child),
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    response = await put_manifest(server, "img/idx", "multi", index, OCI_INDEX)
    assert response.code == 400
    assert await error_codes(response) == ["MANIFEST_BLOB_UNKNOWN"]
    response = await put_manifest(server, "img/idx", sha256(child), child)
    await response.content()
    response = await put_manifest(server, "img/idx", "multi", index, OCI_INDEX)
    assert response.code == 201, await response.content()
    response = await server.client.get(server.v2("img/idx/manifests/multi"))
    assert header(response, "Content-Type") == OCI_INDEX
    assert await response.content() == index


@pytest_twisted.ensureDeferred
async def test_sparse_index_accepted_when_configured(tmp_path):
    from twisted.internet import reactor

    from tests.support import RunningRegistry, make_client, start_registry

    registry, port = await start_registry(tmp_path / "sparse", accept_sparse=True)
    client, pool = make_client(reactor)
    server = RunningRegistry(
        f"http://127.0.0.1:{port.getHost().port}", registry, tmp_path / "sparse", port, client
    )
    try:
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": sha256(b"arm64 only elsewhere"),
                        "size": 20,
                        "platform": {"architecture": "arm64", "os": "linux"},
                    }
                ],
            }
        ).encode()
        response = await put_manifest(server, "mirror/img", "v1", index, OCI_INDEX)
        assert response.code == 201, await response.content()
        # blobs are still required of image manifests
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": sha256(b"c"),
                    "size": 1,
                },
                "layers": [],
            }
        ).encode()
        response = await put_manifest(server, "mirror/img", "v2", body)
        assert response.code == 400
        await response.content()
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_sparse_images_accepted_when_configured(tmp_path):
    """validation.manifests.images.blobs: none (accept_sparse_images): an
    image manifest whose config and layers were never pushed is accepted
    and can be pulled by tag and digest; its blobs answer 404 BLOB_UNKNOWN.
    An index still needs its children, and without the switch the same
    manifest is refused naming the missing blobs."""
    from twisted.internet import reactor

    from tests.support import RunningRegistry, make_client, start_registry

    missing = [sha256(b"config elsewhere"), sha256(b"layer elsewhere")]
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": missing[0],
                "size": 16,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": missing[1],
                    "size": 15,
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"not pushed"), "size": 10}],
        }
    ).encode()
    for sparse in (True, False):
        root = tmp_path / f"sparse-{sparse}"
        registry, port = await start_registry(root, accept_sparse_images=sparse)
        client, pool = make_client(reactor)
        server = RunningRegistry(
            f"http://127.0.0.1:{port.getHost().port}", registry, root, port, client
        )
        try:
            response = await put_manifest(server, "mirror/img", "arm64", body)
            if not sparse:
                assert response.code == 400
                body_json = json.loads(await response.content())
                assert body_json["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
                assert body_json["errors"][0]["detail"]["missing"] == missing
                continue
            assert response.code == 201, await response.content()
            await response.content()
            for reference in ("arm64", sha256(body)):
                response = await server.client.get(
                    server.v2(f"mirror/img/manifests/{reference}"), headers={"Accept": OCI_MANIFEST}
                )
                assert response.code == 200 and await response.content() == body
            for digest in missing:
                response = await server.client.get(server.v2(f"mirror/img/blobs/{digest}"))
                assert response.code == 404
                assert await error_codes(response) == ["BLOB_UNKNOWN"]
            response = await put_manifest(server, "mirror/img", "multi", index, OCI_INDEX)
            assert response.code == 400
            assert await error_codes(response) == ["MANIFEST_BLOB_UNKNOWN"]
        finally:
            await pool.closeCachedConnections()
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_signed_schema1_round_trip(server):
    from cryptography.hazmat.primitives.asymmetric import ec

    from registryd.manifests import sign_schema1

    name = "legacy/app"
    layer = await push_blob(server, name, os.urandom(1000))
    manifest = {
        "schemaVersion": 1,
        "name": name,
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": layer["digest"]}],
        "history": [{"v1Compatibility": json.dumps({"id": "a" * 64})}],
    }
    body = sign_schema1(manifest, ec.generate_private_key(ec.SECP256R1()))
    media_type = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    response = await put_manifest(server, name, "v1", body, media_type)
    assert response.code == 201, await response.content()
    digest = header(response, "Docker-Content-Digest")
    await response.content()
    response = await server.client.get(server.v2(f"{name}/manifests/v1"))
    assert await response.content() == body  # served byte for byte, signatures included
    assert header(response, "Content-Type") == media_type
    assert header(response, "Docker-Content-Digest") == digest
    # tampering with the signed content is refused, and unsigned ones too
    tampered = body.replace(b'"amd64"', b'"arm64"')
    response = await put_manifest(server, name, "v2", tampered, media_type)
    assert response.code == 400
    assert await error_codes(response) in (["MANIFEST_UNVERIFIED"], ["MANIFEST_INVALID"])
    unsigned = json.dumps(manifest).encode()
    response = await put_manifest(
        server, name, "v3", unsigned, "application/vnd.docker.distribution.manifest.v1+json"
    )
    assert response.code == 400
    assert await error_codes(response) == ["MANIFEST_UNVERIFIED"]
    response = await server.client.get(server.v2(f"{name}/tags/list"))
    assert json.loads(await response.content())["tags"] == ["v1"]


@pytest_twisted.ensureDeferred
async def test_a_tag_moved_by_another_node_is_never_served_stale(server):
    """Tags resolve from a cache revalidated by one stat of the tag's link:
    a tag another node (here: a second registry on the same storage)
    re-points or deletes is served as it is now, also right after the
    server resolved it from its cache."""
    from registryd.storage.drivers.filesystem import FilesystemDriver
    from registryd.storage.registry import Registry

    other = Registry(FilesystemDriver(str(server.root)), delete_enabled=True)
    first = await push_image(server, "moved/app")
    second = await push_image(server, "moved/app")
    for body in (first, second):
        assert (await put_manifest(server, "moved/app", sha256(body), body)).code == 201
    link = (
        server.root
        / "docker/registry/v2/repositories/moved/app/_manifests/tags/latest/current/link"
    )

    async def served():
        response = await server.client.get(
            server.v2("moved/app/manifests/latest"), headers={"Accept": OCI_MANIFEST}
        )
        await response.content()
        return response.code, header(response, "Docker-Content-Digest")

    for age, body in enumerate((first, second, first)):
        # The other node tags; the link is aged past the cache's settled
        # time (by a different amount each time: two writes within one
        # tick of the file clock have the same time), so the server keeps
        # what it resolves: the second answer is the cache's.
        await other.repository("moved/app").manifests.put("latest", body, OCI_MANIFEST)
        os.utime(link, (os.stat(link).st_atime, os.stat(link).st_mtime - 60 - age))
        assert await served() == (200, sha256(body))
        assert len(server.registry.tag_cache) == 1
        assert await served() == (200, sha256(body))
    await other.repository("moved/app").manifests.delete("latest")
    assert (await served())[0] == 404

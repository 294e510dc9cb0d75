"""HTTP options on a whole RegistryService with a real port: http.prefix
and http.relativeurls (the API lives below the prefix, streamed uploads
included, nothing is served outside it, generated URLs carry it), and the
listing limits catalog.maxentries and tags.maxtags."""

import hashlib
import json
import os

import pytest_twisted

from tests.service_support import start_service

CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
  prefix: /nested/registry/
  relativeurls: {relative}
"""


async def content(response):
    return await response.content()


@pytest_twisted.ensureDeferred
async def test_prefix_serves_the_api_below_it_and_nothing_outside(tmp_path):
    running = await start_service(tmp_path, CONFIG, relative="false")
    client, base = running.client, running.url + "/nested/registry"
    try:
        response = await client.get(base + "/v2/")
        assert response.code == 200 and await content(response) == b"{}"
        for outside in ("/v2/", "/nested/v2/", "/nested/registry-other/v2/"):
            response = await client.get(running.url + outside)
            assert response.code == 404, outside
            await content(response)

        # A chunked upload: PATCH bodies stream (early dispatch) below the prefix.
        data = os.urandom(3 * 1024 * 1024 + 1)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        response = await client.post(base + "/v2/pre/app/blobs/uploads/")
        assert response.code == 202
        await content(response)
        location = response.headers.getRawHeaders("Location")[0]
        assert location.startswith(base + "/v2/pre/app/blobs/uploads/")
        response = await client.patch(
            location,
            data=data,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"0-{len(data) - 1}",
            },
        )
        assert response.code == 202, await content(response)
        await content(response)
        location = response.headers.getRawHeaders("Location")[0]
        separator = "&" if "?" in location else "?"
        response = await client.put(f"{location}{separator}digest={digest}")
        assert response.code == 201, await content(response)
        await content(response)
        assert response.headers.getRawHeaders("Location") == [f"{base}/v2/pre/app/blobs/{digest}"]
        response = await client.get(f"{base}/v2/pre/app/blobs/{digest}")
        assert response.code == 200 and await content(response) == data

        response = await client.get(base + "/v2/_catalog")
        assert json.loads(await content(response)) == {"repositories": []}  # no manifest yet

        # Pagination links carry the prefix too.
        for tag in ("a", "b"):
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": digest,
                        "size": len(data),
                    },
                    "layers": [],
                    "annotations": {"tag": tag},
                }
            ).encode()
            response = await client.put(
                f"{base}/v2/pre/app/manifests/{tag}",
                data=manifest,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
            assert response.code == 201, await content(response)
            await content(response)
        response = await client.get(f"{base}/v2/pre/app/tags/list?n=1")
        assert json.loads(await content(response))["tags"] == ["a"]
        assert response.headers.getRawHeaders("Link") == [
            '</nested/registry/v2/pre/app/tags/list?n=1&last=a>; rel="next"'
        ]
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_relative_urls_keep_the_prefix(tmp_path):
    running = await start_service(tmp_path, CONFIG, relative="true")
    try:
        response = await running.client.post(
            running.url + "/nested/registry/v2/pre/app/blobs/uploads/"
        )
        assert response.code == 202
        await content(response)
        location = response.headers.getRawHeaders("Location")[0]
        assert location.startswith("/nested/registry/v2/pre/app/blobs/uploads/")
    finally:
        await running.stop()


LIMITS = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
catalog:
  maxentries: 3
tags:
  maxtags: 2
"""


@pytest_twisted.ensureDeferred
async def test_catalog_maxentries_and_tags_maxtags(tmp_path):
    running = await start_service(tmp_path, LIMITS)
    client, base = running.client, running.url
    try:
        config = b'{"architecture": "amd64", "os": "linux"}'
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        for name in ("r1", "r2", "r3", "r4"):
            response = await client.post(
                f"{base}/v2/{name}/blobs/uploads/?digest={digest}", data=config
            )
            assert response.code == 201, await content(response)
            await content(response)
            for tag in ("t1", "t2", "t3"):
                manifest = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {
                            "mediaType": "application/vnd.oci.image.config.v1+json",
                            "digest": digest,
                            "size": len(config),
                        },
                        "layers": [],
                    }
                ).encode()
                response = await client.put(
                    f"{base}/v2/{name}/manifests/{tag}",
                    data=manifest,
                    headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                )
                assert response.code == 201
                await content(response)

        # catalog: without n, pages of maxentries; more than that is refused.
        response = await client.get(base + "/v2/_catalog")
        assert json.loads(await content(response)) == {"repositories": ["r1", "r2", "r3"]}
        assert response.headers.getRawHeaders("Link") == ['</v2/_catalog?n=3&last=r3>; rel="next"']
        response = await client.get(base + "/v2/_catalog?n=4")
        assert response.code == 400
        assert (
            json.loads(await content(response))["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
        )

        # tags: never more than maxtags per response, with a Link to the rest.
        for query in ("", "?n=10"):
            response = await client.get(f"{base}/v2/r1/tags/list{query}")
            assert json.loads(await content(response))["tags"] == ["t1", "t2"]
            assert response.headers.getRawHeaders("Link") == [
                '</v2/r1/tags/list?n=2&last=t2>; rel="next"'
            ]
        response = await client.get(f"{base}/v2/r1/tags/list?n=2&last=t2")
        assert json.loads(await content(response))["tags"] == ["t3"]
        assert response.headers.getRawHeaders("Link") is None
    finally:
        await running.stop()


REDIRECT = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
middleware:
  storage:
    - name: redirect
      options:
        baseurl: {baseurl}
"""


@pytest_twisted.ensureDeferred
async def test_redirect_middleware_sends_blob_gets_to_a_web_server(tmp_path):
    """middleware.storage redirect (Distribution's): a blob GET answers 307
    to the base URL plus the blob's path in the storage layout, which a
    plain web server on the storage root serves; HEAD stays here."""
    from twisted.internet import reactor
    from twisted.web import server, static

    root = tmp_path / "registry-data"
    root.mkdir()
    web = reactor.listenTCP(0, server.Site(static.File(str(root))), interface="127.0.0.1")
    baseurl = f"http://127.0.0.1:{web.getHost().port}/"
    running = await start_service(tmp_path, REDIRECT, baseurl=baseurl)
    client, base = running.client, running.url
    try:
        data = os.urandom(100_000)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        response = await client.post(f"{base}/v2/cdn/app/blobs/uploads/?digest={digest}", data=data)
        assert response.code == 201, await content(response)
        await content(response)
        response = await client.get(f"{base}/v2/cdn/app/blobs/{digest}", allow_redirects=False)
        assert response.code == 307
        await content(response)
        # the blob's own headers come with the redirect, as Distribution's
        assert response.headers.getRawHeaders("Docker-Content-Digest") == [digest]
        assert response.headers.getRawHeaders("ETag") == [f'"{digest}"']
        assert response.headers.getRawHeaders("Accept-Ranges") == ["bytes"]
        hex_digest = digest.split(":", 1)[1]
        location = response.headers.getRawHeaders("Location")[0]
        assert (
            location
            == f"{baseurl}docker/registry/v2/blobs/sha256/{hex_digest[:2]}/{hex_digest}/data"
        )
        response = await client.get(location)
        assert response.code == 200 and await content(response) == data
        response = await client.head(f"{base}/v2/cdn/app/blobs/{digest}", allow_redirects=False)
        assert response.code == 200
        assert response.headers.getRawHeaders("Content-Length") == [str(len(data))]
        await content(response)
        response = await client.get(f"{base}/v2/other/app/blobs/{digest}", allow_redirects=False)
        assert response.code == 404  # not linked there: no redirect either
        await content(response)
    finally:
        await running.stop()
        await web.stopListening()

"""The blob and upload endpoints over a real socket, with treq."""

import json
import os

import pytest_twisted

from registryd.digest import Digest
from tests.support import raw_request, sha256, sha512


async def body_json(response):
    return json.loads(await response.content())


async def error_code(response):
    return [e["code"] for e in (await body_json(response))["errors"]]


def header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


async def push_monolithic(server, name, data, digest=None):
    digest = digest or sha256(data)
    response = await server.client.post(
        server.v2(f"{name}/blobs/uploads/?digest={digest}"),
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    await response.content()
    return response


@pytest_twisted.ensureDeferred
async def test_base_endpoint(server):
    response = await server.client.get(server.v2(""))
    assert response.code == 200
    assert header(response, "Docker-Distribution-API-Version") == "registry/2.0"
    assert await body_json(response) == {}


@pytest_twisted.ensureDeferred
async def test_post_then_put(server):
    data = os.urandom(300_000)
    response = await server.client.post(server.v2("lib/app/blobs/uploads/"))
    assert response.code == 202
    await response.content()
    location = header(response, "Location")
    upload_id = header(response, "Docker-Upload-UUID")
    assert location.endswith(f"/v2/lib/app/blobs/uploads/{upload_id}")
    assert header(response, "Range") == "0-0"
    response = await server.client.put(f"{location}?digest={sha256(data)}", data=data)
    assert response.code == 201, await response.content()
    assert header(response, "Docker-Content-Digest") == sha256(data)
    assert header(response, "Location").endswith(f"/v2/lib/app/blobs/{sha256(data)}")

    response = await server.client.get(server.v2(f"lib/app/blobs/{sha256(data)}"))
    assert response.code == 200
    assert await response.content() == data
    assert response.length == len(data)
    assert header(response, "Docker-Content-Digest") == sha256(data)
    assert header(response, "Content-Type") == "application/octet-stream"
    assert header(response, "Accept-Ranges") == "bytes"


@pytest_twisted.ensureDeferred
async def test_chunked_upload_and_status(server):
    data = os.urandom(100_000)
    response = await server.client.post(server.v2("chunks/blobs/uploads/"))
    await response.content()
    location = header(response, "Location")
    response = await server.client.patch(
        location,
        data=data[:40_000],
        headers={"Content-Range": "0-39999", "Content-Type": "application/octet-stream"},
    )
    assert response.code == 202, await response.content()
    assert header(response, "Range") == "0-39999"
    location = header(response, "Location")
    # out of order: 416 with the current range
    response = await server.client.patch(
        location, data=data[50_000:], headers={"Content-Range": "50000-99999"}
    )
    assert response.code == 416
    assert header(response, "Range") == "0-39999"
    assert await error_code(response) == ["RANGE_INVALID"]
    response = await server.client.get(location)
    assert response.code == 204
    assert header(response, "Range") == "0-39999"
    await response.content()
    response = await server.client.patch(
        location, data=data[40_000:], headers={"Content-Range": "40000-99999"}
    )
    assert response.code == 202
    await response.content()
    response = await server.client.put(f"{location}?digest={sha256(data)}")
    assert response.code == 201, await response.content()
    response = await server.client.get(server.v2(f"chunks/blobs/{sha256(data)}"))
    assert await response.content() == data


@pytest_twisted.ensureDeferred
async def test_streamed_patch_then_put_with_final_chunk(server):
    data = os.urandom(3 * 1024 * 1024 + 17)

    def chunks():
        for i in range(0, 2 * 1024 * 1024, 65536):
            yield data[i : i + 65536]

    response = await server.client.post(server.v2("s/blobs/uploads/"))
    await response.content()
    import io

    # treq sends a file-like body with unknown length chunked
    from twisted.web.client import FileBodyProducer

    class Unknown(FileBodyProducer):
        def __init__(self, data):
            super().__init__(io.BytesIO(data))
            from twisted.web.iweb import UNKNOWN_LENGTH

            self.length = UNKNOWN_LENGTH

    response = await server.client.patch(
        header(response, "Location"), data=Unknown(data[: 2 * 1024 * 1024])
    )
    assert response.code == 202, await response.content()
    assert header(response, "Range") == f"0-{2 * 1024 * 1024 - 1}"
    response = await server.client.put(
        header(response, "Location") + f"?digest={sha256(data)}",
        data=data[2 * 1024 * 1024 :],
    )
    assert response.code == 201, await response.content()


@pytest_twisted.ensureDeferred
async def test_monolithic_post_sha512(server):
    data = os.urandom(5000)
    response = await push_monolithic(server, "a/b/c", data, sha512(data))
    assert response.code == 201
    status, headers, body = await raw_request(server, "HEAD", f"/v2/a/b/c/blobs/{sha512(data)}")
    assert status == 200 and body == b""
    assert headers["content-length"] == "5000"
    assert headers["docker-content-digest"] == sha512(data)
    hexd = sha512(data).split(":")[1]
    link = server.root / f"docker/registry/v2/repositories/a/b/c/_layers/sha512/{hexd}/link"
    assert link.read_bytes() == sha512(data).encode()
    assert (
        server.root / f"docker/registry/v2/blobs/sha512/{hexd[:2]}/{hexd}/data"
    ).read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_digest_mismatch_keeps_upload(server):
    data = b"hello world"
    response = await server.client.post(server.v2("m/blobs/uploads/"))
    await response.content()
    location = header(response, "Location")
    response = await server.client.patch(location, data=data)
    await response.content()
    wrong = sha256(b"other")
    response = await server.client.put(f"{location}?digest={wrong}")
    assert response.code == 400
    assert await error_code(response) == ["DIGEST_INVALID"]
    response = await server.client.get(location)
    assert response.code == 204
    assert header(response, "Range") == f"0-{len(data) - 1}"
    response = await server.client.put(f"{location}?digest={sha256(data)}")
    assert response.code == 201


@pytest_twisted.ensureDeferred
async def test_range_requests(server):
    data = bytes(range(256)) * 40
    await push_monolithic(server, "r", data)
    url = server.v2(f"r/blobs/{sha256(data)}")
    response = await server.client.get(url, headers={"Range": "bytes=10-19"})
    assert response.code == 206
    assert await response.content() == data[10:20]
    assert header(response, "Content-Range") == f"bytes 10-19/{len(data)}"
    response = await server.client.get(url, headers={"Range": "bytes=-5"})
    assert await response.content() == data[-5:]
    response = await server.client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert response.code == 416
    assert header(response, "Content-Range") == f"bytes */{len(data)}"
    await response.content()


@pytest_twisted.ensureDeferred
async def test_malformed_ranges_are_refused_as_distribution_refuses_them(server):
    """A ``bytes`` range that is not first-last, first- or -suffix gets
    416 RANGE_INVALID, as Distribution's http.ServeContent answers ("invalid
    range"); it used to be ignored, sending the whole blob to a client that
    asked for a part.  A range of another unit is still ignored (RFC 9110
    section 14.2: MUST), and so are several ranges (no multipart)."""
    data = bytes(range(256)) * 40
    await push_monolithic(server, "r", data)
    url = server.v2(f"r/blobs/{sha256(data)}")
    for malformed in ("bytes=abc", "bytes=10-5", "bytes=1-2-3", "bytes=-", "bytes 0-9", "0-9"):
        response = await server.client.get(url, headers={"Range": malformed})
        assert response.code == 416, malformed
        assert await error_code(response) == ["RANGE_INVALID"]
        assert header(response, "Content-Range") is None
    for ignored in ("items=0-9", "bytes=0-1,5-9", "bytes="):
        response = await server.client.get(url, headers={"Range": ignored})
        assert response.code == 200, ignored
        assert await response.content() == data
    response = await server.client.get(url, headers={"Range": "bytes=0-1, 99999-"})
    assert response.code == 206 and await response.content() == data[:2]


@pytest_twisted.ensureDeferred
async def test_errors(server):
    response = await server.client.get(server.v2("UPPER/blobs/" + sha256(b"x")))
    assert response.code == 400 and await error_code(response) == ["NAME_INVALID"]
    response = await server.client.get(server.v2("ok/blobs/sha256:abc"))
    assert response.code == 400 and await error_code(response) == ["DIGEST_INVALID"]
    response = await server.client.get(server.v2("ok/blobs/md5:" + "a" * 32))
    assert response.code == 400 and await error_code(response) == ["DIGEST_INVALID"]
    response = await server.client.get(server.v2("ok/blobs/" + sha256(b"x")))
    assert response.code == 404 and await error_code(response) == ["BLOB_UNKNOWN"]
    response = await server.client.get(server.v2("ok/blobs/uploads/../../etc"))
    assert response.code in (400, 404)
    await response.content()
    response = await server.client.get(server.v2("ok/%2e%2e/x/blobs/" + sha256(b"x")))
    assert response.code == 400 and await error_code(response) == ["NAME_INVALID"]
    response = await server.client.get(server.v2("ok%2Fx/blobs/" + sha256(b"x")))
    assert response.code == 400 and await error_code(response) == ["NAME_INVALID"]
    response = await server.client.get(server.v2("ok/blobs/uploads/not-a-uuid"))
    assert response.code == 400 and await error_code(response) == ["BLOB_UPLOAD_INVALID"]


@pytest_twisted.ensureDeferred
async def test_cross_repository_mount(server):
    data = os.urandom(10_000)
    digest = sha256(data)
    await push_monolithic(server, "src/repo", data)
    response = await server.client.post(
        server.v2(f"dst/one/blobs/uploads/?mount={digest}&from=src/repo")
    )
    assert response.code == 201, await response.content()
    assert header(response, "Location").endswith(f"/v2/dst/one/blobs/{digest}")
    assert header(response, "Docker-Content-Digest") == digest
    await response.content()
    # without from: found in any repository that has it
    response = await server.client.post(server.v2(f"dst/two/blobs/uploads/?mount={digest}"))
    assert response.code == 201
    await response.content()
    for name in ("dst/one", "dst/two"):
        response = await server.client.get(server.v2(f"{name}/blobs/{digest}"))
        assert await response.content() == data
    # cannot mount: a normal upload session starts instead
    missing = sha256(b"not pushed")
    response = await server.client.post(
        server.v2(f"dst/three/blobs/uploads/?mount={missing}&from=src/repo")
    )
    assert response.code == 202
    assert header(response, "Docker-Upload-UUID")
    await response.content()
    # the blob must be linked in the source repository, not just stored
    response = await server.client.post(
        server.v2(f"dst/four/blobs/uploads/?mount={digest}&from=elsewhere")
    )
    assert response.code == 202
    await response.content()


@pytest_twisted.ensureDeferred
async def test_delete_blob(server):
    data = os.urandom(1000)
    digest = sha256(data)
    await push_monolithic(server, "del/me", data)
    response = await server.client.delete(server.v2(f"del/me/blobs/{digest}"))
    assert response.code == 202
    await response.content()
    response = await server.client.get(server.v2(f"del/me/blobs/{digest}"))
    assert response.code == 404
    assert await error_code(response) == ["BLOB_UNKNOWN"]
    response = await server.client.delete(server.v2(f"del/me/blobs/{digest}"))
    assert response.code == 404
    await response.content()


@pytest_twisted.ensureDeferred
async def test_delete_disabled(tmp_path):
    from twisted.internet import reactor

    from tests.support import make_client, start_registry

    registry, port = await start_registry(tmp_path / "d", delete_enabled=False)
    client, pool = make_client(reactor)
    try:
        base = f"http://127.0.0.1:{port.getHost().port}"
        data = b"keep me"
        response = await client.post(
            f"{base}/v2/keep/blobs/uploads/?digest={sha256(data)}", data=data
        )
        assert response.code == 201
        await response.content()
        response = await client.delete(f"{base}/v2/keep/blobs/{sha256(data)}")
        assert response.code == 405
        assert await error_code(response) == ["UNSUPPORTED"]
        response = await client.get(f"{base}/v2/keep/blobs/{sha256(data)}")
        assert await response.content() == data
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_cancel_upload(server):
    response = await server.client.post(server.v2("cancel/blobs/uploads/"))
    await response.content()
    location = header(response, "Location")
    response = await server.client.delete(location)
    assert response.code == 204
    await response.content()
    response = await server.client.get(location)
    assert response.code == 404
    assert await error_code(response) == ["BLOB_UPLOAD_UNKNOWN"]


@pytest_twisted.ensureDeferred
async def test_location_honours_forwarded_headers(server):
    response = await server.client.post(
        server.v2("fwd/blobs/uploads/"),
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com"},
    )
    await response.content()
    assert header(response, "Location").startswith(
        "https://registry.example.com/v2/fwd/blobs/uploads/"
    )


@pytest_twisted.ensureDeferred
async def test_digest_algorithm_parameter(server):
    data = os.urandom(3000)
    response = await server.client.post(server.v2("alg/blobs/uploads/?digest-algorithm=sha512"))
    assert response.code == 202
    await response.content()
    location = header(response, "Location")
    response = await server.client.patch(location, data=data)
    await response.content()
    response = await server.client.put(f"{location}?digest={sha512(data)}")
    assert response.code == 201, await response.content()
    response = await server.client.post(server.v2("alg/blobs/uploads/?digest-algorithm=md5"))
    assert response.code == 400
    assert await error_code(response) == ["DIGEST_INVALID"]


@pytest_twisted.ensureDeferred
async def test_size_parameter_checked(server):
    data = b"twelve bytes"
    response = await server.client.post(server.v2("size/blobs/uploads/"))
    await response.content()
    location = header(response, "Location")
    response = await server.client.put(f"{location}?digest={sha256(data)}&size=99", data=data)
    assert response.code == 400
    assert await error_code(response) == ["SIZE_INVALID"]
    response = await server.client.put(f"{location}?digest={sha256(data)}&size={len(data)}")
    assert response.code == 201


@pytest_twisted.ensureDeferred
async def test_upload_error_paths(server):
    response = await server.client.post(server.v2("errs/blobs/uploads/"))
    await response.content()
    location = header(response, "Location")
    upload_id = header(response, "Docker-Upload-UUID")
    # finishing without a digest
    response = await server.client.put(location, data=b"abc")
    assert response.code == 400
    assert await error_code(response) == ["DIGEST_INVALID"]
    # a malformed Content-Range
    response = await server.client.patch(
        location, data=b"abc", headers={"Content-Range": "bytes=x-y"}
    )
    assert response.code == 416
    assert await error_code(response) == ["RANGE_INVALID"]
    # Content-Range disagreeing with the body's length
    response = await server.client.patch(location, data=b"abc", headers={"Content-Range": "0-9"})
    assert response.code == 416
    await response.content()
    # nothing was written by the refused requests
    response = await server.client.get(location)
    assert header(response, "Range") == "0-0"
    await response.content()
    # an upload id is only valid in its own repository
    response = await server.client.get(server.v2(f"other/blobs/uploads/{upload_id}"))
    assert response.code == 404
    assert await error_code(response) == ["BLOB_UPLOAD_UNKNOWN"]
    # NUL and encoded separators in the path
    for path in (
        f"/v2/errs%00/blobs/uploads/{upload_id}",
        f"/v2/errs%2F..%2F/blobs/uploads/{upload_id}",
        f"/v2/errs/blobs/uploads/..%2F{upload_id}",
    ):
        status, _, body = await raw_request(server, "GET", path)
        assert status in (400, 404), (path, status)
        assert json.loads(body)["errors"][0]["code"] in ("NAME_INVALID", "BLOB_UPLOAD_UNKNOWN")
    # unknown endpoint and wrong method: JSON errors, not HTML
    status, _, body = await raw_request(server, "GET", "/v2/errs/nothing")
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"
    status, headers, body = await raw_request(server, "POST", f"/v2/errs/blobs/{sha256(b'x')}")
    assert status == 405 and json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"


@pytest_twisted.ensureDeferred
async def test_methods_are_case_sensitive(server):
    """werkzeug's router matches "get" as GET; HTTP methods are
    case-sensitive, so a lowercase method is 405 with the route's Allow
    header (as Distribution's router answers), never a 500 or another
    method's handler."""
    data = b"case matters"
    status, _, _ = await raw_request(
        server, "POST", f"/v2/case/blobs/uploads/?digest={sha256(data)}", body=data
    )
    assert status == 201
    upload = await server.client.post(server.v2("case/blobs/uploads/"))
    location = upload.headers.getRawHeaders("Location")[0].split(server.url, 1)[1]
    await upload.content()
    for method, path, allow in [
        ("get", location, "DELETE, GET, HEAD, PATCH, PUT"),
        ("delete", f"/v2/case/blobs/{sha256(data)}", "DELETE, GET, HEAD"),
        ("get", "/v2/case/tags/list", "GET, HEAD"),
    ]:
        status, headers, body = await raw_request(server, method, path)
        assert status == 405, (method, path, body)
        assert headers["allow"] == allow
        assert json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"
    response = await server.client.get(server.v2(f"case/blobs/{sha256(data)}"))
    assert await response.content() == data  # the lowercase delete deleted nothing


@pytest_twisted.ensureDeferred
async def test_a_removed_blob_is_never_answered_from_the_cache(server):
    """A blob asked for again is answered from the link cache, revalidated
    by a stat of its link and of its data; whichever goes (the link by a
    DELETE, the data by another process's garbage collection, which
    removes the data before the links, or by hand, as Distribution's
    garbage collection leaves the links), the next HEAD and GET are 404."""
    import shutil

    from registryd.storage.drivers.filesystem import FilesystemDriver
    from registryd.storage.registry import Registry

    other = Registry(FilesystemDriver(str(server.root)), delete_enabled=True)
    layers = server.root / "docker/registry/v2/repositories/gone/app/_layers/sha256"
    blobs = server.root / "docker/registry/v2/blobs/sha256"

    async def warm():
        data = os.urandom(100)
        digest = sha256(data)
        await push_monolithic(server, "gone/app", data)
        link = layers / digest.split(":")[1] / "link"
        then = os.stat(link).st_mtime - 60  # older than the cache's settled time
        os.utime(link, (then, then))
        for _ in range(3):
            response = await server.client.head(server.v2(f"gone/app/blobs/{digest}"))
            assert (response.code, header(response, "Content-Length")) == (200, "100")
        return digest

    async def answers(digest):
        head = await server.client.head(server.v2(f"gone/app/blobs/{digest}"))
        get = await server.client.get(server.v2(f"gone/app/blobs/{digest}"))
        assert await error_code(get) == ["BLOB_UNKNOWN"]
        return head.code, get.code

    deleted, collected, removed = [await warm() for _ in range(3)]
    assert len(server.registry.blob_link_cache) == 3
    response = await server.client.delete(server.v2(f"gone/app/blobs/{deleted}"))
    assert response.code == 202
    assert await other.vacuum.remove_blob(Digest.parse(collected))
    shutil.rmtree(blobs / removed.split(":")[1][:2] / removed.split(":")[1])
    for digest in (deleted, collected, removed):
        assert await answers(digest) == (404, 404)

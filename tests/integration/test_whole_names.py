"""Names, references, digests and upload ids are matched whole, over a real
socket: a trailing newline (``%0a``) is refused with the spec's error code and
nothing reaches the storage root.  Requests are raw, so that no client
library re-encodes the path.  Also the numbers in headers and queries that
Python's int() would have mis-read or failed on.
"""

import json

import pytest_twisted

from tests.integration.test_manifests_api import push_blob, push_image, put_manifest
from tests.support import raw_request, sha256


def stored_paths(root):
    """Every file and directory under the storage root, relative to it."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}


async def refused(server, method, path, status, code, body=b""):
    """Send ``method`` ``path`` raw; check the status and (but for HEAD) the
    spec error code."""
    got, _, payload = await raw_request(server, method, path, body=body)
    assert got == status, (method, path, got, payload[:300])
    if method != "HEAD":
        assert [e["code"] for e in json.loads(payload)["errors"]] == [code], (method, path, payload)


@pytest_twisted.ensureDeferred
async def test_tag_with_trailing_newline_is_refused_and_nothing_is_written(server):
    body = await push_image(server, "img/app")
    response = await put_manifest(server, "img/app", "v1", body)
    assert response.code == 201, await response.content()
    before = stored_paths(server.root)
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        await refused(
            server,
            method,
            "/v2/img/app/manifests/secret%0a",
            400,
            "TAG_INVALID",
            body=body if method == "PUT" else b"",
        )
    await refused(
        server,
        "PUT",
        f"/v2/img/app/manifests/{sha256(body)}?tag=secret%0a",
        400,
        "TAG_INVALID",
        body=body,
    )
    assert stored_paths(server.root) == before
    status, _, payload = await raw_request(server, "GET", "/v2/img/app/tags/list")
    assert status == 200 and json.loads(payload)["tags"] == ["v1"]


@pytest_twisted.ensureDeferred
async def test_repository_name_with_trailing_newline_is_refused(server):
    layer = await push_blob(server, "img/app", b"layer bytes")
    before = stored_paths(server.root)
    digest = layer["digest"]
    for method, path in [
        ("POST", "/v2/img/app%0a/blobs/uploads/"),
        ("POST", f"/v2/img/app%0a/blobs/uploads/?digest={sha256(b'x')}"),
        ("POST", f"/v2/other/blobs/uploads/?mount={digest}&from=img/app%0a"),
        ("GET", f"/v2/img/app%0a/blobs/{digest}"),
        ("GET", "/v2/img/app%0a/manifests/v1"),
        ("PUT", "/v2/img/app%0a/manifests/v1"),
        ("GET", "/v2/img/app%0a/tags/list"),
        ("GET", f"/v2/img/app%0a/referrers/{digest}"),
    ]:
        await refused(
            server, method, path, 400, "NAME_INVALID", body=b"x" if "digest=" in path else b""
        )
    assert stored_paths(server.root) == before


@pytest_twisted.ensureDeferred
async def test_digest_with_trailing_newline_is_refused(server):
    data = b"layer bytes"
    await push_blob(server, "img/app", data)
    body = await push_image(server, "img/app", layers=1)
    before = stored_paths(server.root)
    digest = sha256(data) + "%0a"
    for method, path, payload in [
        ("GET", f"/v2/img/app/blobs/{digest}", b""),
        ("HEAD", f"/v2/img/app/blobs/{digest}", b""),
        ("DELETE", f"/v2/img/app/blobs/{digest}", b""),
        ("POST", f"/v2/other/blobs/uploads/?mount={digest}&from=img/app", b""),
        ("POST", f"/v2/img/app/blobs/uploads/?digest={digest}", data),
        ("PUT", f"/v2/img/app/manifests/{sha256(body)}%0a", body),
        ("GET", f"/v2/img/app/manifests/{sha256(body)}%0a", b""),
        ("GET", f"/v2/img/app/referrers/{sha256(body)}%0a", b""),
    ]:
        await refused(server, method, path, 400, "DIGEST_INVALID", body=payload)
    assert stored_paths(server.root) == before


@pytest_twisted.ensureDeferred
async def test_upload_id_with_trailing_newline_is_refused(server):
    status, headers, _ = await raw_request(server, "POST", "/v2/img/app/blobs/uploads/")
    assert status == 202
    upload_id = headers["docker-upload-uuid"]
    before = stored_paths(server.root)
    path = f"/v2/img/app/blobs/uploads/{upload_id}%0a"
    for method, payload in [("GET", b""), ("PATCH", b"abc"), ("PUT", b"abc"), ("DELETE", b"")]:
        query = f"?digest={sha256(b'abc')}" if method == "PUT" else ""
        await refused(server, method, path + query, 400, "BLOB_UPLOAD_INVALID", body=payload)
    assert stored_paths(server.root) == before
    status, headers, _ = await raw_request(server, "GET", f"/v2/img/app/blobs/uploads/{upload_id}")
    assert status == 204 and headers["range"] == "0-0"  # the real upload is untouched


@pytest_twisted.ensureDeferred
async def test_range_ending_before_it_starts_is_not_satisfiable(server):
    data = bytes(range(256)) * 4
    await push_blob(server, "img/app", data)
    path = f"/v2/img/app/blobs/{sha256(data)}"
    for value in ("bytes=500-0", "bytes=1-0", "bytes=0-" + "9" * 5000, "bytes=" + "9" * 5000 + "-"):
        status, headers, _ = await raw_request(server, "GET", path, headers=[("Range", value)])
        assert status == 416, (value[:40], status)
        # Go's parseRange calls these invalid, not beyond the blob: no Content-Range
        assert "content-range" not in headers
    status, headers, payload = await raw_request(
        server, "GET", path, headers=[("Range", "bytes=500-500")]
    )
    assert status == 206 and payload == data[500:501]


@pytest_twisted.ensureDeferred
async def test_numbers_that_are_not_ascii_digits_are_client_errors(server):
    """``'\\u00b2'.isdigit()`` is true and int() of it fails; int() also fails
    on 4300+ digits: each was a 500."""
    status, headers, _ = await raw_request(server, "POST", "/v2/img/app/blobs/uploads/")
    location = f"/v2/img/app/blobs/uploads/{headers['docker-upload-uuid']}"
    digest = sha256(b"")
    for size in ("%C2%B2", "9" * 5000):
        await refused(server, "PUT", f"{location}?digest={digest}&size={size}", 400, "SIZE_INVALID")
    for n in ("%C2%B2", "%D9%A1", "9" * 5000):
        await refused(server, "GET", f"/v2/_catalog?n={n}", 400, "PAGINATION_NUMBER_INVALID")
    status, _, payload = await raw_request(
        server, "PATCH", location, headers=[("Content-Range", "0-" + "9" * 5000)], body=b"abc"
    )
    assert status == 416 and json.loads(payload)["errors"][0]["code"] == "RANGE_INVALID"

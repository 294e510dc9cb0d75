"""Several registryd nodes on one bucket: two real ``twistd registryd``
processes (A and B) with the s3 driver on the session's Swift, as behind a
load balancer.  Whatever one node does, the other sees at once: all state
is in the store, nothing is served from a node's memory.

- docker pushes through A and pulls through B;
- one chunked upload's PATCHes alternate between A and B (B never saw
  the bytes A hashed, so it rebuilds the hash from the store), one of
  them past S3's multipart size;
- docker pushes the same image through both at once;
- deletes and tag moves through A are seen by B immediately.
"""

import concurrent.futures
import hashlib
import json
import os

import pytest

from tests.e2e import tools
from tests.e2e.tools import (
    DOCKER_SCHEMA2,
    OCI_MANIFEST,
    get_manifest,
    http_request,
    make_image,
    push_image,
    put_manifest,
    sha256_digest,
)

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def two_nodes(swift, tmp_path_factory, name, node_class=tools.S3Registryd, **parameters):
    """Start nodes A and B (``node_class``) on a fresh bucket prefix
    ``name``; a generator for a fixture, purging the prefix afterwards."""
    prefix = swift.new_prefix(name)
    storage = swift.parameters(prefix, **parameters)
    started = []
    try:
        for label in ("a", "b"):
            node = node_class(storage, tmpdir=tmp_path_factory.mktemp(f"{name}-{label}"))
            started.append(node.start())
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()
        swift.purge(prefix)


@pytest.fixture(scope="module")
def nodes(swift, tmp_path_factory):
    """Nodes A and B on one bucket prefix (5 MiB parts, so that a 12 MiB
    blob is a real multipart upload)."""
    yield from two_nodes(swift, tmp_path_factory, "nodes", chunksize=5 * MiB)


def leftovers(swift, node):
    """Upload state left in the store: keys under _uploads/ and open
    multipart uploads."""
    prefix = node.storage["rootdirectory"].strip("/")
    keys = [key for key in swift.keys(prefix) if "/_uploads/" in key]
    return keys + [key for key, _ in swift.multipart_uploads(prefix)]


def location(node, response):
    return (
        response.headers["location"]
        if response.headers["location"].startswith("http")
        else node.url + response.headers["location"]
    )


def on(node, url):
    """``url`` (an upload location from any node) addressed to ``node``."""
    path = url.split("/v2/", 1)[1]
    return f"{node.url}/v2/{path}"


# ---------------------------------------------------------------- docker


def test_docker_push_through_a_pull_through_b(dockerd, nodes, tmp_path):
    a, b = nodes
    context = tools.write_scratch_context(tmp_path / "context")
    pushed_ref = f"{a.host}/nodes/app:v1"
    image_id = dockerd.build(context, pushed_ref)
    digest = dockerd.push(pushed_ref)
    dockerd.rmi(pushed_ref)

    pulled_ref = f"{b.host}/nodes/app:v1"
    dockerd.pull(pulled_ref)
    try:
        assert dockerd.image_id(pulled_ref) == image_id
        assert f"{b.host}/nodes/app@{digest}" in dockerd.inspect(pulled_ref)["RepoDigests"]
    finally:
        dockerd.rmi(pulled_ref)


def test_concurrent_docker_pushes_of_one_image_through_both(dockerd, nodes, tmp_path, swift):
    """The same layers pushed through A and B at the same moment: both
    pushes succeed, either node serves the image, and no upload is left
    half-done in the store."""
    a, b = nodes
    context = tools.write_scratch_context(
        tmp_path / "context", layer_sizes=(300 * 1024, 200 * 1024)
    )
    references = [f"{a.host}/nodes/same:v1", f"{b.host}/nodes/same:v1"]
    dockerd.build(context, references[0])
    dockerd.docker("tag", references[0], references[1])
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            digests = list(pool.map(dockerd.push, references))
        assert digests[0] == digests[1]
        for node in nodes:
            response = get_manifest(node.url, "nodes/same", "v1", accept=DOCKER_SCHEMA2)
            assert response.status == 200, response
            assert sha256_digest(response.body) == digests[0]
            for layer in response.json()["layers"]:
                blob = http_request("GET", f"{node.url}/v2/nodes/same/blobs/{layer['digest']}")
                assert blob.status == 200
                assert sha256_digest(blob.body) == layer["digest"]
        assert leftovers(swift, a) == []
    finally:
        dockerd.rmi(*references)


# ---------------------------------------------------------------- uploads


def test_interleaved_patches_across_nodes(nodes, swift):
    """PATCHes of one upload go to A, B, A, B; status and completion on the
    other node; a 12 MiB blob, so parts and tails of a multipart upload
    are handed from node to node."""
    a, b = nodes
    data = os.urandom(12 * MiB + 12345)
    digest = sha256_digest(data)
    response = http_request(
        "POST", f"{a.url}/v2/nodes/chunked/blobs/uploads/", b"", {"Content-Length": "0"}
    )
    assert response.status == 202, response
    url = location(a, response)
    chunk = 3 * MiB + 1000
    offset = 0
    turn = 0
    while offset < len(data):
        node = nodes[turn % 2]
        piece = data[offset : offset + chunk]
        response = http_request(
            "PATCH",
            on(node, url),
            piece,
            {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(piece) - 1}",
            },
        )
        assert response.status == 202, (turn, response)
        offset += len(piece)
        assert response.headers["range"] == f"0-{offset - 1}"
        url = location(node, response)
        # The other node reports the same progress.
        other = nodes[(turn + 1) % 2]
        status = http_request("GET", on(other, url))
        assert (status.status, status.headers.get("range")) == (204, f"0-{offset - 1}")
        turn += 1

    # A wrong digest is refused by B, which never hashed the bytes A got:
    # it rebuilt the hash from the store; the upload stays usable.
    separator = "&" if "?" in url else "?"
    wrong = sha256_digest(b"something else")
    response = http_request(
        "PUT", f"{on(b, url)}{separator}digest={wrong}", b"", {"Content-Length": "0"}
    )
    assert response.status == 400, response
    assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"
    response = http_request(
        "PUT", f"{on(a, url)}{separator}digest={digest}", b"", {"Content-Length": "0"}
    )
    assert response.status == 201, response

    for node in nodes:
        blob = http_request("GET", f"{node.url}/v2/nodes/chunked/blobs/{digest}")
        assert blob.status == 200
        assert hashlib.sha256(blob.body).hexdigest() == digest.split(":")[1]
    assert leftovers(swift, a) == []


# ---------------------------------------------------------------- visibility


def test_changes_through_a_are_seen_by_b_at_once(nodes):
    a, b = nodes
    first, second = make_image(labels={"n": "1"}), make_image(labels={"n": "2"})
    push_image(a.url, "nodes/visible", "latest", first)
    assert (
        get_manifest(b.url, "nodes/visible", "latest").headers["docker-content-digest"]
        == first["digest"]
    )

    # A tag moved through A: B serves the new target on its next request.
    push_image(a.url, "nodes/visible", "latest", second)
    assert (
        get_manifest(b.url, "nodes/visible", "latest").headers["docker-content-digest"]
        == second["digest"]
    )

    # A manifest deleted through A is gone on B, tag and all.
    response = http_request("DELETE", f"{a.url}/v2/nodes/visible/manifests/{second['digest']}")
    assert response.status == 202, response
    assert get_manifest(b.url, "nodes/visible", second["digest"]).status == 404
    assert get_manifest(b.url, "nodes/visible", "latest").status == 404
    tags = http_request("GET", f"{b.url}/v2/nodes/visible/tags/list").json()["tags"]
    assert "latest" not in (tags or [])

    # A blob unlinked through A is unknown to B.
    layer_digest = first["layers"][0][0]
    assert http_request("HEAD", f"{b.url}/v2/nodes/visible/blobs/{layer_digest}").status == 200
    response = http_request("DELETE", f"{a.url}/v2/nodes/visible/blobs/{layer_digest}")
    assert response.status == 202, response
    assert http_request("HEAD", f"{b.url}/v2/nodes/visible/blobs/{layer_digest}").status == 404

    # And a repository pushed through B is in A's catalog.
    put_manifest(b.url, "nodes/visible", "again", second["manifest"], OCI_MANIFEST)
    catalog = json.loads(http_request("GET", f"{a.url}/v2/_catalog").body)["repositories"]
    assert "nodes/visible" in catalog


def test_interrupted_patch_resumes_on_the_other_node(nodes):
    """A client cut off mid-PATCH on A resumes on B from the offset B
    reports: the bytes A received are in the store (full parts and the
    tail), not in A's memory."""
    import socket
    import time

    a, b = nodes
    data = os.urandom(8 * MiB)
    response = http_request(
        "POST", f"{a.url}/v2/nodes/cut/blobs/uploads/", b"", {"Content-Length": "0"}
    )
    url = location(a, response)
    target = "/v2/" + url.split("/v2/", 1)[1]
    sent = 6 * MiB + 123
    with socket.create_connection(("127.0.0.1", a.port)) as sock:
        sock.sendall(
            (
                f"PATCH {target} HTTP/1.1\r\nHost: {a.host}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n"
                f"Content-Range: 0-{len(data) - 1}\r\n\r\n"
            ).encode()
            + data[:sent]
        )
        time.sleep(0.5)
    deadline = time.monotonic() + 20
    while True:
        status = http_request("GET", on(b, url))
        if status.headers.get("range") == f"0-{sent - 1}" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (status.status, status.headers.get("range")) == (204, f"0-{sent - 1}")

    rest = data[sent:]
    response = http_request(
        "PATCH",
        on(b, url),
        rest,
        {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{sent}-{len(data) - 1}",
        },
    )
    assert response.status == 202, response
    url = location(b, response)
    separator = "&" if "?" in url else "?"
    digest = sha256_digest(data)
    response = http_request(
        "PUT", f"{on(b, url)}{separator}digest={digest}", b"", {"Content-Length": "0"}
    )
    assert response.status == 201, response
    assert sha256_digest(http_request("GET", f"{a.url}/v2/nodes/cut/blobs/{digest}").body) == digest

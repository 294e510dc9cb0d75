"""On-disk interoperability of blobs with CNCF Distribution (Debian's
docker-registry 2.8.2): what one server writes into a filesystem root, the
other serves from the same root.

Blobs are pushed over the HTTP API (monolithic POST+PUT, and chunked
POST+PATCH...+PUT), the writer is stopped, and the other server is started
on the same directory.
"""

import hashlib
import os

import pytest

from tests.e2e.tools import get_blob, http_request, push_blob

pytestmark = pytest.mark.e2e

NAME = "interop/blobs"
NESTED = "interop/deeply/nested/repo-name_1.x"


def _sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blobs():
    """(repository, label, data, chunk size or None, algorithm)."""
    return [
        (NAME, "small monolithic", os.urandom(1234), None, "sha256"),
        (NAME, "chunked", os.urandom(300_000), 64 * 1024, "sha256"),
        (NAME, "empty", b"", None, "sha256"),
        (NESTED, "nested repository", os.urandom(70_000), None, "sha256"),
    ]


def _sha512_blobs():
    return [
        (NAME, "sha512 monolithic", os.urandom(5000), None, "sha512"),
        (NAME, "sha512 chunked", os.urandom(150_000), 64 * 1024, "sha512"),
    ]


def _push_all(url, blobs):
    pushed = []
    for name, label, data, chunk_size, algorithm in blobs:
        digest = push_blob(url, name, data, chunk_size=chunk_size, algorithm=algorithm)
        assert digest == f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}", label
        pushed.append((name, label, data, digest))
    return pushed


def _check_served(url, pushed, server):
    for name, label, data, digest in pushed:
        response = http_request("GET", f"{url}/v2/{name}/blobs/{digest}")
        assert response.status == 200, f"{server}: GET {label} blob {digest}: {response!r}"
        assert response.body == data, f"{server}: {label} blob bytes differ"
        # Distribution 2.8.2 stores a sha512-addressed blob under its
        # canonical sha256 digest (the sha512 link holds "sha256:...") and
        # answers with that digest: any digest of these bytes is right.
        header = response.headers.get("docker-content-digest", "")
        assert header in (digest, _sha256(data)), (server, label, header)

        head = http_request("HEAD", f"{url}/v2/{name}/blobs/{digest}")
        assert head.status == 200, f"{server}: HEAD {label}: {head!r}"
        assert int(head.headers["content-length"]) == len(data), (server, label)
        assert head.body == b""

        # Linked into its own repository only.
        other = http_request("HEAD", f"{url}/v2/interop/elsewhere/blobs/{digest}")
        assert other.status == 404, f"{server}: {label} blob visible in another repository"


def test_registryd_blobs_served_by_distribution(tmp_path, registryd_factory, distribution_factory):
    root = tmp_path / "shared-root"
    registryd = registryd_factory(root)
    pushed = _push_all(registryd.url, _blobs())
    _check_served(registryd.url, pushed, "registryd")
    registryd.stop()

    distribution = distribution_factory(root)
    _check_served(distribution.url, pushed, "docker-registry")


def test_distribution_blobs_served_by_registryd(tmp_path, registryd_factory, distribution_factory):
    root = tmp_path / "shared-root"
    distribution = distribution_factory(root)
    pushed = _push_all(distribution.url, _blobs())
    _check_served(distribution.url, pushed, "docker-registry")
    distribution.stop()

    registryd = registryd_factory(root)
    _check_served(registryd.url, pushed, "registryd")


def test_blob_round_trip_and_delete_across_servers(
    tmp_path, registryd_factory, distribution_factory
):
    """registryd -> docker-registry -> registryd on one root; a blob deleted
    by docker-registry (unlinked from the repository) is gone for registryd,
    and one deleted by registryd is gone for docker-registry."""
    root = tmp_path / "shared-root"
    first, second = os.urandom(4096), os.urandom(8192)

    registryd = registryd_factory(root)
    first_digest = push_blob(registryd.url, NAME, first)
    registryd.stop()

    distribution = distribution_factory(root)
    assert get_blob(distribution.url, NAME, first_digest) == first
    second_digest = push_blob(distribution.url, NAME, second)
    response = http_request("DELETE", f"{distribution.url}/v2/{NAME}/blobs/{first_digest}")
    assert response.status == 202, response
    distribution.stop()

    registryd = registryd_factory(root)
    assert get_blob(registryd.url, NAME, second_digest) == second
    assert http_request("GET", f"{registryd.url}/v2/{NAME}/blobs/{first_digest}").status == 404
    response = http_request("DELETE", f"{registryd.url}/v2/{NAME}/blobs/{second_digest}")
    assert response.status == 202, response
    registryd.stop()

    distribution = distribution_factory(root)
    assert http_request("GET", f"{distribution.url}/v2/{NAME}/blobs/{second_digest}").status == 404


def test_registryd_sha512_blobs_served_by_distribution(
    tmp_path, registryd_factory, distribution_factory
):
    root = tmp_path / "shared-root"
    registryd = registryd_factory(root)
    pushed = _push_all(registryd.url, _sha512_blobs())
    _check_served(registryd.url, pushed, "registryd")
    registryd.stop()

    distribution = distribution_factory(root)
    _check_served(distribution.url, pushed, "docker-registry")


def test_distribution_sha512_blobs_served_by_registryd(
    tmp_path, registryd_factory, distribution_factory
):
    root = tmp_path / "shared-root"
    distribution = distribution_factory(root)
    pushed = _push_all(distribution.url, _sha512_blobs())
    _check_served(distribution.url, pushed, "docker-registry")
    distribution.stop()

    registryd = registryd_factory(root)
    _check_served(registryd.url, pushed, "registryd")


# --- an upload one server received, completed by the other --------------------

#: Distribution signs the ``_state`` query parameter of its upload URLs with
#: ``http.secret``; set, so that the test can make a URL for an upload
#: registryd began.
_SECRET = "interop-secret"


def _distribution_upload_url(base_url, name, upload_id, offset, started_at):
    """Distribution 2.8's URL for continuing upload ``upload_id`` (its
    ``_state``: HMAC-SHA256 of the JSON state with ``http.secret``, then the
    JSON, base64url), as its ``POST`` or ``PATCH`` would have answered."""
    import base64
    import hmac
    import json

    state = json.dumps(
        {"Name": name, "UUID": upload_id, "Offset": offset, "StartedAt": started_at},
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(_SECRET.encode(), state, hashlib.sha256).digest()
    token = base64.urlsafe_b64encode(signature + state).decode()
    return f"{base_url}/v2/{name}/blobs/uploads/{upload_id}?_state={token}"


def _begin_upload(url, name, data):
    """POST and one PATCH of ``data``; the upload's id."""
    response = http_request("POST", f"{url}/v2/{name}/blobs/uploads/", b"")
    assert response.status == 202, response
    location = response.headers["location"]
    location = location if location.startswith("http") else url + location
    response = http_request("PATCH", location, data, {"Content-Type": "application/octet-stream"})
    assert response.status == 202, response
    return response.headers["docker-upload-uuid"]


def _upload_dir(root, name, upload_id):
    return root / "docker/registry/v2/repositories" / name / "_uploads" / upload_id


def _swap_received_bytes(root, name, upload_id, size):
    """Replace the received bytes with others of the same length: the
    completing server can then only give the original digest from the
    running hash the first one stored (re-reading the data gives another),
    which is how these tests see that the stored hash was used."""
    (_upload_dir(root, name, upload_id) / "data").write_bytes(os.urandom(size))


def test_an_upload_registryd_received_is_completed_by_distribution_from_its_stored_hash(
    tmp_path, registryd_factory, distribution_factory
):
    """registryd in worker mode stores an upload's running hash as
    Distribution does (path and Go's encoding): Distribution finishes the
    upload without hashing the received bytes again."""
    root = tmp_path / "shared-root"
    data = os.urandom(100_003)  # not a whole number of SHA-256 blocks
    registryd = registryd_factory(root, extra_config={"workers": 2})
    upload_id = _begin_upload(registryd.url, NAME, data)
    registryd.stop()
    started_at = (_upload_dir(root, NAME, upload_id) / "startedat").read_text()
    _swap_received_bytes(root, NAME, upload_id, len(data))

    distribution = distribution_factory(root, extra_config={"http": {"secret": _SECRET}})
    location = _distribution_upload_url(distribution.url, NAME, upload_id, len(data), started_at)
    response = http_request(
        "PUT", f"{location}&digest={_sha256(data)}", b"", {"Content-Length": "0"}
    )
    assert response.status == 201, response


def test_an_upload_distribution_received_is_completed_by_registryd_from_its_stored_hash(
    tmp_path, registryd_factory, distribution_factory
):
    root = tmp_path / "shared-root"
    data = os.urandom(100_003)
    distribution = distribution_factory(root)
    upload_id = _begin_upload(distribution.url, NAME, data)
    distribution.stop()
    _swap_received_bytes(root, NAME, upload_id, len(data))

    registryd = registryd_factory(root)
    response = http_request(
        "PUT",
        f"{registryd.url}/v2/{NAME}/blobs/uploads/{upload_id}?digest={_sha256(data)}",
        b"",
        {"Content-Length": "0"},
    )
    assert response.status == 201, response

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

"""End-to-end: real docker (dockerd 20.10, legacy builder) and skopeo
against registryd running under twistd, plus on-disk interoperability with
Debian's docker-registry (CNCF Distribution 2.8.2) for whole images.

Images are tiny (a few hundred KB of random bytes, FROM scratch, no RUN)
so that the whole module runs in seconds on two cores.  Each scenario is a
function taking any running registry (``.url``, ``.host``), so the same code
can be pointed at docker-registry when a failure needs a reference.
"""

import json
import socket
import ssl
import time

import pytest

from tests.e2e.tools import (
    DOCKER_SCHEMA2,
    MANIFEST_ACCEPT,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    get_manifest,
    http_request,
    make_image,
    make_oci_layout,
    oci_layout_digest,
    push_blob,
    push_image,
    put_manifest,
    sha256_digest,
    skopeo_json,
    write_scratch_context,
)

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------- scenarios


def build_image(dockerd, tmp_path, tag):
    """Build a FROM-scratch image with three COPY/ADD layers of random bytes
    (so every image is new to the daemon); return its id.  No LABEL/RUN:
    each such step costs an intermediate container."""
    context = write_scratch_context(tmp_path / f"context-{tag.replace('/', '_').replace(':', '_')}")
    return dockerd.build(context, tag)


def docker_round_trip(dockerd, registry, tmp_path, repository="e2e/app", tag="v1"):
    """Build, push by tag, remove locally, pull back by tag; return
    (image id, manifest digest).  Checks the image id, layers and
    RepoDigests survive the trip and that the registry agrees on the digest."""
    reference = f"{registry.host}/{repository}:{tag}"
    image_id = build_image(dockerd, tmp_path, reference)
    layers = dockerd.inspect(reference)["RootFS"]["Layers"]
    assert len(layers) == 3

    digest = dockerd.push(reference)

    head = get_manifest(registry.url, repository, tag, accept=DOCKER_SCHEMA2, method="HEAD")
    assert head.status == 200, head
    assert head.headers["docker-content-digest"] == digest
    assert head.headers["content-type"] == DOCKER_SCHEMA2
    manifest = get_manifest(registry.url, repository, digest, accept=DOCKER_SCHEMA2)
    assert manifest.status == 200, manifest
    assert sha256_digest(manifest.body) == digest
    assert int(head.headers["content-length"]) == len(manifest.body)
    assert len(manifest.json()["layers"]) == 3

    dockerd.rmi(reference)
    assert not dockerd.has_image(reference)
    assert not dockerd.has_image(image_id)

    dockerd.pull(reference)
    pulled = dockerd.inspect(reference)
    assert pulled["Id"] == image_id
    assert pulled["RootFS"]["Layers"] == layers
    assert f"{registry.host}/{repository}@{digest}" in pulled["RepoDigests"]
    return image_id, digest


def docker_pull_by_digest(dockerd, registry, tmp_path, repository="e2e/bydigest"):
    """Push by tag, pull by digest (and not from a repository that lacks it)."""
    image_id, digest = docker_round_trip(dockerd, registry, tmp_path, repository, "v1")
    by_tag = f"{registry.host}/{repository}:v1"
    by_digest = f"{registry.host}/{repository}@{digest}"
    dockerd.rmi(by_tag)
    assert not dockerd.has_image(image_id)

    dockerd.pull(by_digest)
    pulled = dockerd.inspect(by_digest)
    assert pulled["Id"] == image_id
    assert by_digest in pulled["RepoDigests"]
    assert not dockerd.has_image(by_tag)  # pulling by digest creates no tag

    missing = dockerd.docker("pull", f"{registry.host}/e2e/not-there@{digest}", check=False)
    assert missing.returncode != 0
    dockerd.rmi(by_digest)


def skopeo_scenario(skopeo, registry, tmp_path, repository="e2e/sk"):
    """skopeo copy oci: -> registry -> oci: -> registry under another name;
    inspect, list-tags and delete."""
    image = make_image(layer_sizes=(48 * 1024, 16 * 1024))
    source = make_oci_layout(tmp_path / "oci-source", "v1", image)
    first = f"docker://{registry.host}/{repository}:v1"

    skopeo("copy", f"oci:{source}:v1", first)
    info = skopeo_json("inspect", first)
    assert info["Digest"] == image["digest"]  # manifest bytes kept as pushed
    assert info["Layers"] == [digest for digest, _ in image["layers"]]
    assert skopeo("inspect", "--raw", first).stdout == image["manifest"]
    assert skopeo("inspect", "--config", "--raw", first).stdout == image["config"]

    # Back into a fresh OCI layout, then to a second repository.
    copy = tmp_path / "oci-copy"
    skopeo("copy", first, f"oci:{copy}:copied")
    assert oci_layout_digest(copy, "copied") == image["digest"]
    second = f"docker://{registry.host}/{repository}/other:v2"
    skopeo("copy", f"oci:{copy}:copied", second)
    assert skopeo_json("inspect", second)["Digest"] == image["digest"]

    # Registry to registry, and more tags: v1 and v1-alias share a manifest.
    skopeo("copy", first, f"docker://{registry.host}/{repository}:v1-alias")
    other = make_image(layer_sizes=(8 * 1024,))
    push_image(registry.url, repository, "v3", other)
    tags = skopeo_json("list-tags", f"docker://{registry.host}/{repository}")
    assert tags["Repository"] == f"{registry.host}/{repository}"
    assert sorted(tags["Tags"]) == ["v1", "v1-alias", "v3"]

    # Deleting by tag deletes the manifest, so every tag naming it goes.
    skopeo("delete", first)
    assert skopeo("inspect", first, check=False).returncode != 0
    gone = get_manifest(registry.url, repository, image["digest"])
    assert gone.status == 404, gone
    tags = skopeo_json("list-tags", f"docker://{registry.host}/{repository}")
    assert sorted(tags["Tags"]) == ["v3"]
    assert (
        skopeo_json("inspect", f"docker://{registry.host}/{repository}:v3")["Digest"]
        == other["digest"]
    )
    # The other repository is untouched.
    assert skopeo_json("inspect", second)["Digest"] == image["digest"]


EMPTY_CONFIG = b"{}"


def _artifact(subject_manifest, artifact_type, payload):
    """An OCI artifact (image manifest with artifactType, empty config) whose
    subject is ``subject_manifest`` (bytes)."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(EMPTY_CONFIG), "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.example.data",
                    "digest": sha256_digest(payload),
                    "size": len(payload),
                }
            ],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": sha256_digest(subject_manifest),
                "size": len(subject_manifest),
            },
            "annotations": {"org.example.kind": artifact_type},
        },
        indent=1,
    ).encode()


def referrers_scenario(registry, repository="e2e/referrers"):
    """Push an image and two artifacts naming it as subject (one pushed
    before the image exists), then list them with the referrers API."""
    image = make_image(layer_sizes=(4096,))
    sbom_payload, sig_payload = b'{"sbom": true}', b"signature bytes"
    sbom = _artifact(image["manifest"], "application/vnd.example.sbom+json", sbom_payload)
    signature = _artifact(image["manifest"], "application/vnd.example.signature", sig_payload)
    for blob in (EMPTY_CONFIG, sbom_payload, sig_payload):
        push_blob(registry.url, repository, blob)

    # The subject may be missing when a referrer is pushed.
    early = put_manifest(
        registry.url, repository, sha256_digest(signature), signature, OCI_MANIFEST
    )
    assert early.headers.get("oci-subject") == image["digest"], early
    push_image(registry.url, repository, "v1", image)
    response = put_manifest(registry.url, repository, sha256_digest(sbom), sbom, OCI_MANIFEST)
    assert response.headers.get("docker-content-digest") == sha256_digest(sbom)
    assert response.headers.get("oci-subject") == image["digest"], response

    url = f"{registry.url}/v2/{repository}/referrers/{image['digest']}"
    listing = http_request("GET", url)
    assert listing.status == 200, listing
    assert listing.headers["content-type"].split(";")[0] == OCI_INDEX
    index = listing.json()
    assert index["schemaVersion"] == 2
    assert index.get("mediaType") == OCI_INDEX
    found = {d["digest"]: d for d in index["manifests"]}
    assert set(found) == {sha256_digest(sbom), sha256_digest(signature)}
    for manifest, kind in (
        (sbom, "application/vnd.example.sbom+json"),
        (signature, "application/vnd.example.signature"),
    ):
        descriptor = found[sha256_digest(manifest)]
        assert descriptor["mediaType"] == OCI_MANIFEST
        assert descriptor["size"] == len(manifest)
        assert descriptor["artifactType"] == kind
        assert descriptor.get("annotations") == {"org.example.kind": kind}

    filtered = http_request("GET", url + "?artifactType=application/vnd.example.sbom%2Bjson")
    assert filtered.status == 200, filtered
    digests = [d["digest"] for d in filtered.json()["manifests"]]
    if filtered.headers.get("oci-filters-applied") == "artifactType":
        assert digests == [sha256_digest(sbom)]
    else:  # unfiltered answers are allowed, but then must say nothing
        assert sorted(digests) == sorted(found)

    nothing = http_request(
        "GET", f"{registry.url}/v2/{repository}/referrers/{sha256_digest(b'no such manifest')}"
    )
    assert nothing.status == 200, nothing
    assert nothing.json()["manifests"] == []

    # Deleting a referrer removes it from the list.
    deleted = http_request(
        "DELETE", f"{registry.url}/v2/{repository}/manifests/{sha256_digest(signature)}"
    )
    assert deleted.status == 202, deleted
    after = http_request("GET", url).json()
    assert [d["digest"] for d in after["manifests"]] == [sha256_digest(sbom)]


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("server", ["registryd", "distribution"])
def test_tls_handshake_on_plain_http_port_fails_at_once(request, server):
    """docker and skopeo, told a registry is insecure, first try HTTPS and
    fall back to plain HTTP only when the TLS handshake fails.  A server that
    sits waiting for an HTTP request line in a TLS ClientHello costs every
    docker/skopeo command a 10 s handshake timeout.  docker-registry (Go's
    net/http) rejects the handshake immediately; so must registryd."""
    registry = request.getfixturevalue(server)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", registry.port), timeout=5) as sock:
        with pytest.raises((ssl.SSLError, ConnectionError, TimeoutError, OSError)):
            context.wrap_socket(sock, server_hostname="127.0.0.1")
    elapsed = time.monotonic() - started
    assert elapsed < 2, f"{server} took {elapsed:.1f}s to fail a TLS handshake"


def test_docker_push_remove_pull(dockerd, registryd, tmp_path):
    image_id, digest = docker_round_trip(dockerd, registryd, tmp_path)
    dockerd.rmi(f"{registryd.host}/e2e/app:v1")


def test_docker_push_by_tag_pull_by_digest(dockerd, registryd, tmp_path):
    docker_pull_by_digest(dockerd, registryd, tmp_path)


def test_skopeo_copy_inspect_list_tags_delete(skopeo, registryd, tmp_path):
    skopeo_scenario(skopeo, registryd, tmp_path)


def test_referrers_of_pushed_artifacts(registryd):
    referrers_scenario(registryd)


def test_catalog_lists_pushed_repositories(registryd):
    for repository in ("e2e/one", "e2e/nested/two"):
        push_image(registryd.url, repository, "latest", make_image(layer_sizes=(1024,)))
    response = http_request("GET", f"{registryd.url}/v2/_catalog")
    assert response.status == 200, response
    assert response.json()["repositories"] == ["e2e/nested/two", "e2e/one"]


def test_docker_image_from_distribution_served_by_registryd(
    dockerd, skopeo, tmp_path, registryd_factory, distribution_factory
):
    root = tmp_path / "shared-root"
    distribution = distribution_factory(root)
    image_id, digest = docker_round_trip(dockerd, distribution, tmp_path, "e2e/from-distribution")
    dockerd.rmi(f"{distribution.host}/e2e/from-distribution:v1")
    oci = make_image(layer_sizes=(2048,))
    push_image(distribution.url, "e2e/oci", "v1", oci)
    distribution.stop()

    registryd = registryd_factory(root)
    _check_served_image(dockerd, registryd, "e2e/from-distribution", image_id, digest)
    assert (
        skopeo_json("inspect", f"docker://{registryd.host}/e2e/oci:v1")["Digest"] == oci["digest"]
    )
    catalog = http_request("GET", f"{registryd.url}/v2/_catalog").json()["repositories"]
    assert catalog == ["e2e/from-distribution", "e2e/oci"]


def test_docker_image_from_registryd_served_by_distribution(
    dockerd, skopeo, tmp_path, registryd_factory, distribution_factory
):
    root = tmp_path / "shared-root"
    registryd = registryd_factory(root)
    image_id, digest = docker_round_trip(dockerd, registryd, tmp_path, "e2e/from-registryd")
    dockerd.rmi(f"{registryd.host}/e2e/from-registryd:v1")
    oci = make_image(layer_sizes=(2048,))
    push_image(registryd.url, "e2e/oci", "v1", oci)
    registryd.stop()

    distribution = distribution_factory(root)
    _check_served_image(dockerd, distribution, "e2e/from-registryd", image_id, digest)
    assert (
        skopeo_json("inspect", f"docker://{distribution.host}/e2e/oci:v1")["Digest"]
        == oci["digest"]
    )
    catalog = http_request("GET", f"{distribution.url}/v2/_catalog").json()["repositories"]
    assert catalog == ["e2e/from-registryd", "e2e/oci"]


def _check_served_image(dockerd, registry, repository, image_id, digest):
    """``registry`` serves the image another server stored: tag, manifest
    digest, skopeo's view, and a docker pull that yields the same image."""
    reference = f"{registry.host}/{repository}:v1"
    info = skopeo_json("inspect", f"docker://{reference}")
    assert info["Digest"] == digest
    assert skopeo_json("list-tags", f"docker://{registry.host}/{repository}")["Tags"] == ["v1"]
    head = get_manifest(registry.url, repository, "v1", accept=MANIFEST_ACCEPT, method="HEAD")
    assert head.headers.get("docker-content-digest") == digest, head

    dockerd.pull(reference)
    assert dockerd.image_id(reference) == image_id
    assert f"{registry.host}/{repository}@{digest}" in dockerd.inspect(reference)["RepoDigests"]
    dockerd.rmi(reference)

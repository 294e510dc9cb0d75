"""End-to-end: skopeo pulls through registryd (under twistd) configured as
a pull-through cache of Debian's docker-registry (Distribution 2.8.2);
then the upstream stops and the cached image is still pulled whole."""

import json

import pytest

from tests.e2e.tools import make_image, oci_layout_digest, push_image

pytestmark = pytest.mark.e2e


def test_skopeo_pulls_through_the_cache_and_from_it_alone(
    distribution_factory, registryd_factory, skopeo, tmp_path
):
    upstream = distribution_factory()
    image = make_image(layer_sizes=(256 * 1024, 64 * 1024))
    digest = push_image(upstream.url, "library/tool", "v1", image)
    cache = registryd_factory(extra_config={"proxy": {"remoteurl": upstream.url}})

    first = tmp_path / "first"
    skopeo("copy", f"docker://{cache.host}/library/tool:v1", f"oci:{first}:v1")
    assert oci_layout_digest(first, "v1") == digest
    for layer_digest, data in image["layers"]:
        assert (first / "blobs" / "sha256" / layer_digest.split(":", 1)[1]).read_bytes() == data

    upstream.stop()
    second = tmp_path / "second"
    skopeo("copy", f"docker://{cache.host}/library/tool:v1", f"oci:{second}:v1")
    assert oci_layout_digest(second, "v1") == digest
    inspected = json.loads(
        skopeo("inspect", "--raw", f"docker://{cache.host}/library/tool@{digest}").stdout
    )
    assert [layer["digest"] for layer in inspected["layers"]] == [d for d, _ in image["layers"]]
    # and pushes are refused, as by Distribution's proxy
    refused = skopeo(
        "copy", f"oci:{first}:v1", f"docker://{cache.host}/library/tool:v2", check=False
    )
    assert refused.returncode != 0


def test_docker_pulls_docker_hub_names_through_the_mirror(
    dockerd, distribution_factory, registryd_factory
):
    """dockerd with ``registry-mirrors`` pointing at registryd's cache:
    ``docker pull tool:v1`` (docker.io/library/tool) is answered by the
    mirror -- there is no other network here, so a pull that worked came
    through it -- with the digest the upstream holds."""
    upstream = distribution_factory()
    image = make_image(layer_sizes=(128 * 1024,))
    digest = push_image(upstream.url, "library/mirrored", "v1", image)
    cache = registryd_factory(extra_config={"proxy": {"remoteurl": upstream.url}})
    dockerd.set_registry_mirrors([cache.url])
    try:
        dockerd.docker("pull", "mirrored:v1")
        repo_digests = json.loads(
            dockerd.docker(
                "image", "inspect", "--format", "{{json .RepoDigests}}", "mirrored:v1"
            ).stdout
        )
        assert repo_digests == [f"mirrored@{digest}"]
    finally:
        dockerd.docker("rmi", "-f", "mirrored:v1", check=False)
        dockerd.set_registry_mirrors([])

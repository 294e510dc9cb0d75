"""End-to-end: skopeo pulls through registryd (under twistd) configured as
a pull-through cache of Debian's docker-registry (Distribution 2.8.2);
then the upstream stops and the cached image is still pulled whole."""

import json

import pytest

from tests.e2e.tools import make_image, oci_layout_digest, push_image

pytestmark = pytest.mark.e2e


def test_skopeo_pulls_through_the_cache_and_from_it_alone(
        distribution_factory, registryd_factory, skopeo, tmp_path):
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
    inspected = json.loads(skopeo("inspect", "--raw", f"docker://{cache.host}/library/tool@{digest}").stdout)
    assert [layer["digest"] for layer in inspected["layers"]] == [d for d, _ in image["layers"]]
    # and pushes are refused, as by Distribution's proxy
    refused = skopeo("copy", f"oci:{first}:v1", f"docker://{cache.host}/library/tool:v2", check=False)
    assert refused.returncode != 0

"""The referrers API on a root directory that Distribution wrote.

Debian's docker-registry (2.8.2) stores OCI 1.1 manifests that carry a
``subject`` (a signature, an SBOM) but keeps no referrers index, so when
registryd takes over its directory the referrers API first answers with an
empty index.  ``python -m registryd referrers`` rebuilds the index from the
manifests; afterwards registryd lists the artifacts, with their
``artifactType``, and the directory still serves whole from docker-registry.
"""

import json
import sys

import pytest

from tests.e2e import tools
from tests.e2e.tools import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    http_request,
    make_image,
    push_blob,
    push_image,
    put_manifest,
    sha256_digest,
)

pytestmark = pytest.mark.e2e

EMPTY = b"{}"
SBOM = "application/vnd.example.sbom+json"


def artifact(subject_digest, subject_size, payload):
    """An OCI 1.1 artifact manifest (empty config) about ``subject_digest``."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM,
            "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(EMPTY), "size": len(EMPTY)},
            "layers": [{"mediaType": SBOM, "digest": sha256_digest(payload), "size": len(payload)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
            "annotations": {"org.example.kind": "sbom"},
        }
    ).encode()


def referrers(url, name, digest):
    response = http_request("GET", f"{url}/v2/{name}/referrers/{digest}")
    assert response.status == 200, response
    index = json.loads(response.body)
    assert index["mediaType"] == OCI_INDEX
    return index["manifests"]


def test_referrers_of_a_distribution_root_after_a_rebuild(
    tmp_path, distribution_factory, registryd_factory
):
    root = tmp_path / "shared-root"
    distribution = distribution_factory(root)
    image = make_image((2000,))
    subject = push_image(distribution.url, "ref/app", "v1", image)
    payload = b'{"sbom": "example"}'
    for blob in (EMPTY, payload):
        push_blob(distribution.url, "ref/app", blob)
    body = artifact(subject, len(image["manifest"]), payload)
    stored = put_manifest(distribution.url, "ref/app", sha256_digest(body), body, OCI_MANIFEST)
    assert stored.status == 201, stored
    distribution.stop()

    registryd = registryd_factory(root)
    assert referrers(registryd.url, "ref/app", subject) == []  # Distribution kept no index
    registryd.stop()

    config = tmp_path / "registryd.yaml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n")
    env = tools._clean_env((), {"PYTHONPATH": str(tools.REPO_ROOT)})
    result = tools.run(
        [sys.executable, "-m", "registryd", "referrers", "--config", str(config), "--json"], env=env
    )
    report = json.loads(result.stdout)
    assert report["entries_added"] == [
        {"repository": "ref/app", "subject": subject, "referrer": sha256_digest(body)}
    ]

    registryd = registryd_factory(root)
    assert referrers(registryd.url, "ref/app", subject) == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": sha256_digest(body),
            "size": len(body),
            "artifactType": SBOM,
            "annotations": {"org.example.kind": "sbom"},
        }
    ]
    registryd.stop()

    # The index is registryd's own directory: docker-registry ignores it.
    distribution = distribution_factory(root)
    for reference in ("v1", subject, sha256_digest(body)):
        response = http_request(
            "GET",
            f"{distribution.url}/v2/ref/app/manifests/{reference}",
            headers={"Accept": OCI_MANIFEST},
        )
        assert response.status == 200, (reference, response)

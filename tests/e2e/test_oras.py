"""ORAS's Python SDK (``oras`` on PyPI, built on requests) against
registryd: OCI artifacts pushed as files, monolithic and chunked, pulled
back byte for byte; an artifact attached to an image with ``subject`` and
found through the referrers API; tags listed and deleted."""

import hashlib
import json
import os

import pytest

from tests.e2e import tools

pytestmark = pytest.mark.e2e

# A test dependency (setup.py's test extra): missing, it fails in CI, skips locally.
if tools.in_ci():
    import oras.client as oras_client
else:
    oras_client = pytest.importorskip("oras.client")


def client_for(registry):
    return oras_client.OrasClient(hostname=registry.host, insecure=True)


def write_files(directory, sizes):
    directory.mkdir(parents=True, exist_ok=True)
    made = {}
    for index, size in enumerate(sizes):
        path = directory / f"part-{index}.bin"
        path.write_bytes(os.urandom(size))
        made[path.name] = path
    return made


def test_oras_push_pull_files_monolithic_and_chunked(registryd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # oras-py wants pushed paths below the working directory
    files = write_files(tmp_path / "in", [10, 200_000, 3 * 1024 * 1024 + 7])
    client = client_for(registryd)
    for tag, chunked in (("mono", False), ("chunked", True)):
        target = f"{registryd.host}/e2e/oras:{tag}"
        response = client.push(
            target,
            files=[f"in/{name}" for name in files],
            do_chunked=chunked,
            chunk_size=1024 * 1024,
            manifest_annotations={"org.example.kind": tag},
        )
        assert response.status_code == 201, response.text
        out = tmp_path / f"out-{tag}"
        pulled = client.pull(target, outdir=str(out))
        assert sorted(os.path.basename(p) for p in pulled) == sorted(files)
        for path in pulled:
            original = files[os.path.basename(path)].read_bytes()
            assert (
                hashlib.sha256(open(path, "rb").read()).digest()
                == hashlib.sha256(original).digest()
            )
    assert sorted(client.get_tags(f"{registryd.host}/e2e/oras")) == ["chunked", "mono"]
    client.delete_tag(f"{registryd.host}/e2e/oras", "mono")
    assert client.get_tags(f"{registryd.host}/e2e/oras") == ["chunked"]


def test_oras_artifact_with_subject_is_a_referrer(registryd, tmp_path, monkeypatch):
    import oras.oci

    monkeypatch.chdir(tmp_path)
    image = tools.make_image((1000,))
    subject_digest = tools.push_image(registryd.url, "e2e/oras-ref", "v1", image)
    (tmp_path / "sbom.json").write_text(json.dumps({"packages": ["a", "b"]}))
    client = client_for(registryd)
    subject = oras.oci.Subject(tools.OCI_MANIFEST, subject_digest, len(image["manifest"]))
    response = client.push(
        f"{registryd.host}/e2e/oras-ref:sbom",
        files=["sbom.json"],
        subject=subject,
        manifest_annotations={"org.example.kind": "sbom"},
    )
    assert response.status_code == 201, response.text
    assert response.headers.get("OCI-Subject") == subject_digest
    referrers = tools.http_request(
        "GET", f"{registryd.url}/v2/e2e/oras-ref/referrers/{subject_digest}"
    )
    assert referrers.status == 200
    found = json.loads(referrers.body)["manifests"]
    assert [entry["annotations"] for entry in found] == [{"org.example.kind": "sbom"}]
    assert found[0]["digest"] == response.headers["Docker-Content-Digest"]

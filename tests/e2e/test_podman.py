"""podman (Debian's, 4.3) against registryd: a real third client besides
docker and skopeo, with its own push path (containers/image) and its own
multi-platform manifest lists.

podman runs as root with a private storage (vfs under the test's tmp
directory), cgroupfs and file events, so it needs no systemd and leaves
nothing behind; builds are ``FROM scratch`` with COPY only (no container
is run).
"""

import json
import os

import pytest

from tests.e2e import tools

pytestmark = pytest.mark.e2e


@pytest.fixture
def podman(tmp_path):
    client = tools.Podman(tmp_path / "podman")
    yield client
    client.stop()


def test_podman_push_pull_round_trip(podman, registryd, tmp_path):
    podman.build("localhost/e2e-pod:v1", {"a.txt": os.urandom(4000), "b.bin": os.urandom(300_000)})
    reference = f"{registryd.host}/e2e/pod:v1"
    digest_file = tmp_path / "pushed-digest"
    podman(
        "push",
        "--tls-verify=false",
        "--digestfile",
        str(digest_file),
        "localhost/e2e-pod:v1",
        reference,
    )
    pushed = digest_file.read_text().strip()
    assert pushed.startswith("sha256:")
    podman("rmi", "--all", "--force")

    podman("pull", "--tls-verify=false", reference)
    assert (
        podman("image", "inspect", reference, "--format", "{{.Digest}}").stdout.decode().strip()
        == pushed
    )
    by_digest = f"{registryd.host}/e2e/pod@{pushed}"
    podman("pull", "--tls-verify=false", by_digest)
    manifest = json.loads(tools.skopeo("inspect", "--raw", f"docker://{reference}").stdout)
    assert len(manifest["layers"]) == 2


def test_podman_manifest_list_push(podman, registryd, tmp_path):
    """A two-entry manifest list made by podman, pushed with --all: the
    index and both images arrive, and each entry can be pulled."""
    podman.build("localhost/e2e-pod-amd64:v1", {"arch.txt": b"amd64\n" + os.urandom(100)})
    podman.build("localhost/e2e-pod-arm64:v1", {"arch.txt": b"arm64\n" + os.urandom(100)})
    podman("manifest", "create", "localhost/e2e-pod-list:v1")
    for image, arch in (
        ("localhost/e2e-pod-amd64:v1", "amd64"),
        ("localhost/e2e-pod-arm64:v1", "arm64"),
    ):
        podman(
            "manifest",
            "add",
            "--arch",
            arch,
            "--os",
            "linux",
            "localhost/e2e-pod-list:v1",
            f"containers-storage:{image}",
        )
    reference = f"{registryd.host}/e2e/pod-list:v1"
    digest_file = tmp_path / "list-digest"
    podman(
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "--digestfile",
        str(digest_file),
        "localhost/e2e-pod-list:v1",
        f"docker://{reference}",
    )
    index = json.loads(tools.skopeo("inspect", "--raw", f"docker://{reference}").stdout)
    assert index["mediaType"] in (
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    )
    assert sorted(entry["platform"]["architecture"] for entry in index["manifests"]) == [
        "amd64",
        "arm64",
    ]
    podman("rmi", "--all", "--force")
    for entry in index["manifests"]:
        podman("pull", "--tls-verify=false", f"{registryd.host}/e2e/pod-list@{entry['digest']}")

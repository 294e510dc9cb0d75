"""The container image: the repository's Dockerfile built on a Debian
bookworm made here (mmdebstrap from this machine's mirror, ``docker
import``ed: there is no Docker Hub), run like ``registry:2`` and used by
docker to push and pull an image, configured by REGISTRY_* variables.

The private dockerd has no bridge network, so the container shares the
host's network and is moved off port 5000 with REGISTRY_HTTP_ADDR: that
it answers on the new port is the proof that the environment reaches it.
One image build serves all the tests of this module (about two minutes on
two cores; the base tarball is cached by content between runs).
"""

import json
import time
from pathlib import Path

import pytest

from tests.e2e import tools

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image(dockerd, tmp_path_factory):
    """The registryd image built from the work tree on a local bookworm."""
    tarball, key = tools.debian_base_tar("bookworm")
    base = f"registryd-test-base:{key}"
    if not dockerd.has_image(base):
        dockerd.docker("import", str(tarball), base, timeout=300)
    tag = "registryd-test:e2e"
    started = time.monotonic()
    dockerd.docker(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE={base}",
        "-t",
        tag,
        str(ROOT),
        timeout=900,
    )
    print(f"image build: {time.monotonic() - started:.0f}s")
    yield tag
    dockerd.docker("rmi", "--force", tag, check=False)


class Container:
    def __init__(self, dockerd, container_id, port, debug_port):
        self.dockerd = dockerd
        self.id = container_id
        self.url = f"http://127.0.0.1:{port}"
        self.debug_url = f"http://127.0.0.1:{debug_port}"

    def logs(self):
        result = self.dockerd.docker("logs", self.id, check=False)
        return (result.stdout + result.stderr).decode(errors="replace")

    def inspect(self):
        return json.loads(self.dockerd.docker("inspect", self.id).stdout)[0]

    def wait_for(self, predicate, what, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.inspect()["State"]
            if not state["Running"]:
                raise AssertionError(f"container exited ({state['ExitCode']}):\n{self.logs()}")
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"{what} not within {timeout}s:\n{self.logs()}")

    def answers(self, url, status=200):
        try:
            return tools.http_request("GET", url, timeout=5).status == status
        except OSError:
            return False


@pytest.fixture
def container(dockerd, image):
    """The image running as registry:2 would, with REGISTRY_* overrides:
    other ports, deletes enabled; a named volume on /var/lib/registry."""
    port, debug_port = tools.free_ports(2)
    volume = f"registryd-e2e-{port}"
    container_id = (
        dockerd.docker(
            "run",
            "-d",
            "--network",
            "host",
            "-v",
            f"{volume}:/var/lib/registry",
            "-e",
            f"REGISTRY_HTTP_ADDR=127.0.0.1:{port}",
            "-e",
            f"REGISTRY_HTTP_DEBUG_ADDR=127.0.0.1:{debug_port}",
            "-e",
            "REGISTRY_STORAGE_DELETE_ENABLED=true",
            "--health-interval",
            "1s",
            image,
        )
        .stdout.decode()
        .strip()
    )
    running = Container(dockerd, container_id, port, debug_port)
    try:
        yield running
    finally:
        dockerd.docker("rm", "--force", "--volumes", container_id, check=False)
        dockerd.docker("volume", "rm", "--force", volume, check=False)


def test_push_and_pull_through_the_container(dockerd, container, tmp_path):
    container.wait_for(lambda: container.answers(f"{container.url}/v2/"), "the API on the env port")
    context = tools.write_scratch_context(tmp_path / "context", label="through the image")
    reference = f"{container.url.removeprefix('http://')}/e2e/image:1"
    built = dockerd.build(context, reference)
    digest = dockerd.push(reference)
    dockerd.rmi(reference)
    dockerd.pull(reference)
    assert dockerd.image_id(reference) == built
    # REGISTRY_STORAGE_DELETE_ENABLED=true reached the container: deletes work
    response = tools.http_request("DELETE", f"{container.url}/v2/e2e/image/manifests/{digest}")
    assert response.status == 202, response
    dockerd.rmi(reference)
    # the data went to the volume, written by the non-root user
    owner = (
        dockerd.docker(
            "exec", container.id, "stat", "-c", "%U %u", "/var/lib/registry/docker/registry/v2"
        )
        .stdout.decode()
        .split()
    )
    assert owner[0] == "registryd" and owner[1] != "0", owner


def test_healthcheck_and_debug_listener(dockerd, container):
    container.wait_for(lambda: container.answers(f"{container.debug_url}/health"), "/health")
    container.wait_for(
        lambda: container.inspect()["State"].get("Health", {}).get("Status") == "healthy",
        "docker's healthy status",
    )


def test_the_image_runs_the_registryd_command(dockerd, image):
    from registryd import __version__

    output = dockerd.docker(
        "run", "--rm", "--network", "none", image, "registryd", "--version"
    ).stdout.decode()
    assert output.strip() == f"registryd {__version__}"
    result = dockerd.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "REGISTRY_STORAGE_S3_ACCESSKEY=AKIA-secret",
        "-e",
        "REGISTRY_STORAGE_S3_SECRETKEY=also-secret",
        "-e",
        "REGISTRY_STORAGE=s3",
        "-e",
        "REGISTRY_STORAGE_S3_REGION=us-east-1",
        "-e",
        "REGISTRY_STORAGE_S3_BUCKET=registry",
        image,
        "registryd",
        "check-config",
        "/etc/registryd/config.yml",
    )
    output = result.stdout.decode()
    assert "AKIA-secret" not in output and "also-secret" not in output
    assert "# REGISTRY_STORAGE sets storage" in output
    result = dockerd.docker(
        "run", "--rm", "--network", "none", "-e", "REGISTRY_HTTP_ADDR=[", image, check=False
    )
    assert result.returncode != 0
    assert (
        "REGISTRY_HTTP_ADDR: value is not valid YAML"
        in result.stderr.decode() + result.stdout.decode()
    )

import pytest
from tests.e2e.test_docker_skopeo import docker_round_trip, docker_pull_by_digest, skopeo_scenario, _check_served_image
from tests.e2e import tools

def test_a(dockerd, distribution, tmp_path):
    print("dockerd start", dockerd.start_seconds)
    docker_round_trip(dockerd, distribution, tmp_path)
    dockerd.rmi(f"{distribution.host}/e2e/app:v1")

def test_b(dockerd, distribution, tmp_path):
    docker_pull_by_digest(dockerd, distribution, tmp_path)

def test_c(skopeo, distribution, tmp_path):
    skopeo_scenario(skopeo, distribution, tmp_path)

def test_e(dockerd, skopeo, tmp_path, distribution_factory):
    root = tmp_path / "shared-root"
    d1 = distribution_factory(root)
    image_id, digest = docker_round_trip(dockerd, d1, tmp_path, "e2e/from-distribution")
    dockerd.rmi(f"{d1.host}/e2e/from-distribution:v1")
    d1.stop()
    d2 = distribution_factory(root)
    _check_served_image(dockerd, d2, "e2e/from-distribution", image_id, digest)
    print(dockerd.docker("images", "-a").stdout.decode())

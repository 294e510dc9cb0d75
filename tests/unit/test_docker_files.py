"""The container files: the image's configuration and the compose
example's REGISTRY_* settings are what registryd accepts (checked without
docker; tests/e2e/test_image.py builds and runs the image)."""

from pathlib import Path

import yaml

from registryd.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_configuration_is_valid_and_serves_like_registry_2():
    config = load_config(str(ROOT / "docker" / "config.yml"), {})
    assert config.storage.parameters == {"rootdirectory": "/var/lib/registry"}
    assert config.http.listen == ("tcp:5000",)
    assert config.http.debug.listen == ("tcp:5001",)


def test_the_compose_example_settings_are_accepted_over_the_image_configuration():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    environ = compose["services"]["registry"]["environment"]
    assert environ and all(name.startswith("REGISTRY_") for name in environ)
    config = load_config(str(ROOT / "docker" / "config.yml"), environ)
    assert config.storage.delete_enabled is True
    assert config.http.debug.listen == ("tcp:5001",)


def test_the_dockerfile_serves_the_image_configuration_as_a_non_root_user():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE=debian:bookworm-slim" in text
    assert "USER registryd" in text and "VOLUME /var/lib/registry" in text
    assert 'CMD ["registryd", "serve", "--config", "/etc/registryd/config.yml"]' in text

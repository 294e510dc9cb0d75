"""Fixtures for end-to-end tests: real dockerd, docker-registry, registryd.

Every test collected under ``tests/e2e/`` gets the ``e2e`` marker, so
``pytest -m "not e2e"`` runs everything else and ``pytest -m e2e`` only these.
A missing tool skips the tests locally and fails them when ``CI=true``
(see ``tools.require_tool``).

Imports nothing from Twisted: pytest-twisted installs its reactor later, in
``pytest_configure``.  The tests themselves are plain synchronous functions
that drive subprocesses.
"""

from pathlib import Path

import pytest

from tests.e2e import tools

_HERE = Path(__file__).resolve().parent


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test with real daemons (dockerd, docker-registry, "
        "registryd under twistd) and clients (docker, skopeo)",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory):
    """A private dockerd (own containerd, vfs, no networking setup) shared
    by the whole session; starting one costs about a second, and images are
    tiny.  Tests use distinct repository names and remove what they build."""
    daemon = tools.Dockerd()
    try:
        daemon.start(tmp_path_factory.mktemp("dockerd-logs"))
        yield daemon
    finally:
        daemon.stop()


def _factory(cls, tmp_path):
    started = []
    counter = [0]

    def make(root=None, **kwargs):
        counter[0] += 1
        tmpdir = tmp_path / f"{cls.name}-{counter[0]}"
        server = cls(
            root=root if root is not None else tmp_path / f"{cls.name}-root",
            tmpdir=tmpdir,
            **kwargs,
        )
        started.append(server)
        return server.start()

    return make, started


@pytest.fixture
def registryd_factory(tmp_path):
    """``make(root=None, extra_config=None) -> Registryd`` (started); every
    server made is stopped after the test.  Default root:
    ``tmp_path/registryd-root``."""
    make, started = _factory(tools.Registryd, tmp_path)
    yield make
    for server in started:
        server.stop()


@pytest.fixture
def distribution_factory(tmp_path):
    """``make(root=None, extra_config=None) -> DistributionRegistry``
    (started; Debian's docker-registry); all stopped after the test."""
    tools.require_tool("docker-registry")
    make, started = _factory(tools.DistributionRegistry, tmp_path)
    yield make
    for server in started:
        server.stop()


@pytest.fixture
def registryd(registryd_factory):
    """registryd under twistd on 127.0.0.1:<free port>, filesystem storage
    with deletes enabled: ``.url``, ``.host``, ``.port``, ``.root``, ``.pid``."""
    return registryd_factory()


@pytest.fixture
def distribution(distribution_factory):
    """Debian's docker-registry on 127.0.0.1:<free port>, same storage setup."""
    return distribution_factory()


@pytest.fixture
def skopeo():
    """The ``tools.skopeo`` runner, once skopeo is known to be installed."""
    tools.require_tool("skopeo")
    return tools.skopeo

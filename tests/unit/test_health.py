"""registryd.health: Distribution's threshold semantics, timeouts, and the
storage probe against real drivers."""

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from registryd.config import FileCheckConfig, HealthConfig
from registryd.health import PROBE_PATH, Check, HealthChecks, file_probe, storage_probe
from registryd.storage.drivers.filesystem import FilesystemDriver
from registryd.storage.drivers.memory import InMemoryDriver


class Probe:
    """A probe whose outcome the test sets."""

    def __init__(self):
        self.error = None

    async def __call__(self):
        if self.error:
            raise OSError(self.error)


@pytest_twisted.ensureDeferred
async def test_unhealthy_only_after_threshold_consecutive_failures():
    probe = Probe()
    check = Check("c", probe, threshold=3)
    probe.error = "disk gone"
    assert await check.run() == "disk gone"
    assert await check.run() == "disk gone"
    assert check.healthy and check.failures == 2
    await check.run()
    assert not check.healthy and check.last_error == "disk gone"
    probe.error = None
    assert await check.run() is None
    assert check.healthy and check.failures == 0 and check.last_error is None


@pytest_twisted.ensureDeferred
async def test_a_probe_that_hangs_fails_after_its_timeout():
    clock = Clock()
    hanging = defer.Deferred()
    check = Check("slow", lambda: hanging, reactor=clock, timeout=5.0)
    result = defer.ensureDeferred(check.run())
    clock.advance(4.9)
    assert not result.called
    clock.advance(0.2)
    assert result.result == "timed out after 5s"
    assert not check.healthy


@pytest_twisted.ensureDeferred
async def test_storage_probe_writes_and_reads_outside_distributions_tree():
    driver = InMemoryDriver()
    await storage_probe(driver)()
    assert PROBE_PATH.startswith("/registryd/")
    assert await driver.get_content(PROBE_PATH)


@pytest_twisted.ensureDeferred
async def test_storage_probe_fails_when_the_root_is_not_a_directory(tmp_path):
    root = tmp_path / "root"
    root.write_bytes(b"")
    check = Check("storagedriver_filesystem", storage_probe(FilesystemDriver(str(root))))
    error = await check.run()
    assert error and "/registryd/health" in error
    assert str(tmp_path) not in error  # driver paths only, never host paths


@pytest_twisted.ensureDeferred
async def test_file_probe(tmp_path):
    flag = tmp_path / "out-of-rotation"
    check = Check("file", file_probe(str(flag)))
    assert await check.run() is None
    flag.write_text("")
    assert await check.run() == f"file exists: {flag}"


@pytest_twisted.ensureDeferred
async def test_checks_from_config():
    driver = InMemoryDriver()
    checks = HealthChecks.from_config(HealthConfig(), driver)
    assert [c.name for c in checks.on_demand] == ["storagedriver_inmemory"] and checks.periodic == []
    assert await checks.status() == {}
    assert checks.healthy
    config = HealthConfig(storagedriver=True, interval=2.0, threshold=3,
                          files=[FileCheckConfig("/nonexistent/flag", 1.0)])
    checks = HealthChecks.from_config(config, driver)
    assert [(c.name, c.interval, c.threshold) for c in checks.periodic] == [
        ("storagedriver_inmemory", 2.0, 3), ("file_/nonexistent/flag", 1.0, 1)]
    assert checks.on_demand == []

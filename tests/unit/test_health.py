"""registryd.ops.health: Distribution's threshold semantics, timeouts, and the
storage probe against real drivers."""

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from registryd.config import FileCheckConfig, HealthConfig, HTTPCheckConfig, TCPCheckConfig
from registryd.ops.health import (
    PROBE_PATH,
    Check,
    HealthChecks,
    file_probe,
    http_probe,
    storage_probe,
    tcp_probe,
)
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
    assert [c.name for c in checks.on_demand] == [
        "storagedriver_inmemory"
    ] and checks.periodic == []
    assert await checks.status() == {}
    assert checks.healthy
    config = HealthConfig(
        storagedriver=True,
        interval=2.0,
        threshold=3,
        files=[FileCheckConfig("/nonexistent/flag", 1.0)],
    )
    checks = HealthChecks.from_config(config, driver)
    assert [(c.name, c.interval, c.threshold) for c in checks.periodic] == [
        ("storagedriver_inmemory", 2.0, 3),
        ("/nonexistent/flag", 1.0, 1),
    ]
    assert checks.on_demand == []


# --- health.http and health.tcp, against real local servers ---------------------


class _Answer:
    """A twisted.web resource answering HEAD with a status the test sets,
    recording the headers it was sent; or never answering."""

    isLeaf = True

    def __init__(self):
        self.status = 200
        self.hang = False
        self.seen = []

    def render(self, request):
        from twisted.web.server import NOT_DONE_YET

        self.seen.append(request.requestHeaders.getRawHeaders("authorization"))
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return b""

    def getChildWithDefault(self, name, request):
        return self

    def putChild(self, path, child):
        pass


def _listen(factory):
    from twisted.internet import reactor

    return reactor.listenTCP(0, factory, interface="127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_http_probe_checks_the_status_and_sends_the_headers():
    from twisted.web.server import Site

    answer = _Answer()
    site = Site(answer)
    port = _listen(site)
    uri = f"http://127.0.0.1:{port.getHost().port}/ping"
    try:
        check = Check(
            uri, http_probe(uri, {"Authorization": ["Basic eDp5"]}, 200, 1.0), timeout=1.0
        )
        assert await check.run() is None
        assert answer.seen == [["Basic eDp5"]]
        answer.status = 503
        assert await check.run() == "downstream service returned unexpected status: 503"
        expecting = Check(uri, http_probe(uri, status_code=503, timeout=1.0), timeout=1.0)
        assert await expecting.run() is None
        answer.hang = True
        slow = Check(uri, http_probe(uri, timeout=0.3), timeout=0.3)
        assert await slow.run() == "timed out after 0.3s"
    finally:
        await port.stopListening()
        for channel in list(getattr(site, "_channels", ())):
            channel.transport.abortConnection()
    gone = Check(uri, http_probe(uri, timeout=1.0), timeout=1.0)
    error = await gone.run()
    assert error is not None and "refused" in error.lower(), error


@pytest_twisted.ensureDeferred
async def test_tcp_probe_connects_and_lets_go():
    from twisted.internet.protocol import Factory, Protocol

    accepted = []

    class Note(Protocol):
        def connectionMade(self):
            accepted.append(self)

    port = _listen(Factory.forProtocol(Note))
    number = port.getHost().port
    check = Check(f"127.0.0.1:{number}", tcp_probe("127.0.0.1", number, 1.0), timeout=1.0)
    assert await check.run() is None
    assert len(accepted) == 1
    await port.stopListening()
    error = await check.run()
    assert error.startswith(f"connection to 127.0.0.1:{number} failed: "), error


@pytest_twisted.ensureDeferred
async def test_http_and_tcp_checks_from_config():
    config = HealthConfig(
        http=[HTTPCheckConfig("http://127.0.0.1:9/x", {}, 204, 2.0, 5.0, 3)],
        tcp=[TCPCheckConfig("127.0.0.1:9", "127.0.0.1", 9, 1.5, 4.0, 2)],
    )
    checks = HealthChecks.from_config(config, InMemoryDriver())
    assert [(c.name, c.interval, c.threshold, c.timeout) for c in checks.periodic] == [
        ("http://127.0.0.1:9/x", 5.0, 3, 2.0),
        ("127.0.0.1:9", 4.0, 2, 1.5),
    ]

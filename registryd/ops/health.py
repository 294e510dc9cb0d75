"""Health checks: is this registry able to serve?

A check is a probe (a callable returning a Deferred that fails when
something is wrong) with a name.  ``HealthChecks`` holds two kinds:

* **periodic** checks, from Distribution's ``health:`` section
  (``health.storagedriver``, ``health.file``, ``health.http``,
  ``health.tcp``; named as Distribution names them: the storage check
  ``storagedriver_<driver>``, the others by their path, URI or address):
  each runs every
  ``interval`` seconds and counts as failing once ``threshold``
  consecutive runs failed, as in Distribution.  While one fails, the
  registry API answers 503 to every request (Distribution's
  ``health.Handler`` does the same), so a load balancer probing the main
  port takes the node out too; transitions are logged.
* **on-demand** checks run when ``/health`` is asked: the storage driver
  is always checked, so without a ``health:`` section ``/health`` still
  tells whether the storage works right now (without turning the API off).

The storage probe writes a small file outside Distribution's tree
(``/registryd/health`` under the driver's root) and reads it back, so it
fails when the backend can be neither written nor read: a full or
read-only disk, a root directory replaced or unmounted, lost credentials,
an unreachable bucket.  (Distribution only stats ``/``, which misses
unwritable storage.)  Every probe has a timeout: a hung backend is a
failing one.
"""

import os
import socket
import time

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from registryd.ops import metrics

log = Logger()

#: Driver path of the storage probe's file: outside docker/registry/v2, so
#: neither registryd's model nor Distribution ever sees it.
PROBE_PATH = "/registryd/health"

#: Seconds a probe may take before it counts as failed.
PROBE_TIMEOUT = 5.0


def storage_probe(driver):
    """A probe that writes and reads back :data:`PROBE_PATH` on ``driver``."""
    stamp = f"{socket.gethostname()} {os.getpid()}".encode("utf-8", "replace")

    async def probe():
        await driver.put_content(PROBE_PATH, stamp + b" " + str(time.time()).encode("ascii"))
        await driver.get_content(PROBE_PATH)

    return probe


def file_probe(path):
    """A probe that fails while ``path`` exists (Distribution's health.file:
    touch the file to take a node out of rotation)."""

    async def probe():
        # One lstat of a local file the operator names, every interval, as
        # Distribution does: cheaper than a thread hand-off.
        if os.path.lexists(path):  # noqa: ASYNC240 — a single local lstat
            raise RuntimeError(f"file exists: {path}")

    return probe


def http_probe(uri, headers=None, status_code=200, timeout=PROBE_TIMEOUT, reactor=None):
    """A probe that HEADs ``uri`` (with ``headers``: name -> list of values)
    and fails unless it answers ``status_code`` (Distribution's health.http).
    No connection is kept between runs: a probe must notice a server that
    stopped accepting, not reuse an old connection to it."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    clients = []

    def client():
        if not clients:
            nonlocal reactor
            if reactor is None:
                from twisted.internet import reactor
            pool = HTTPConnectionPool(reactor, persistent=False)
            clients.append(HTTPClient(Agent(reactor, pool=pool, connectTimeout=timeout)))
        return clients[0]

    async def probe():
        response = await client().head(uri, headers=headers or {})
        await response.content()
        if response.code != status_code:
            raise RuntimeError(f"downstream service returned unexpected status: {response.code}")

    return probe


def tcp_probe(host, port, timeout=PROBE_TIMEOUT, reactor=None):
    """A probe that fails unless ``host``:``port`` accepts a TCP connection
    (Distribution's health.tcp); the connection is closed at once."""
    from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    async def probe():
        nonlocal reactor
        if reactor is None:
            from twisted.internet import reactor
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
        try:
            connected = await connectProtocol(endpoint, Protocol())
        except Exception as error:
            raise RuntimeError(f"connection to {host}:{port} failed: {error}") from None
        connected.transport.abortConnection()

    return probe


def describe_failure(failure, timeout=PROBE_TIMEOUT):
    """A one-line reason for an operator, without internals."""
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return f"timed out after {timeout:g}s"
    message = " ".join(str(failure.value).split())
    return message or failure.type.__name__


class Check:
    """One named probe, with Distribution's threshold semantics."""

    def __init__(
        self, name, probe, interval=10.0, threshold=1, reactor=None, timeout=PROBE_TIMEOUT
    ):
        self.name = name
        self.probe = probe
        self.interval = interval
        self.threshold = max(1, threshold)
        self.timeout = timeout
        self._reactor = reactor
        #: consecutive failed runs, and why the last one failed
        self.failures = 0
        self.last_error = None
        metrics.HEALTH_CHECK_UP.labels(name).set(1)

    @property
    def healthy(self):
        return self.failures < self.threshold

    def _get_reactor(self):
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    async def run(self):
        """Probe once and record the result; never fails.  Returns the
        error message, or None when the probe passed."""
        was_healthy = self.healthy
        attempt = defer.ensureDeferred(self.probe())

        def timed_out(result, timeout):
            # Whatever the cancelled probe failed with (an HTTP client
            # wraps the cancellation in its own error), it timed out.
            if isinstance(result, Failure):
                return Failure(defer.TimeoutError(f"timed out after {timeout:g}s"))
            return result

        attempt.addTimeout(self.timeout, self._get_reactor(), onTimeoutCancel=timed_out)
        try:
            await attempt
        except Exception:
            error = describe_failure(Failure(), self.timeout)
            self.failures += 1
            self.last_error = error
            metrics.HEALTH_CHECK_FAILURES.labels(self.name).inc()
        else:
            error = None
            self.failures = 0
            self.last_error = None
        metrics.HEALTH_CHECK_UP.labels(self.name).set(1 if self.healthy else 0)
        if was_healthy and not self.healthy:
            log.error("health check {check} failing: {error}", check=self.name, error=error)
        elif not was_healthy and self.healthy:
            log.info("health check {check} passes again", check=self.name)
        return error


class HealthChecks:
    """The periodic and on-demand checks of one registry."""

    def __init__(self):
        self.periodic = []
        self.on_demand = []

    @classmethod
    def from_config(cls, health, driver, reactor=None):
        """Checks for a :class:`registryd.config.HealthConfig` and a storage driver."""
        checks = cls()
        storage_name = f"storagedriver_{getattr(driver, 'name', 'unknown')}"
        storage = Check(
            storage_name, storage_probe(driver), health.interval, health.threshold, reactor
        )
        if health.storagedriver:
            checks.periodic.append(storage)
        else:
            checks.on_demand.append(storage)
        for file_check in health.files:
            checks.periodic.append(
                Check(file_check.path, file_probe(file_check.path), file_check.interval, 1, reactor)
            )
        for http in health.http:
            probe = http_probe(http.uri, http.headers, http.status_code, http.timeout, reactor)
            checks.periodic.append(
                Check(http.uri, probe, http.interval, http.threshold, reactor, timeout=http.timeout)
            )
        for tcp in health.tcp:
            probe = tcp_probe(tcp.host, tcp.port, tcp.timeout, reactor)
            checks.periodic.append(
                Check(tcp.addr, probe, tcp.interval, tcp.threshold, reactor, timeout=tcp.timeout)
            )
        return checks

    @property
    def healthy(self):
        """True unless a periodic check is failing (cheap: no probing)."""
        return all(check.healthy for check in self.periodic)

    def failing(self):
        """{check name: reason} of the failing periodic checks."""
        return {check.name: check.last_error for check in self.periodic if not check.healthy}

    async def status(self):
        """{check name: reason} for every failing check, running the
        on-demand checks now; empty when all is well."""
        results = await defer.gatherResults(
            [defer.ensureDeferred(check.run()) for check in self.on_demand]
        )
        failing = self.failing()
        for check, error in zip(self.on_demand, results):
            if error is not None:
                failing[check.name] = error
        return failing

    def service(self):
        """A service running the periodic checks while it runs."""
        timers = MultiService()
        for check in self.periodic:
            timer = TimerService(
                check.interval, lambda check=check: defer.ensureDeferred(check.run())
            )
            timer.setName(f"health {check.name}")
            timer.setServiceParent(timers)
        return timers

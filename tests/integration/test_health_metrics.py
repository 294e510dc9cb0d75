"""The debug listener, health checks, Prometheus metrics, the access log
and reloading, on a whole RegistryService with real ports.

Storage failures are real: the filesystem driver's root directory is
replaced by a plain file (chmod would not do: the tests may run as root),
so every write under it fails, as on a disk that went away.
"""

import json
import os

import pytest
import pytest_twisted
import treq
from twisted.logger import globalLogPublisher

from registryd.ops import metrics
from tests.integration.test_manifests_api import push_blob
from tests.service_support import start_service, wait_for
from tests.support import sha256

BASE = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  debug:
    addr: 127.0.0.1:{debug_port}
    prometheus:
      enabled: true
"""


def break_storage(root):
    """Replace the storage root by a plain file; returns a restorer."""
    saved = str(root) + ".saved"
    os.rename(root, saved)
    with open(root, "wb") as stream:
        stream.write(b"the disk is gone")

    def restore():
        os.unlink(root)
        os.rename(saved, root)

    return restore


async def get(url, **kwargs):
    response = await treq.get(url, persistent=False, **kwargs)
    return response.code, response.headers, await response.content()


@pytest_twisted.async_yield_fixture
async def running(tmp_path):
    running = await start_service(tmp_path, BASE)
    yield running
    await running.stop()


# --- /health ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_health_checks_the_storage_when_asked(running, tmp_path):
    status, headers, body = await get(running.debug_url + "/health")
    assert (status, json.loads(body)) == (200, {})
    assert headers.getRawHeaders("content-type") == ["application/json"]
    restore = break_storage(tmp_path / "registry-data")
    try:
        status, _, body = await get(running.debug_url + "/health")
        assert status == 503
        failing = json.loads(body)
        assert list(failing) == ["storagedriver_filesystem"]
        assert "/registryd/health" in failing["storagedriver_filesystem"]
        # Distribution's path answers the same
        status, _, _ = await get(running.debug_url + "/debug/health")
        assert status == 503
        # Without a health section the API itself keeps answering.
        status, _, _ = await get(running.v2(""))
        assert status == 200
    finally:
        restore()
    status, _, body = await get(running.debug_url + "/health")
    assert (status, json.loads(body)) == (200, {})


@pytest_twisted.ensureDeferred
async def test_periodic_storage_check_with_threshold_turns_the_api_off_and_on(tmp_path):
    running = await start_service(
        tmp_path,
        BASE
        + """\
health:
  storagedriver:
    enabled: true
    interval: 100ms
    threshold: 2
""",
    )
    check = running.service.operations.health.periodic[0]
    try:
        await wait_for((tmp_path / "registry-data" / "registryd" / "health").exists)
        restore = break_storage(tmp_path / "registry-data")
        try:
            await wait_for(lambda: check.failures >= 1)
            assert check.healthy  # one failure is below the threshold
            await wait_for(lambda: not check.healthy)
            status, _, body = await get(running.debug_url + "/health")
            assert status == 503 and "storagedriver_filesystem" in json.loads(body)
            status, _, body = await get(running.v2(""))
            assert status == 503
            assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
            assert (
                metrics.sample("registryd_health_check_up", check="storagedriver_filesystem") == 0
            )
        finally:
            restore()
        await wait_for(lambda: check.healthy)
        status, _, _ = await get(running.v2(""))
        assert status == 200
        assert metrics.sample("registryd_health_check_up", check="storagedriver_filesystem") == 1
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_file_check_takes_the_node_out_of_rotation(tmp_path):
    down = tmp_path / "down"
    running = await start_service(
        tmp_path,
        BASE
        + """\
health:
  file:
    - file: {down}
      interval: 100ms
""",
        down=str(down),
    )
    try:
        status, _, _ = await get(running.debug_url + "/health")
        assert status == 200
        down.write_text("")
        await wait_for(lambda: not running.service.operations.health.healthy)
        status, _, body = await get(running.debug_url + "/health")
        assert status == 503 and json.loads(body) == {str(down): f"file exists: {down}"}
        down.unlink()
        await wait_for(lambda: running.service.operations.health.healthy)
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_http_and_tcp_checks_take_the_node_out_while_a_dependency_fails(tmp_path):
    """health.http and health.tcp (Distribution's keys) against real local
    servers: the API answers 503 while either fails, and recovers."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Upstream(Resource):
        isLeaf = True
        status = 200

        def render(self, request):
            request.setResponseCode(self.status)
            return b""

    upstream = Upstream()
    web = reactor.listenTCP(0, Site(upstream), interface="127.0.0.1")
    tcp = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    uri = f"http://127.0.0.1:{web.getHost().port}/ready"
    addr = f"127.0.0.1:{tcp.getHost().port}"
    running = await start_service(
        tmp_path,
        BASE
        + """\
health:
  http:
    - uri: {uri}
      interval: 100ms
      timeout: 1s
  tcp:
    - addr: {addr}
      interval: 100ms
      timeout: 1s
""",
        uri=uri,
        addr=addr,
    )
    health = running.service.operations.health
    try:
        await wait_for(lambda: all(check.failures == 0 for check in health.periodic))
        status, _, _ = await get(running.v2(""))
        assert status == 200
        upstream.status = 503
        await wait_for(lambda: not health.healthy)
        status, _, body = await get(running.debug_url + "/health")
        assert status == 503
        assert json.loads(body) == {uri: "downstream service returned unexpected status: 503"}
        status, _, _ = await get(running.v2(""))
        assert status == 503
        upstream.status = 200
        await wait_for(lambda: health.healthy)

        await tcp.stopListening()
        await wait_for(lambda: not health.healthy)
        status, _, body = await get(running.debug_url + "/health")
        assert status == 503 and list(json.loads(body)) == [addr]
        assert json.loads(body)[addr].startswith(f"connection to {addr} failed")
        tcp = reactor.listenTCP(
            int(addr.rsplit(":", 1)[1]), Factory.forProtocol(Protocol), interface="127.0.0.1"
        )
        await wait_for(lambda: health.healthy)
        status, _, _ = await get(running.v2(""))
        assert status == 200
    finally:
        await running.stop()
        await web.stopListening()
        await tcp.stopListening()


@pytest_twisted.ensureDeferred
async def test_debug_listener_paths(running):
    status, _, _ = await get(running.debug_url + "/nothing")
    assert status == 404
    response = await treq.post(running.debug_url + "/health", persistent=False)
    assert response.code == 405
    await response.content()
    # not on the API port
    status, _, _ = await get(running.url + "/metrics")
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_prometheus_disabled_or_elsewhere(tmp_path):
    running = await start_service(tmp_path, BASE.replace("enabled: true", "enabled: false"))
    try:
        assert (await get(running.debug_url + "/metrics"))[0] == 404
        assert (await get(running.debug_url + "/health"))[0] == 200
    finally:
        await running.stop()
    text = BASE.replace("      enabled: true\n", "      enabled: true\n      path: /debug/prom\n")
    running = await start_service(tmp_path, text)
    try:
        status, _, body = await get(running.debug_url + "/debug/prom")
        assert status == 200 and b"registryd_http_requests_total" in body
        assert (await get(running.debug_url + "/metrics"))[0] == 404
    finally:
        await running.stop()


# --- /metrics ---------------------------------------------------------------------


def parse_metrics(text):
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest_twisted.ensureDeferred
async def test_metrics_count_requests_bytes_and_storage_by_route(running):
    status, headers, body = await get(running.debug_url + "/metrics")
    assert status == 200
    assert headers.getRawHeaders("content-type")[0].startswith("text/plain; version=")
    before = parse_metrics(body)
    data = os.urandom(5000)
    await push_blob(running, "metrics/repo", data)
    for _ in range(2):
        response = await running.client.get(running.v2(f"metrics/repo/blobs/{sha256(data)}"))
        assert await response.content() == data
    response = await running.client.get(running.v2("metrics/repo/manifests/nope"))
    assert response.code == 404
    await response.content()
    after = parse_metrics((await get(running.debug_url + "/metrics"))[2])

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    blob_get = dict(route="blob", method="GET", status="200")
    assert delta("registryd_http_requests_total", **blob_get) == 2
    assert delta("registryd_http_request_duration_seconds_count", **blob_get) == 2
    assert delta("registryd_http_request_duration_seconds_bucket", le="+Inf", **blob_get) == 2
    assert (
        delta("registryd_http_requests_total", route="upload_start", method="POST", status="201")
        == 1
    )
    assert delta("registryd_http_requests_total", route="manifest", method="GET", status="404") == 1
    assert delta("registryd_http_sent_bytes_total", route="blob") == 2 * len(data)
    assert delta("registryd_http_received_bytes_total", route="upload_start") == len(data)
    assert (
        delta(
            "registryd_storage_operation_duration_seconds_count",
            driver="filesystem",
            operation="reader",
        )
        == 2
    )
    # labels are routes, never paths
    assert not any("metrics/repo" in str(labels) for _, labels in after)
    # metrics without labels are there from the start (garbage collection)
    assert ("registryd_gc_duration_seconds_count", ()) in after
    assert ("registryd_uploads_purged_total", ()) in after
    assert any(name == "process_resident_memory_bytes" for name, _ in after)


@pytest_twisted.ensureDeferred
async def test_uploads_in_progress_while_a_body_streams(running):
    from twisted.internet import endpoints, protocol, reactor

    response = await running.client.post(running.v2("metrics/up/blobs/uploads/"))
    assert response.code == 202
    await response.content()
    location = response.headers.getRawHeaders("location")[0]
    path = "/v2/" + location.split("/v2/", 1)[1]
    before = metrics.sample("registryd_uploads_in_progress")

    class Idle(protocol.Protocol):
        pass

    port = int(running.url.rsplit(":", 1)[1])
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    connection = await endpoints.connectProtocol(endpoint, Idle())
    connection.transport.write(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * 10
    )
    await wait_for(lambda: metrics.sample("registryd_uploads_in_progress") == before + 1)
    connection.transport.write(b"x" * 990)
    await wait_for(lambda: metrics.sample("registryd_uploads_in_progress") == before)
    connection.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_gc_metrics_helper():
    before_ok = metrics.sample("registryd_gc_runs_total", result="ok")
    before_failed = metrics.sample("registryd_gc_runs_total", result="failed")
    with metrics.gc_run():
        pass
    with pytest.raises(RuntimeError):
        with metrics.gc_run():
            raise RuntimeError("boom")
    assert metrics.sample("registryd_gc_runs_total", result="ok") == before_ok + 1
    assert metrics.sample("registryd_gc_runs_total", result="failed") == before_failed + 1


# --- the access log ---------------------------------------------------------------


class Captured:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        if event.get("log_namespace") == "registryd.access":
            self.events.append(event)


@pytest_twisted.async_yield_fixture
async def access_events():
    captured = Captured()
    globalLogPublisher.addObserver(captured)
    yield captured.events
    globalLogPublisher.removeObserver(captured)


@pytest_twisted.ensureDeferred
async def test_one_access_log_event_per_request(running, access_events):
    data = b"some blob"
    await push_blob(running, "log/repo", data)
    response = await running.client.get(
        running.v2(f"log/repo/blobs/{sha256(data)}"), headers={"User-Agent": "tester/1.0"}
    )
    assert await response.content() == data
    await wait_for(lambda: len(access_events) == 2)
    push, pull = access_events
    assert (push["method"], push["status"], push["bytes_in"], push["route"]) == (
        "POST",
        201,
        len(data),
        "upload_start",
    )
    assert push["path"] == f"/v2/log/repo/blobs/uploads/?digest={sha256(data)}"
    assert (pull["method"], pull["status"], pull["bytes_out"], pull["route"]) == (
        "GET",
        200,
        len(data),
        "blob",
    )
    assert pull["user_agent"] == "tester/1.0"
    assert pull["user"] == "-"
    assert pull["client"].startswith("127.0.0.1:")
    assert 0 < pull["duration"] < 10
    assert len(pull["request_id"]) == 16 and pull["request_id"] != push["request_id"]
    assert pull["aborted"] is False
    from twisted.logger import formatEvent

    line = formatEvent(pull)
    assert f'"GET /v2/log/repo/blobs/{sha256(data)}" 200 {len(data)}' in line


@pytest_twisted.ensureDeferred
async def test_access_log_can_be_disabled_metrics_stay(tmp_path, access_events):
    running = await start_service(tmp_path, BASE + "log:\n  accesslog:\n    disabled: true\n")
    try:
        before = metrics.sample(
            "registryd_http_requests_total", route="api_base", method="GET", status="200"
        )
        assert (await get(running.v2("")))[0] == 200
        assert (
            metrics.sample(
                "registryd_http_requests_total", route="api_base", method="GET", status="200"
            )
            == before + 1
        )
        assert access_events == []
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_unrouted_requests_are_logged_as_other(running, access_events):
    response = await running.client.get(running.url + "/nowhere")
    assert response.code == 404
    await response.content()
    await wait_for(lambda: len(access_events) == 1)
    assert access_events[0]["route"] == "other"
    assert access_events[0]["status"] == 404


# --- reloading --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reload_applies_headers_and_level_and_names_what_needs_a_restart(running, tmp_path):
    _, headers, _ = await get(running.v2(""))
    assert headers.getRawHeaders("x-reloaded") is None
    text = open(running.config_path).read()
    text = text.replace("http:\n", "http:\n  headers:\n    X-Reloaded: [reloaded]\n")
    text = text.replace("rootdirectory: ", "rootdirectory: /elsewhere")
    text += "log:\n  level: error\n"
    with open(running.config_path, "w") as stream:
        stream.write(text)
    restart = await running.service.operations.reload()
    assert restart == ["storage.filesystem"]  # the key as written, not the attribute
    _, headers, _ = await get(running.v2(""))
    assert headers.getRawHeaders("x-reloaded") == ["reloaded"]
    assert running.service.operations.log_filter.level.name == "error"
    assert running.service.config.log.level == "error"
    # the storage did not move
    assert running.service.config.storage.parameters["rootdirectory"] == str(
        tmp_path / "registry-data"
    )


@pytest_twisted.ensureDeferred
async def test_reload_of_a_broken_file_changes_nothing(running):
    with open(running.config_path, "a") as stream:
        stream.write("nonsense: [\n")
    assert await running.service.operations.reload() is None
    assert (await get(running.v2("")))[0] == 200


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_mid_upload_is_logged_as_aborted(running, access_events):
    from twisted.internet import endpoints, protocol, reactor

    response = await running.client.post(running.v2("metrics/gone/blobs/uploads/"))
    await response.content()
    location = response.headers.getRawHeaders("location")[0]
    path = "/v2/" + location.split("/v2/", 1)[1]
    port = int(running.url.rsplit(":", 1)[1])
    before = metrics.sample("registryd_http_requests_aborted_total", route="upload", method="PATCH")
    connection = await endpoints.connectProtocol(
        endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol.Protocol()
    )
    connection.transport.write(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * 300
    )
    await wait_for(lambda: metrics.sample("registryd_uploads_in_progress") >= 1)
    connection.transport.abortConnection()
    await wait_for(lambda: any(e["method"] == "PATCH" for e in access_events))
    patch = [e for e in access_events if e["method"] == "PATCH"][0]
    assert (patch["status"], patch["aborted"], patch["route"]) == (499, True, "upload")
    assert patch["bytes_in"] == 300
    assert (
        metrics.sample("registryd_http_requests_aborted_total", route="upload", method="PATCH")
        == before + 1
    )
    # the bytes that arrived are kept: the upload resumes at 300
    response = await running.client.get(location)
    assert response.headers.getRawHeaders("range") == ["0-299"]
    await response.content()


@pytest_twisted.ensureDeferred
async def test_reload_hooks_for_worker_processes(running):
    """A worker applies its own view of the file and hears of every reload."""
    import attr

    seen = []
    operations = running.service.operations
    operations.config_filter = lambda config: attr.evolve(
        config, http=attr.evolve(config.http, debug=None)
    )
    operations.on_reload(seen.append)
    with open(running.config_path, "a") as stream:
        stream.write("log:\n  level: warn\n")
    # http.debug is in the file but filtered out: applied as "removed"
    assert await operations.reload() == ["http.debug"]
    assert [config.log.level for config in seen] == ["warn"]
    assert seen[0].http.debug is not None  # callbacks get the file as it is

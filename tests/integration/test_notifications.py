"""Notifications end to end: a RegistryService on real ports sends
Distribution's events to a real webhook receiver (a twisted.web server on
a loopback port), retries while it is down or failing, keeps undelivered
events across a restart, and never makes a client wait for it.
"""

import json
import time

import pytest_twisted

from registryd.notifications.events import EVENTS_MEDIA_TYPE
from registryd.ops import metrics
from tests.integration.test_manifests_api import push_blob, push_image, put_manifest
from tests.service_support import Receiver, start_service, wait_for
from tests.support import sha256

CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
notifications:
  journal:
    directory: {journal}
  endpoints:
    - name: {name}
      url: {url}
      headers:
        Authorization: [Bearer secret]
      timeout: {timeout}
      threshold: 2
      backoff: 200ms
{extra}"""


async def start(tmp_path, receiver, name="listener", timeout="2s", extra="", **values):
    values.setdefault("journal", str(tmp_path / "journal"))
    return await start_service(
        tmp_path, CONFIG, name=name, url=receiver.url, timeout=timeout, extra=extra, **values
    )


def actions(events):
    return [
        (event["action"], event["target"].get("mediaType"), event["target"].get("tag"))
        for event in events
    ]


@pytest_twisted.async_yield_fixture
async def receiver():
    receiver = Receiver().start()
    yield receiver
    await receiver.stop()


@pytest_twisted.ensureDeferred
async def test_push_pull_mount_delete_events(tmp_path, receiver):
    running = await start(tmp_path, receiver)
    try:
        body = await push_image(running, "team/app", layers=1)
        response = await put_manifest(running, "team/app", "v1", body)
        assert response.code == 201
        await response.content()
        digest = sha256(body)
        layer = json.loads(body)["layers"][0]["digest"]
        response = await running.client.get(
            running.v2("team/app/manifests/v1"),
            headers={"User-Agent": "puller/2", "X-Forwarded-For": "203.0.113.7, 10.0.0.1"},
        )
        assert response.code == 200
        await response.content()
        response = await running.client.head(running.v2("team/app/manifests/v1"))  # no event
        await response.content()
        response = await running.client.get(running.v2(f"team/app/blobs/{layer}"))
        await response.content()
        response = await running.client.post(
            running.v2(f"team/copy/blobs/uploads/?mount={layer}&from=team/app")
        )
        assert response.code == 201
        await response.content()
        response = await running.client.delete(running.v2(f"team/copy/blobs/{layer}"))
        assert response.code == 202
        await response.content()
        response = await running.client.delete(running.v2(f"team/app/manifests/{digest}"))
        assert response.code == 202
        await response.content()
        await wait_for(lambda: len(receiver.events) == 9)
    finally:
        await running.stop()
    events = receiver.events
    octet = "application/octet-stream"
    oci = "application/vnd.oci.image.manifest.v1+json"
    assert actions(events) == [
        ("push", octet, None),  # config
        ("push", octet, None),  # layer
        ("push", oci, "v1"),
        ("pull", oci, "v1"),
        ("pull", octet, None),
        ("mount", octet, None),
        ("delete", None, None),
        ("delete", None, None),
        ("delete", None, "v1"),  # the tag that went with the manifest, as Distribution sends
    ]
    push = events[2]
    assert push["target"]["digest"] == digest
    assert push["target"]["size"] == push["target"]["length"] == len(body)
    assert push["target"]["repository"] == "team/app"
    assert push["target"]["url"] == running.v2(f"team/app/manifests/{digest}")
    assert push["request"]["method"] == "PUT"
    assert push["request"]["host"] == running.url.split("//")[1]
    assert len(push["request"]["id"]) == 16
    assert push["actor"] == {}
    assert push["source"]["addr"].endswith(":" + running.url.rsplit(":", 1)[1])
    assert push["source"]["instanceID"]
    assert events[3]["request"]["useragent"] == "puller/2"
    assert events[3]["request"]["addr"] == "203.0.113.7"  # behind a proxy: the client it names
    assert events[2]["request"]["addr"].startswith("127.0.0.1:")
    assert events[4]["target"]["digest"] == layer
    assert events[4]["target"]["url"] == running.v2(f"team/app/blobs/{layer}")
    assert events[5]["target"]["fromRepository"] == "team/app"
    assert events[5]["target"]["repository"] == "team/copy"
    assert events[6]["target"] == {"digest": layer, "repository": "team/copy"}
    assert events[7]["target"] == {"digest": digest, "repository": "team/app"}
    assert events[8]["target"] == {"repository": "team/app", "tag": "v1"}
    assert len({event["id"] for event in events}) == 9
    headers = receiver.requests[0][0]
    assert headers["content-type"] == [EVENTS_MEDIA_TYPE]
    assert headers["authorization"] == ["Bearer secret"]
    assert headers["user-agent"][0].startswith("registryd/")


@pytest_twisted.ensureDeferred
async def test_ignore_rules_filter_per_endpoint(tmp_path, receiver):
    running = await start(
        tmp_path,
        receiver,
        extra="""\
      ignoredmediatypes: [application/octet-stream]
      ignore:
        actions: [pull]
""",
    )
    try:
        before = metrics.sample(
            "registryd_notification_events_total", endpoint="listener", outcome="ignored"
        )
        body = await push_image(running, "filter/app", layers=1)
        response = await put_manifest(running, "filter/app", "latest", body)
        await response.content()
        response = await running.client.get(running.v2("filter/app/manifests/latest"))
        await response.content()
        await wait_for(lambda: len(receiver.events) == 1)
        after = metrics.sample(
            "registryd_notification_events_total", endpoint="listener", outcome="ignored"
        )
        assert after - before == 3  # two blob pushes and the pull
    finally:
        await running.stop()
    assert actions(receiver.events) == [
        ("push", "application/vnd.oci.image.manifest.v1+json", "latest")
    ]


@pytest_twisted.ensureDeferred
async def test_events_wait_while_the_receiver_is_down_then_arrive(tmp_path, receiver):
    await receiver.stop()
    running = await start(tmp_path, receiver)
    try:
        await push_blob(running, "down/app", b"first")
        await push_blob(running, "down/app", b"second")
        endpoint = running.service.operations.notifications.endpoints["listener"]
        # threshold 2: two quick failures, then one attempt per backoff
        await wait_for(lambda: endpoint.failures.recent >= 3)
        assert len(endpoint.pending) == 2
        assert metrics.sample("registryd_notification_pending", endpoint="listener") == 2
        receiver.start()
        await wait_for(lambda: len(receiver.events) == 2)
        assert [e["target"]["digest"] for e in receiver.events] == [
            sha256(b"first"),
            sha256(b"second"),
        ]
        await wait_for(lambda: not endpoint.pending)
        assert endpoint.failures.recent == 0
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_error_answers_are_retried_until_accepted(tmp_path, receiver):
    receiver.statuses = [500, 503, 404]
    running = await start(tmp_path, receiver)
    try:
        before = metrics.sample(
            "registryd_notification_deliveries_total", endpoint="listener", result="500"
        )
        await push_blob(running, "retry/app", b"data")
        await wait_for(lambda: len(receiver.events) == 1)
        assert (
            metrics.sample(
                "registryd_notification_deliveries_total", endpoint="listener", result="500"
            )
            == before + 1
        )
    finally:
        await running.stop()
    assert receiver.statuses == []


@pytest_twisted.ensureDeferred
async def test_undelivered_events_survive_a_restart(tmp_path, receiver):
    await receiver.stop()
    running = await start(tmp_path, receiver)
    await push_blob(running, "restart/app", b"kept across restarts")
    body = await push_image(running, "restart/app", layers=0)
    response = await put_manifest(running, "restart/app", "v1", body)
    await response.content()
    await running.stop()
    journal = tmp_path / "journal" / "listener" / "events.jsonl"
    assert journal.read_bytes().count(b"\n") == 3
    # a new process (service) on the same journal directory
    receiver.start()
    running = await start(tmp_path, receiver)
    try:
        await wait_for(lambda: len(receiver.events) == 3)
        endpoint = running.service.operations.notifications.endpoints["listener"]
        await wait_for(lambda: not endpoint.pending)
        await endpoint.journal.idle()
        assert journal.read_bytes() == b""  # emptied once all was delivered
    finally:
        await running.stop()
    assert receiver.events[0]["target"]["digest"] == sha256(b"kept across restarts")
    assert receiver.events[2]["action"] == "push" and receiver.events[2]["target"]["tag"] == "v1"
    # nothing is sent twice after a clean delivery and another restart
    running = await start(tmp_path, receiver)
    await running.stop()
    assert len(receiver.events) == 3


@pytest_twisted.ensureDeferred
async def test_a_hung_endpoint_never_slows_requests(tmp_path, receiver):
    receiver.hang = True
    running = await start(tmp_path, receiver, timeout="30s")
    try:
        await push_blob(running, "slow/app", b"blob")
        durations = []
        for _ in range(20):
            started = time.monotonic()
            response = await running.client.get(running.v2(f"slow/app/blobs/{sha256(b'blob')}"))
            assert await response.content() == b"blob"
            durations.append(time.monotonic() - started)
        endpoint = running.service.operations.notifications.endpoints["listener"]
        # nothing delivered: the receiver never answers (the last pull is
        # queued once the blob's sender is done, maybe just after the client)
        await wait_for(lambda: len(endpoint.pending) == 21)
        assert max(durations) < 1.0, durations
    finally:
        started = time.monotonic()
        await running.stop()  # does not wait for the hung delivery either
        assert time.monotonic() - started < 5


@pytest_twisted.ensureDeferred
async def test_queue_limit_drops_new_events(tmp_path, receiver):
    await receiver.stop()
    running = await start(tmp_path, receiver, extra="", journal=str(tmp_path / "j"))
    running.service.operations.notifications.endpoints["listener"].max_events = 2
    try:
        before = metrics.sample(
            "registryd_notification_events_total", endpoint="listener", outcome="dropped"
        )
        for n in range(4):
            await push_blob(running, "limit/app", b"blob %d" % n)
        assert (
            metrics.sample(
                "registryd_notification_events_total", endpoint="listener", outcome="dropped"
            )
            == before + 2
        )
        receiver.start()
        await wait_for(lambda: len(receiver.events) == 2)
        assert [e["target"]["digest"] for e in receiver.events] == [
            sha256(b"blob 0"),
            sha256(b"blob 1"),
        ]
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_reload_adds_changes_and_removes_endpoints(tmp_path, receiver):
    other = Receiver().start()
    running = await start(tmp_path, receiver)
    try:
        await push_blob(running, "reload/app", b"one")
        await wait_for(lambda: len(receiver.events) == 1)
        # point the endpoint elsewhere, and add a second one that ignores pushes
        text = open(running.config_path).read().replace(receiver.url, other.url)
        text += (
            f"    - name: second\n      url: {receiver.url}\n      ignore: {{actions: [push]}}\n"
        )
        open(running.config_path, "w").write(text)
        assert await running.service.operations.reload() == []
        await push_blob(running, "reload/app", b"two")
        await wait_for(lambda: len(other.events) == 1)
        response = await running.client.get(running.v2(f"reload/app/blobs/{sha256(b'two')}"))
        await response.content()
        await wait_for(lambda: len(receiver.events) == 2)
        assert receiver.events[1]["action"] == "pull"
        # remove them all
        text = text.split("notifications:")[0]
        open(running.config_path, "w").write(text)
        assert await running.service.operations.reload() == []
        assert running.service.operations.notifications.endpoints == {}
        await push_blob(running, "reload/app", b"three")
    finally:
        await running.stop()
        await other.stop()
    assert len(other.events) == 2  # the pull went to both
    assert len(receiver.events) == 2


@pytest_twisted.ensureDeferred
async def test_reload_can_start_notifications(tmp_path, receiver):
    running = await start_service(
        tmp_path,
        """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
""",
    )
    try:
        assert running.service.app.events.enabled is False
        with open(running.config_path, "a") as stream:
            stream.write(
                f"notifications:\n  journal: {{directory: {tmp_path / 'j'}}}\n"
                f"  endpoints:\n  - {{name: late, url: '{receiver.url}'}}\n"
            )
        assert await running.service.operations.reload() == []
        await push_blob(running, "late/app", b"x")
        await wait_for(lambda: len(receiver.events) == 1)
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_a_pull_cut_short_by_the_client_is_no_pull(tmp_path, receiver):
    import os
    import socket

    from twisted.internet.threads import deferToThread

    running = await start(tmp_path, receiver)
    try:
        data = os.urandom(32 * 1024 * 1024)  # more than socket buffers hold
        await push_blob(running, "cut/app", data)
        port = int(running.url.rsplit(":", 1)[1])

        def read_a_little_and_leave():
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(
                    f"GET /v2/cut/app/blobs/{sha256(data)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
                sock.recv(65536)
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )

        await deferToThread(read_a_little_and_leave)
        response = await running.client.get(running.v2(f"cut/app/blobs/{sha256(data)}"))
        assert len(await response.content()) == len(data)
        await wait_for(lambda: len(receiver.events) == 2)
        from twisted.internet import reactor, task

        await task.deferLater(reactor, 0.3, lambda: None)  # a late third event would show now
    finally:
        await running.stop()
    assert [e["action"] for e in receiver.events] == ["push", "pull"]  # the complete pull only


@pytest_twisted.ensureDeferred
async def test_repository_deletes_send_distributions_repository_delete_event(tmp_path, receiver):
    """``DELETE /v2/<name>/_registryd/repository``, the manhole's
    ``delete_repository`` and the web interface's remove each send one
    event as Distribution 3's RepoDeleted: action ``delete``, the target
    naming only the repository.  They used to send nothing."""
    from twisted.internet import reactor, threads

    from registryd.ops.manhole import make_namespace
    from tests.integration.test_ui import Visitor

    running = await start(tmp_path, receiver)
    try:
        for name in ("team/app", "team/other", "team/ui"):
            body = await push_image(running, name, layers=1)
            response = await put_manifest(running, name, "v1", body)
            assert response.code == 201
            await response.content()
        await wait_for(lambda: len(receiver.events) == 9)
        response = await running.client.delete(running.v2("team/app/_registryd/repository"))
        assert response.code == 202, await response.content()
        await wait_for(lambda: len(receiver.events) == 10)
        service = running.service
        namespace = make_namespace(
            service.registry,
            service.maintenance,
            service.operations.config,
            reactor,
            events=service.app.events,
        )
        await threads.deferToThread(namespace["delete_repository"], "team/other")
        await wait_for(lambda: len(receiver.events) == 11)
        visitor = Visitor(running)
        token = await visitor.csrf("/ui/repositories/team/ui/-/remove")
        status, _, _ = await visitor.post("/ui/repositories/team/ui/-/remove", {"csrf": token})
        assert status == 303
        await wait_for(lambda: len(receiver.events) == 12)
    finally:
        await running.stop()
    api, manhole, ui = receiver.events[9:]
    assert (api["action"], api["target"]) == ("delete", {"repository": "team/app"})
    assert api["request"]["method"] == "DELETE"
    assert (manhole["action"], manhole["target"]) == ("delete", {"repository": "team/other"})
    assert manhole["request"] == {} and manhole["actor"] == {}
    assert (ui["action"], ui["target"]) == ("delete", {"repository": "team/ui"})
    assert ui["request"]["method"] == "POST"

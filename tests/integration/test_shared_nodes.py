"""Two registryd nodes (two whole RegistryServices on their own ports, one
storage root) sharing state through a real ``redis-server``: what one node
learns, the other acts on; and when Redis goes away, both keep serving.
"""

import hashlib
import json
import os

import pytest_twisted
import treq
from twisted.internet import defer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from tests.integration.test_auth_api import ALICE, HTPASSWD, basic
from tests.integration.test_health_metrics import BASE
from tests.service_support import running_nodes

# a node of the health tests' configuration, with users and the shared Redis
NODE = (
    BASE
    + """\
auth:
  htpasswd:
    realm: registryd test
    path: {htpasswd}
redis:
  addr: {redis}
  dialtimeout: 500ms
  readtimeout: 500ms
  writetimeout: 500ms
"""
)


@pytest_twisted.async_yield_fixture
async def nodes(tmp_path, redis_server):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(HTPASSWD)
    async with running_nodes(
        tmp_path, NODE, htpasswd=str(htpasswd), redis=redis_server.addr
    ) as started:
        yield started


async def get(node, url, headers=None):
    response = await node.client.get(url, headers=headers or {})
    return response.code, response.headers, await response.content()


@pytest_twisted.ensureDeferred
async def test_guesses_spread_over_nodes_are_braked_as_on_one(nodes):
    """Wrong passwords for alice alternate between A and B.  Alone, each
    node lets ``free`` (5) failures through before braking: 10 in all.
    Sharing the count, the pair closes after 5 failures wherever they
    happened (for 1 s, then 2, 4...: the test allows for a very slow
    machine taking a whole delay between two requests, twice)."""
    a, b = nodes
    unauthorized = 0
    for attempt in range(12):
        node = (a, b)[attempt % 2]
        code, headers, body = await get(node, node.v2(""), basic("alice", f"guess{attempt}"))
        if code == 429:
            [error] = json.loads(body)["errors"]
            assert (
                error["code"] == "TOOMANYREQUESTS" and "too many failed logins" in error["message"]
            )
            assert int(headers.getRawHeaders("Retry-After")[0]) >= 1
            break
        assert code == 401, body
        unauthorized += 1
    else:
        raise AssertionError("12 wrong passwords over two nodes and never braked")
    assert 5 <= unauthorized <= 7
    checker = b.service.app.authorizer.checker
    runs = checker.bcrypt_runs
    code, _, _ = await get(b, b.v2(""), basic("alice", "one more"))
    assert code == 429 and checker.bcrypt_runs == runs  # refused before bcrypt


@pytest_twisted.ensureDeferred
async def test_redis_gone_nodes_serve_on_and_health_says_so(nodes, redis_server):
    a, b = nodes
    code, _, body = await get(a, a.debug_url + "/health")
    assert (code, json.loads(body)) == (200, {})
    redis_server.stop()
    # logins still work (checked by bcrypt: not yet verified on B), wrong
    # ones are 401, never 500, and the per-node brake still applies
    code, _, _ = await get(b, b.v2(""), basic(*ALICE))
    assert code == 200
    code, _, _ = await get(a, a.v2(""), basic("alice", "wrong"))
    assert code == 401
    code, _, body = await get(a, a.debug_url + "/health")
    assert code == 503 and redis_server.addr in json.loads(body)["redis"]
    redis_server.start()

    await until_healthy(a)
    code, _, _ = await get(a, a.v2(""), basic(*ALICE))
    assert code == 200


async def until_healthy(node, timeout=60.0):
    """Poll the node's /health until it is 200 again."""
    import time

    from twisted.internet import reactor, task

    deadline = time.monotonic() + timeout
    while True:
        response = await treq.get(node.debug_url + "/health", persistent=False)
        await response.content()
        if response.code == 200:
            return
        assert time.monotonic() < deadline, "/health never recovered"
        await task.deferLater(reactor, 0.05, lambda: None)


@implementer(IBodyProducer)
class HeldBody:
    """A request body sent in two halves: the second only once
    ``go_on`` fires, so the request stays in progress meanwhile."""

    def __init__(self, data):
        self.data = data
        self.length = len(data)
        self.go_on = defer.Deferred()
        self.first_sent = defer.Deferred()

    async def _produce(self, consumer):
        half = self.length // 2
        consumer.write(self.data[:half])
        self.first_sent.callback(None)
        await self.go_on
        consumer.write(self.data[half:])

    def startProducing(self, consumer):
        return defer.ensureDeferred(self._produce(consumer))

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


async def until(predicate, what, timeout=60.0):
    """Poll the sync ``predicate`` on the reactor until it holds."""
    import time

    from twisted.internet import reactor, task

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await task.deferLater(reactor, 0.02, lambda: None)


def set_calls(redis_server):
    """How many SET commands (lease tries) Redis has run."""
    for line in redis_server.info("commandstats").splitlines():
        if line.startswith("cmdstat_set:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest_twisted.ensureDeferred
async def test_patches_to_one_upload_on_two_nodes_are_serialised(nodes, redis_server):
    """A streamed PATCH through A is half sent when a PATCH to the same
    upload arrives at B: B waits for A's to end (it is seen retrying the
    upload's lease), then appends after A's bytes.  Without the shared
    lock B would write at the offset it found, among A's bytes, and the
    upload's content would match neither order."""
    a, b = nodes
    auth = basic(*ALICE)
    response = await a.client.post(a.v2("alice/app/blobs/uploads/"), headers=auth)
    assert response.code == 202, await response.content()
    location = response.headers.getRawHeaders("Location")[0]
    url = location if location.startswith("http") else a.url + location
    upload_id = url.rsplit("/", 1)[1].split("?")[0]
    first, second = os.urandom(3 * 1024 * 1024), os.urandom(1024 * 1024)
    held = HeldBody(first)
    patch_a = a.client.patch(
        url, headers={**auth, "Content-Type": "application/octet-stream"}, data=held
    )
    await held.first_sent
    await until(
        lambda: redis_server.command("EXISTS", f"registryd:upload:{upload_id}") == b":1",
        "A holds the upload's lease",
    )
    tries = set_calls(redis_server)
    url_b = b.url + url[len(a.url) :]
    patch_b = b.client.patch(
        url_b, headers={**auth, "Content-Type": "application/octet-stream"}, data=second
    )
    answered_b = []
    patch_b.addBoth(lambda result: answered_b.append(True) or result)
    await until(lambda: set_calls(redis_server) >= tries + 2, "B tries for the lease and waits")
    assert not answered_b
    held.go_on.callback(None)
    response = await patch_a
    assert response.code == 202, await response.content()
    assert response.headers.getRawHeaders("Range") == [f"0-{len(first) - 1}"]
    response = await patch_b
    assert response.code == 202, await response.content()
    assert response.headers.getRawHeaders("Range") == [f"0-{len(first) + len(second) - 1}"]
    digest = "sha256:" + hashlib.sha256(first + second).hexdigest()
    response = await b.client.put(
        f"{url_b}{'&' if '?' in url_b else '?'}digest={digest}", headers=auth
    )
    assert response.code == 201, await response.content()


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def push_image_through(node, name, tag, auth):
    """Blobs and manifest through ``node``; returns (manifest bytes, {digest: data})."""
    from tests.integration.test_online_gc import make_image

    manifest, blobs = make_image()
    for digest, data in blobs.items():
        response = await node.client.post(
            node.v2(f"{name}/blobs/uploads/?digest={digest}"), headers=auth, data=data
        )
        assert response.code == 201, await response.content()
    await put_manifest(node, name, tag, manifest, auth)
    return manifest, blobs


async def put_manifest(node, name, reference, manifest, auth):
    response = await node.client.put(
        node.v2(f"{name}/manifests/{reference}"),
        data=manifest,
        headers={**auth, "Content-Type": OCI_MANIFEST},
    )
    assert response.code == 201, await response.content()


@pytest_twisted.ensureDeferred
async def test_gc_on_a_keeps_old_blobs_a_push_on_b_takes_up_between_mark_and_sweep(nodes):
    """Blobs pushed long ago and left unreferenced are garbage when A's
    collection marks; then B puts a manifest that references them again
    (a client that found them with HEAD and did not upload them).  With
    no grace period, only B's hold, seen by A through Redis, keeps A's
    sweep from deleting them under B's new manifest."""
    from registryd.ops.gc import collect_garbage

    a, b = nodes
    auth = basic(*ALICE)
    manifest, blobs = await push_image_through(b, "alice/app", "v1", auth)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    response = await b.client.delete(b.v2(f"alice/app/manifests/{digest}"), headers=auth)
    assert response.code == 202, await response.content()

    async def b_pushes_again():
        await put_manifest(b, "alice/app", "v2", manifest, auth)

    report = await collect_garbage(a.service.registry, grace_period=0, before_sweep=b_pushes_again)
    assert report.blobs_removed == []
    assert {blob for blob, _ in report.protected} == set(blobs) | {
        digest
    }  # the manifest is a blob too
    for blob, data in blobs.items():
        response = await a.client.get(a.v2(f"alice/app/blobs/{blob}"), headers=auth)
        assert response.code == 200 and await response.content() == data
    # with nothing in use any more, the next collection takes what is garbage
    response = await b.client.delete(b.v2(f"alice/app/manifests/{digest}"), headers=auth)
    assert response.code == 202, await response.content()
    report = await collect_garbage(a.service.registry, grace_period=0)
    assert {blob for blob, _ in report.blobs_removed} == set(blobs) | {digest}


class BcryptRuns:
    """Wraps a checker's way of running bcrypt in a thread (the real
    bcrypt still runs) to see when runs start and end; the first run
    stays unstarted until ``go_on`` fires, so a check is in progress for
    as long as the test needs."""

    def __init__(self, checker, shared, hold_first=False):
        self.shared = shared  # {"running": n, "most": n, "started": n} of all nodes
        self.go_on = defer.Deferred()
        self.first_started = defer.Deferred()
        self._hold = hold_first
        self._run = checker._run_in_thread
        checker._run_in_thread = self

    def __call__(self, function, *args):
        self.shared["running"] += 1
        self.shared["started"] += 1
        self.shared["most"] = max(self.shared["most"], self.shared["running"])

        async def run():
            try:
                if self._hold:
                    self._hold = False
                    self.first_started.callback(None)
                    await self.go_on
                return await self._run(function, *args)
            finally:
                self.shared["running"] -= 1

        return defer.ensureDeferred(run())


@pytest_twisted.ensureDeferred
async def test_one_bcrypt_at_a_time_per_address_and_user_across_nodes(nodes, redis_server):
    """A guess for alice is being checked on A (its bcrypt held back)
    when another guess for alice arrives at B from the same address: B
    does not start a bcrypt of its own; it waits for the pair's lock
    (seen retrying it in Redis), and checks once A's check is over.  So
    a guesser cannot run checks in parallel by spreading them over the
    nodes.  With the rule per node, B's bcrypt starts at once (two
    running)."""
    a, b = nodes
    counts = {"running": 0, "most": 0, "started": 0}
    held = BcryptRuns(a.service.app.authorizer.checker, counts, hold_first=True)
    BcryptRuns(b.service.app.authorizer.checker, counts)
    on_a = defer.ensureDeferred(get(a, a.v2(""), basic("alice", "guess on A")))
    await held.first_started
    tries = set_calls(redis_server)
    on_b = defer.ensureDeferred(get(b, b.v2(""), basic("alice", "guess on B")))
    await until(
        lambda: counts["started"] > 1 or set_calls(redis_server) >= tries + 2,
        "B starts a bcrypt or waits for the pair's lock",
    )
    assert counts["started"] == 1, "B checked while A was checking the same pair"
    held.go_on.callback(None)
    assert (await on_a)[0] == 401
    assert (await on_b)[0] == 401
    assert counts == {"running": 0, "most": 1, "started": 2}
    # the right password, through both nodes at once (docker sends the same
    # credentials in parallel): both get in, one check after the other
    answers = await defer.gatherResults(
        [defer.ensureDeferred(get(node, node.v2(""), basic(*ALICE))) for node in (a, b)]
    )
    assert [code for code, _, _ in answers] == [200, 200]
    assert counts["most"] == 1

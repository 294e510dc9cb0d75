"""Three registryd nodes on one bucket and one Redis, as a fleet behind a
load balancer is deployed: three real ``twistd registryd`` processes with
the s3 driver on the session's Swift and the ``redis`` section on a real
``redis-server``.  Node A also runs the online garbage collector every
second with a grace period of 10 s, so pushes through B and C that take
up garbage race it.

- one image pushed by docker through all three nodes at once, pulled
  through each;
- rounds of pushes through B and C while A collects: nothing pushed is
  ever lost, and the collector does delete the garbage made meanwhile;
- wrong passwords spread over three nodes are braked as on one node;
- a tag moved through A is never served stale by B or C;
- two PATCHes to one upload through two nodes run one after the other;
- Redis killed mid-run: pushes and pulls go on, ``/health`` names Redis,
  and once Redis is back the nodes share state again.

A second trio with ``auth.htpasswd`` (same bucket and Redis, its own
prefix) serves the login brake's tests; the rest need no credentials.
"""

import concurrent.futures
import json
import os
import re
import socket
import threading
import time

import pytest

from tests.e2e import tools
from tests.e2e.tools import get_manifest, http_request, make_image
from tests.integration.test_auth_api import HTPASSWD, basic
from tests.support import raw_request_bytes, read_response_head

pytestmark = pytest.mark.e2e

#: rounds of pushes through B and C while A collects
GC_ROUNDS = 12
#: a round pushes again the garbage of this many rounds before
REPUSH_AFTER = 5
#: A's grace period: longer than any push takes from its first blob to
#: its manifest (what is younger is never collected: with 0, a blob just
#: uploaded goes before the manifest naming it arrives, on one node as on
#: three), far shorter than the test
GRACE = "10s"

#: failures a node lets through before its login brake closes
#: (registryd.auth's ``free`` attempts)
FREE_FAILURES = 5


class Node(tools.S3Registryd):
    """An S3 node of the fleet: the shared ``redis`` section, and a debug
    listener (``/health``, ``/metrics``) on a port of its own."""

    def __init__(self, storage, redis_addr, label, **kwargs):
        super().__init__(storage, **kwargs)
        self.redis_addr = redis_addr
        self.label = label
        self.debug_port = None

    def config(self):
        self.debug_port = tools.free_port()
        document = super().config()
        document["http"] = {
            "debug": {"addr": f"127.0.0.1:{self.debug_port}", "prometheus": {"enabled": True}}
        }
        document["redis"] = {
            "addr": self.redis_addr,
            "dialtimeout": "500ms",
            "readtimeout": "500ms",
            "writetimeout": "500ms",
        }
        return document

    @property
    def debug_url(self):
        return f"http://127.0.0.1:{self.debug_port}"

    def health(self):
        response = http_request("GET", f"{self.debug_url}/health", timeout=10)
        return response.status, response.json()

    def metric(self, name, **labels):
        """One sample of this node's ``/metrics`` (0.0 when absent)."""
        text = http_request("GET", f"{self.debug_url}/metrics", timeout=10).body.decode()
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "")
        match = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0


def start_trio(swift, tmp_path_factory, redis, name, extra_for=None, ready_status=None):
    """Nodes A, B and C on a fresh prefix ``name`` of the session's bucket
    and on ``redis``; ``extra_for`` maps a label to that node's extra
    configuration.  A generator for a fixture: purges the prefix after."""
    prefix = swift.new_prefix(name)
    storage = swift.parameters(prefix)
    started = []
    try:
        for label in "abc":
            node = Node(
                storage,
                redis.addr,
                label,
                tmpdir=tmp_path_factory.mktemp(f"{name}-{label}"),
                extra_config=(extra_for or {}).get(label),
                ready_status=ready_status,
            )
            started.append(node.start())
        yield tuple(started)
    finally:
        for node in started:
            node.stop()
        swift.purge(prefix)


@pytest.fixture(scope="module")
def redis(redis_server_process):
    """The session's redis-server, running and empty when the module starts."""
    if redis_server_process.process.poll() is not None:
        redis_server_process.start()
    redis_server_process.flush()
    return redis_server_process


@pytest.fixture(scope="module")
def trio(swift, tmp_path_factory, redis):
    """A collects every second with a short grace period; B and C do not collect."""
    gc = {"gc": {"interval": "1s", "graceperiod": GRACE}}
    yield from start_trio(swift, tmp_path_factory, redis, "three", {"a": gc})


@pytest.fixture(scope="module")
def guarded_trio(swift, tmp_path_factory, redis):
    """Three nodes asking for htpasswd logins (users alice and bob)."""
    htpasswd = tmp_path_factory.mktemp("three-auth") / "htpasswd"
    htpasswd.write_text(HTPASSWD)
    auth = {"auth": {"htpasswd": {"realm": "registryd", "path": str(htpasswd)}}}
    yield from start_trio(
        swift,
        tmp_path_factory,
        redis,
        "three-auth",
        {label: auth for label in "abc"},
        ready_status=401,
    )


def eventually(predicate, what, timeout=120):
    """Wait (polling) until ``predicate()`` holds; generous, for a busy machine."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def verify_image(node, name, tag, image):
    """``image`` (from make_image) is served whole by ``node`` as ``name:tag``:
    the tag's manifest, the config and every layer, each matching its digest."""
    response = get_manifest(node.url, name, tag)
    assert response.status == 200, (node.label, name, tag, response)
    assert response.headers["docker-content-digest"] == image["digest"]
    assert tools.sha256_digest(response.body) == image["digest"]
    for digest, data in [(image["config_digest"], image["config"])] + image["layers"]:
        blob = http_request("GET", f"{node.url}/v2/{name}/blobs/{digest}")
        assert blob.status == 200, (node.label, name, digest, blob)
        assert blob.body == data


def verify_all(node, images):
    """:func:`verify_image` for each (name, tag, image) of ``images``, four at once."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda entry: verify_image(node, *entry), images))


def wrong_logins_until_braked(nodes, user, attempts):
    """Wrong passwords for ``user`` round-robin over ``nodes``; the number
    answered 401 before the first 429 (which must come)."""
    for attempt in range(attempts):
        node = nodes[attempt % len(nodes)]
        response = http_request("GET", f"{node.url}/v2/", headers=basic(user, f"guess{attempt}"))
        if response.status == 429:
            [error] = response.json()["errors"]
            assert error["code"] == "TOOMANYREQUESTS", response
            assert int(response.headers["retry-after"]) >= 1
            return attempt
        assert response.status == 401, response
    raise AssertionError(f"{attempts} wrong passwords over {len(nodes)} nodes, never braked")


# ---------------------------------------------------------------- (a) docker


def test_one_image_pushed_by_docker_through_three_nodes_at_once(dockerd, trio, tmp_path):
    """docker pushes one image of four layers through A, B and C at the
    same moment, while A collects: all three pushes succeed with one
    digest, and docker pulls it back through each node."""
    context = tools.write_scratch_context(
        tmp_path / "context", layer_sizes=(400 * 1024, 300 * 1024, 200 * 1024, 100 * 1024)
    )
    references = [f"{node.host}/three/same:v1" for node in trio]
    image_id = dockerd.build(context, references[0])
    for reference in references[1:]:
        dockerd.docker("tag", references[0], reference)
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            digests = list(pool.map(dockerd.push, references))
        assert len(set(digests)) == 1
        dockerd.rmi(*references)
        for node, reference in zip(trio, references):
            dockerd.pull(reference)
            assert dockerd.image_id(reference) == image_id
            assert (
                f"{node.host}/three/same@{digests[0]}" in dockerd.inspect(reference)["RepoDigests"]
            )
            manifest = get_manifest(node.url, "three/same", "v1").json()
            for layer in [manifest["config"]] + manifest["layers"]:
                blob = http_request("GET", f"{node.url}/v2/three/same/blobs/{layer['digest']}")
                assert blob.status == 200 and tools.sha256_digest(blob.body) == layer["digest"]
    finally:
        dockerd.rmi(*references)


# ---------------------------------------------------------------- (b) GC


def push_as_docker_does(node, name, tag, image):
    """Push ``image`` the way docker does: HEAD each blob, upload those
    missing, PUT the manifest; when the manifest is refused because a
    blob went meanwhile (a collection took it after the HEAD), upload
    what is missing and PUT again.  Returns (PUTs refused, blobs found
    gone and uploaded again)."""
    refused = uploaded = 0
    while True:
        for digest, data in [(image["config_digest"], image["config"])] + image["layers"]:
            if http_request("HEAD", f"{node.url}/v2/{name}/blobs/{digest}").status != 200:
                assert tools.push_blob(node.url, name, data) == digest
                uploaded += 1
        response = http_request(
            "PUT",
            f"{node.url}/v2/{name}/manifests/{tag}",
            image["manifest"],
            {"Content-Type": tools.OCI_MANIFEST},
        )
        if response.status == 201:
            return refused, uploaded
        assert response.status == 400, response
        assert response.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN", response
        refused += 1
        assert refused < 10, "refused ten times in a row"


def test_gc_on_a_during_pushes_through_b_and_c_loses_nothing(trio, skopeo, tmp_path):
    """Each round B and C push a fresh image at once, B pushes one more
    whose manifest C then deletes (garbage for A), and C pushes again,
    as docker does, a garbage image of five rounds before (older than the
    grace period: its blobs are what A is deleting, and A's push guard,
    seen through Redis, decides between B's PUT and A's sweep).  A round
    ends when A has finished a collection begun after its pushes.  After
    every round all images acknowledged so far are pulled whole through
    A; at the end A has deleted all the garbage left."""
    a, b, c = trio
    assert a.metric("registryd_gc_runs_total", result="ok") > 0, "A does not collect"
    failed_before = a.metric("registryd_gc_runs_total", result="failed")
    deleted_before = a.metric("registryd_gc_blobs_deleted_total")
    pushed = []  # (name, tag, image) acknowledged
    garbage = []
    refused = uploaded = survived = 0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for round_ in range(GC_ROUNDS):
            runs = a.metric("registryd_gc_runs_total", result="ok")
            fresh = [
                (node, f"gc/{node.label}", f"r{round_}", make_image((96 * 1024, 8 * 1024)))
                for node in (b, c)
            ]
            garbage.append(make_image((32 * 1024,)))
            pushes = [
                pool.submit(tools.push_image, node.url, name, tag, image)
                for node, name, tag, image in fresh
            ]
            pushes.append(pool.submit(tools.push_image, b.url, "gc/garbage", "doomed", garbage[-1]))
            again = None
            if round_ >= REPUSH_AFTER:
                again = ("gc/garbage", f"again{round_}", garbage[round_ - REPUSH_AFTER])
                pushes.append(pool.submit(push_as_docker_does, c, *again))
            results = [push.result() for push in pushes]
            if again:
                refused += results[-1][0]
                uploaded += results[-1][1]
            response = http_request(
                "DELETE", f"{c.url}/v2/gc/garbage/manifests/{garbage[-1]['digest']}"
            )
            assert response.status == 202, response
            pushed += [(name, tag, image) for _, name, tag, image in fresh]
            if again:
                pushed.append(again)
            eventually(
                lambda runs=runs: a.metric("registryd_gc_runs_total", result="ok") >= runs + 2,
                "A collects twice more",
            )
            verify_all(a, pushed)
            survived += 1
    assert a.metric("registryd_gc_runs_total", result="failed") == failed_before
    # the garbage no push took up again goes (config, layer and manifest)
    eventually(
        lambda: a.metric("registryd_gc_blobs_deleted_total") - deleted_before >= 3 * REPUSH_AFTER,
        "A deletes the garbage",
    )
    verify_all(a, pushed)
    # and a real client pulls the first and last images whole through A
    for name, tag, _ in (pushed[0], pushed[-1]):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        skopeo("copy", f"docker://{a.host}/{name}:{tag}", f"dir:{tmp_path / name / tag}")
    deleted = a.metric("registryd_gc_blobs_deleted_total") - deleted_before
    runs = a.metric("registryd_gc_runs_total", result="ok")
    print(
        f"\nGC under push: {survived} rounds survived, {len(pushed)} images intact, "
        f"{deleted:g} blobs collected by A in {runs:g} runs, {refused} re-push PUTs refused, "
        f"{uploaded} blobs found collected by re-pushes"
    )


# ---------------------------------------------------------------- (c) brake


def test_guesses_spread_over_three_nodes_are_braked_as_on_one(guarded_trio):
    """Wrong passwords for alice go to A, B, C, A...  Each node alone
    would let 5 failures through (15 over three nodes); sharing the count
    through Redis, the fleet brakes after 5 wherever they happened (up to
    2 more when a very busy machine takes a whole 1 s delay between two
    requests)."""
    failures = wrong_logins_until_braked(guarded_trio, "alice", 3 * FREE_FAILURES + 1)
    assert FREE_FAILURES <= failures <= FREE_FAILURES + 2, failures
    # every node now refuses alice's guesses
    for node in guarded_trio:
        response = http_request("GET", f"{node.url}/v2/", headers=basic("alice", "again"))
        assert response.status == 429, (node.label, response)


# ---------------------------------------------------------------- (d) tags


def test_a_tag_moved_on_a_is_never_stale_on_b_or_c(trio):
    """Twenty times: the tag is moved through A (a new manifest, the same
    blobs) and read through B and C the moment A answers 201."""
    a, b, c = trio
    base = make_image((16 * 1024,))
    tools.push_image(a.url, "three/moving", "latest", base)
    manifest = json.loads(base["manifest"])
    for round_ in range(20):
        manifest["annotations"] = {"round": str(round_)}
        body = json.dumps(manifest).encode()
        tools.put_manifest(a.url, "three/moving", "latest", body, tools.OCI_MANIFEST)
        digest = tools.sha256_digest(body)
        for node in (b, c):
            for method in ("HEAD", "GET"):
                response = get_manifest(node.url, "three/moving", "latest", method=method)
                assert response.status == 200, (round_, node.label, response)
                assert response.headers["docker-content-digest"] == digest, (
                    round_,
                    node.label,
                    method,
                )


# ---------------------------------------------------------------- (e) PATCH


def upload_lock_held(redis, upload_id):
    return redis.command("EXISTS", f"registryd:upload:{upload_id}") == b":1"


def test_a_patch_pair_to_one_upload_on_two_nodes_is_serialised(trio, redis):
    """Both PATCHes say they start at 0.  B's is half sent (B holds the
    upload's lease) when C's arrives; C waits for the lease (its tries
    seen by Redis's MONITOR), then finds the upload at B's end and answers 416
    with the current Range.  The upload holds exactly B's bytes and
    completes through A.  Five pairs."""
    for pair in range(5):
        patch_pair(trio, redis, pair)


def patch_pair(trio, redis, pair):
    """One pair of PATCHes of the test above, on a fresh upload."""
    a, b, c = trio
    response = http_request("POST", f"{a.url}/v2/three/patched/blobs/uploads/", b"")
    assert response.status == 202, response
    path = "/v2/" + response.headers["location"].split("/v2/", 1)[1]
    upload_id = path.split("?")[0].rsplit("/", 1)[1]
    first, second = os.urandom(2 * 1024 * 1024), os.urandom(1024 * 1024)
    with socket.create_connection(("127.0.0.1", b.port), timeout=120) as sock:
        request = raw_request_bytes(
            b.port,
            "PATCH",
            path,
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", f"0-{len(first) - 1}"),
            ],
            first,
        )
        head_length = len(request) - len(first)
        sock.sendall(request[: head_length + len(first) // 2])
        eventually(lambda: upload_lock_held(redis, upload_id), "B holds the upload's lease")
        with redis.monitor() as monitor, concurrent.futures.ThreadPoolExecutor(1) as pool:
            patch_c = pool.submit(
                http_request,
                "PATCH",
                f"{c.url}{path}",
                second,
                {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"0-{len(second) - 1}",
                },
                120,
            )
            # B holds the lease: only C tries to take it (SET NX), twice
            for _ in range(2):
                monitor.wait_for("SET", f"registryd:upload:{upload_id}")
            assert not patch_c.done(), patch_c.result()
            sock.sendall(request[head_length + len(first) // 2 :])
            status, answer, _ = read_response_head(sock)
            assert (status, answer.get("range")) == (202, f"0-{len(first) - 1}"), pair
            response_c = patch_c.result()
    assert response_c.status == 416, (pair, response_c)
    assert response_c.headers["range"] == f"0-{len(first) - 1}"
    status = http_request("GET", f"{a.url}{path}")
    assert (status.status, status.headers["range"]) == (204, f"0-{len(first) - 1}")
    digest = tools.sha256_digest(first)
    separator = "&" if "?" in path else "?"
    response = http_request("PUT", f"{a.url}{path}{separator}digest={digest}", b"")
    assert response.status == 201, response
    assert http_request("GET", f"{c.url}/v2/three/patched/blobs/{digest}").body == first


# ---------------------------------------------------------------- (f) Redis


class Traffic:
    """Pushes through B and pulls through C in a loop on a thread, until
    stopped; every image it pushed, and anything that went wrong."""

    def __init__(self, pusher, puller):
        self.pusher, self.puller = pusher, puller
        self.pushed = []
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            count = len(self.pushed)
            image = make_image((64 * 1024, 16 * 1024))
            try:
                tools.push_image(self.pusher.url, "away/app", f"t{count}", image)
                verify_image(self.puller, "away/app", f"t{count}", image)
            except Exception as error:  # recorded, asserted on by the test
                self.errors.append(f"t{count}: {error!r}")
                return
            self.pushed.append((f"t{count}", image))

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=300)
        assert not self._thread.is_alive(), "the traffic thread did not stop"

    def count(self):
        """Images pushed and pulled so far (raises what went wrong)."""
        assert not self.errors, self.errors
        return len(self.pushed)


def test_redis_killed_mid_run_nodes_serve_on_and_recover(trio, guarded_trio, redis):
    """SIGKILL to redis-server while B pushes and C pulls: the traffic
    goes on, each node's /health answers 503 naming Redis; redis-server
    started again on its port: /health clears on every node, the
    traffic never failed, A serves every image pushed meanwhile, and the
    login brake is shared by the nodes again."""
    a, b, c = trio
    for node in trio + guarded_trio:
        assert node.health() == (200, {}), node.label
    traffic = Traffic(b, c).start()
    try:
        eventually(lambda: traffic.count() >= 2, "traffic runs before the kill")
        redis.stop()
        at_kill = traffic.count()
        for node in trio:
            eventually(
                lambda node=node: (lambda h: h[0] == 503 and redis.addr in h[1].get("redis", ""))(
                    node.health()
                ),
                f"{node.label}'s /health names redis",
            )
        eventually(lambda: traffic.count() >= at_kill + 3, "traffic runs on without Redis")
        redis.start()
        for node in trio + guarded_trio:
            eventually(lambda node=node: node.health() == (200, {}), f"{node.label} healthy")
        at_restart = traffic.count()
        eventually(lambda: traffic.count() >= at_restart + 2, "traffic runs on after Redis")
    finally:
        traffic.stop()
    assert not traffic.errors, traffic.errors
    for tag, image in traffic.pushed:
        verify_image(a, "away/app", tag, image)
    failures = wrong_logins_until_braked(guarded_trio, "bob", 3 * FREE_FAILURES + 1)
    assert FREE_FAILURES <= failures <= FREE_FAILURES + 2, failures

"""The registry on the s3 driver, over a real socket: blob redirects after
the access check, and what clients see when the store fails (a prompt,
retryable 503 naming the problem; nothing committed lost; recovery when the
store returns).  The store is the session's Swift, reached through a
proxy that can refuse connections, answer 503 or hang (tests/s3/faults.py).
"""

import base64
import json
import os
import time

import pytest
import pytest_twisted
import yaml

from tests.s3.faults import FaultyStore
from tests.support import make_client, sha256

# `htpasswd -nbB alice wonderland`
HTPASSWD = "alice:$2y$05$PycBSUOjqvPLzhT6YjpAKuzt7V1wNOQVjs8NEy5jOODS3euN/ejFO\n"
ALICE = {"Authorization": "Basic " + base64.b64encode(b"alice:wonderland").decode()}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Running:
    def __init__(self, url, port, client, pool, driver, registry):
        self.url, self.port, self.client, self.pool = url, port, client, pool
        self.driver, self.registry = driver, registry

    def v2(self, path):
        return path if path.startswith("http") else f"{self.url}/v2/{path}"

    def location(self, response):
        """The response's Location, absolute."""
        location = response.headers.getRawHeaders("Location")[0]
        return location if location.startswith("http") else self.url + location

    async def request(self, method, path, headers=None, data=None, **kwargs):
        response = await self.client.request(
            method, self.v2(path), headers=headers or {}, data=data, allow_redirects=False, **kwargs
        )
        response.body = await response.content()
        return response


async def serve(storage, redirect=False, auth=None, shared_state=None, metadatacache="auto"):
    """registryd on a loopback port, built as RegistryService builds it,
    on a ``storage.s3`` section (and the nodes' ``shared_state`` with
    their metadata cache, running, consulted as ``redis.metadatacache``
    decides for this driver, when given)."""
    from twisted.internet import reactor

    from registryd.auth import create
    from registryd.config import parse_config
    from registryd.http.app import RegistryApp
    from registryd.http.web import StreamingSite
    from registryd.storage.factory import create_storage_driver
    from registryd.storage.registry import Registry
    from registryd.storage.shared_cache import consulted_for, shared_cache_for

    document = {
        "version": 0.1,
        "storage": {"s3": storage, "delete": {"enabled": True}, "redirect": {"enabled": redirect}},
    }
    if auth is not None:
        document["auth"] = auth
    config = parse_config(yaml.safe_load(yaml.safe_dump(document)))
    driver = create_storage_driver(config.storage)
    shared_cache = None
    if shared_state is not None:
        consulted = consulted_for(metadatacache, driver)
        shared_cache = shared_cache_for(shared_state, reactor, consulted=consulted)
        shared_cache.startService()
    registry = Registry(
        driver,
        delete_enabled=True,
        redirect=config.storage.redirect,
        shared_state=shared_state,
        shared_cache=shared_cache,
    )
    authorizer, token_issuer = create(config)
    app = RegistryApp(registry, authorizer=authorizer, token_issuer=token_issuer)
    port = reactor.listenTCP(0, StreamingSite(app.resource()), interface="127.0.0.1")
    client, pool = make_client(reactor)
    return Running(f"http://127.0.0.1:{port.getHost().port}", port, client, pool, driver, registry)


async def stop(running):
    if running.registry.shared_cache is not None:
        running.registry.shared_cache.stopService()
    await running.pool.closeCachedConnections()
    await running.port.stopListening()
    await running.driver.close()


async def push_blob(running, name, data, headers=None):
    response = await running.request("POST", f"{name}/blobs/uploads/", headers)
    assert response.code == 202, response.body
    location = running.location(response)
    separator = "&" if "?" in location else "?"
    response = await running.request(
        "PUT", f"{location}{separator}digest={sha256(data)}", headers, data
    )
    assert response.code == 201, response.body
    return sha256(data)


async def push_image(running, name, tag, headers=None):
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": os.urandom(8).hex()}).encode()
    layer = os.urandom(3000)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": await push_blob(running, name, config, headers),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": await push_blob(running, name, layer, headers),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    response = await running.request(
        "PUT",
        f"{name}/manifests/{tag}",
        {**(headers or {}), "Content-Type": OCI_MANIFEST},
        manifest,
    )
    assert response.code == 201, response.body
    return manifest, layer


def error_codes(response):
    return [error["code"] for error in json.loads(response.body)["errors"]]


# Redirects


@pytest_twisted.ensureDeferred
async def test_blob_get_redirects_to_the_store_after_the_access_check(swift, prefix, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(HTPASSWD)
    running = await serve(
        swift.parameters(prefix),
        redirect=True,
        auth={"htpasswd": {"realm": "s3 test", "path": str(htpasswd)}},
    )
    try:
        data = os.urandom(5000)
        digest = await push_blob(running, "app", data, ALICE)

        anonymous = await running.request("GET", f"app/blobs/{digest}")
        assert anonymous.code == 401
        assert not anonymous.headers.hasHeader("Location")

        response = await running.request("GET", f"app/blobs/{digest}", ALICE)
        assert response.code == 307
        location = response.headers.getRawHeaders("Location")[0]
        assert location.startswith(swift.endpoint) and "X-Amz-Signature=" in location
        assert response.headers.getRawHeaders("Docker-Content-Digest") == [digest]
        fetched = await running.client.get(location)  # no registry credentials
        assert fetched.code == 200
        assert await fetched.content() == data

        head = await running.request("HEAD", f"app/blobs/{digest}", ALICE)
        assert head.code == 200
        assert head.headers.getRawHeaders("Content-Length") == ["5000"]
        missing = await running.request("GET", f"app/blobs/{sha256(b'nothing')}", ALICE)
        assert missing.code == 404
    finally:
        await stop(running)


@pytest_twisted.ensureDeferred
async def test_no_redirect_unless_enabled(swift, prefix):
    running = await serve(swift.parameters(prefix))
    try:
        data = os.urandom(5000)
        digest = await push_blob(running, "app", data)
        response = await running.request("GET", f"app/blobs/{digest}")
        assert response.code == 200
        assert response.body == data
        ranged = await running.request("GET", f"app/blobs/{digest}", {"Range": "bytes=1000-1999"})
        assert ranged.code == 206
        assert ranged.body == data[1000:2000]
    finally:
        await stop(running)


# Failures


@pytest_twisted.async_yield_fixture
async def faulty(swift, prefix):
    """A registry whose store is behind a FaultyStore; S3 calls time out
    after 1 s and at most 4 run at once."""
    host, port = swift.endpoint.rsplit("//", 1)[1].split(":")
    store = FaultyStore(host, int(port)).start()
    running = await serve(
        swift.parameters(
            prefix,
            regionendpoint=store.endpoint,
            requesttimeout=1,
            maxrequests=4,
        )
    )
    running.store = store
    yield running
    await stop(running)
    await store.stop()


async def restore(faulty):
    """Let the store answer again, then wait until every S3 call abandoned
    during the outage has ended, and give later calls a generous budget.

    An abandoned call (its client got the 503 after ``requesttimeout``)
    runs on in its thread until botocore's own timeouts and retries end
    it: after a hang that is seconds, and the switch back makes all of
    them retry at once.  Checked right away, recovery raced them for the
    connection slots and the CPU, and on a busy machine a recovery call
    could miss the 1 s budget the outage phase needs (a 503 after
    recovery).  Recovery is about answering again, not about speed, so it
    is checked on a quiet driver with a budget a busy machine cannot miss.
    """
    from tests.service_support import wait_for

    await faulty.store.set_mode("forward")
    await wait_for(lambda: faulty.driver.calls_in_progress == 0, timeout=120)
    faulty.driver._caller.timeout = 60


async def timed(call):
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


@pytest.mark.parametrize("mode", ["refuse", "error", "hang"])
@pytest_twisted.ensureDeferred
async def test_store_failure_is_a_prompt_503_and_recovers(faulty, mode):
    manifest, layer = await push_image(faulty, "app", "v1")
    layer_digest = sha256(layer)
    await faulty.store.set_mode(mode)

    probes = [
        ("GET", f"app/blobs/{layer_digest}"),
        ("HEAD", "app/manifests/v1"),
        ("GET", "app/tags/list"),
        ("GET", "_catalog"),
        ("POST", "app/blobs/uploads/"),
    ]
    for method, path in probes if mode == "refuse" else probes[:2]:
        response, seconds = await timed(faulty.request(method, path))
        assert response.code == 503, (method, path, response.code, response.body)
        assert seconds < 10, f"{method} {path} took {seconds:.1f}s"
        assert response.headers.getRawHeaders("Retry-After") == ["10"]
        if method != "HEAD":
            assert error_codes(response) == ["UNAVAILABLE"]
            reason = json.loads(response.body)["errors"][0]["detail"]["reason"]
            assert "S3" in reason, reason
            assert json.loads(response.body)["errors"][0]["message"] == reason

    await restore(faulty)
    response = await faulty.request("GET", f"app/blobs/{layer_digest}")
    assert (response.code, response.body) == (200, layer)
    response = await faulty.request("GET", "app/manifests/v1", {"Accept": OCI_MANIFEST})
    assert (response.code, response.body) == (200, manifest)
    await push_blob(faulty, "app", os.urandom(1000))


@pytest_twisted.ensureDeferred
async def test_requests_do_not_pile_up_on_a_hanging_store(faulty):
    """Twenty concurrent requests against a store that never answers, with
    four S3 connections: all are answered 503 within a bounded time."""
    from twisted.internet import defer

    await push_image(faulty, "app", "v1")
    await faulty.store.set_mode("hang")
    started = time.monotonic()
    responses = await defer.gatherResults(
        [
            defer.ensureDeferred(
                faulty.request("GET", "app/manifests/v1", {"Accept": OCI_MANIFEST})
            )
            for _ in range(20)
        ]
    )
    elapsed = time.monotonic() - started
    assert [response.code for response in responses] == [503] * 20
    assert elapsed < 20, f"took {elapsed:.1f}s"
    reasons = {json.loads(r.body)["errors"][0]["detail"]["reason"] for r in responses}
    assert any("busy" in reason or "no answer" in reason for reason in reasons), reasons
    await restore(faulty)
    response = await faulty.request("GET", "app/manifests/v1", {"Accept": OCI_MANIFEST})
    assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_upload_keeps_its_bytes_through_an_outage(faulty):
    """A chunked upload interrupted by the store failing resumes from the
    offset the registry reports once the store is back."""
    first, second = os.urandom(4000), os.urandom(3000)
    response = await faulty.request("POST", "app/blobs/uploads/")
    location = faulty.location(response)
    response = await faulty.request(
        "PATCH", location, {"Content-Range": f"0-{len(first) - 1}"}, first
    )
    assert response.code == 202, response.body
    location = faulty.location(response)

    await faulty.store.set_mode("error")
    response = await faulty.request(
        "PATCH", location, {"Content-Range": f"{len(first)}-{len(first) + len(second) - 1}"}, second
    )
    assert response.code == 503
    assert error_codes(response) == ["UNAVAILABLE"]

    await restore(faulty)
    status = await faulty.request("GET", location)
    assert status.code == 204
    assert status.headers.getRawHeaders("Range") == [f"0-{len(first) - 1}"]
    response = await faulty.request(
        "PATCH", location, {"Content-Range": f"{len(first)}-{len(first) + len(second) - 1}"}, second
    )
    assert response.code == 202, response.body
    location = faulty.location(response)
    digest = sha256(first + second)
    separator = "&" if "?" in location else "?"
    response = await faulty.request("PUT", f"{location}{separator}digest={digest}")
    assert response.code == 201, response.body
    response = await faulty.request("GET", f"app/blobs/{digest}")
    assert response.body == first + second


async def store_requests_per_read(running, name, tag, manifest, layer):
    """S3 requests (counted at botocore) that one manifest GET by tag, by
    digest, a manifest HEAD and a blob HEAD each cost, once warm."""
    import collections

    counts = collections.Counter()

    def count(model, **kwargs):
        counts[model.name] += 1

    digest = sha256(manifest)
    reads = {
        "manifest GET by tag": ("GET", f"{name}/manifests/{tag}"),
        "manifest GET by digest": ("GET", f"{name}/manifests/{digest}"),
        "manifest HEAD by tag": ("HEAD", f"{name}/manifests/{tag}"),
        "blob HEAD": ("HEAD", f"{name}/blobs/{sha256(layer)}"),
    }
    events = running.driver._caller.client.meta.events
    events.register("before-call.s3", count)
    try:
        found = {}
        for what, (method, path) in reads.items():
            assert (await running.request(method, path)).code == 200
            counts.clear()
            assert (await running.request(method, path)).code == 200
            found[what] = sum(counts.values())
        return found
    finally:
        events.unregister("before-call.s3", count)


@pytest_twisted.ensureDeferred
async def test_with_redis_small_reads_cost_no_store_requests(swift, prefix, redis_server):
    """With the nodes' metadata cache in Redis (registryd.storage.shared_cache),
    consulted on S3 with ``redis.metadatacache: auto`` (S3's metadata reads
    are requests), a warm manifest GET by tag or digest, manifest HEAD and
    blob HEAD ask the store nothing: the tag, the revision, the blob link and the blob's
    size are hits in Redis and the manifest's bytes are in process.
    Without Redis, each still asks the store (a tag's link is stat'ed, a
    revision's link read, a blob's link stat'ed or read and its data
    stat'ed), since another node may have changed them."""
    from tests.redis_server import redis_state

    state = redis_state(redis_server)
    running = await serve(swift.parameters(prefix), shared_state=state)
    cache = running.registry.shared_cache
    alone = await serve(swift.parameters(prefix))
    try:
        deadline = time.monotonic() + 60
        while not cache.trusted:
            assert time.monotonic() < deadline, "the cache never began its epoch"
            await running.request("GET", "")
        manifest, layer = await push_image(running, "count/app", "v1")
        with_redis = await store_requests_per_read(running, "count/app", "v1", manifest, layer)
        without = await store_requests_per_read(alone, "count/app", "v1", manifest, layer)
        print(f"S3 requests per warm read, with Redis {with_redis}, without {without}")
        assert set(with_redis.values()) == {0}, with_redis
        assert all(count >= 1 for count in without.values()), without
    finally:
        await stop(running)
        await stop(alone)
        state._stop_pool()

"""The nodes' metadata cache (registryd.storage.shared_cache): two whole
registryd nodes on one storage root and one real ``redis-server``.  With
``redis.metadatacache: on`` each node serves tags, manifests and blob
HEADs from the cache shared in Redis (its hit counter grows), and a write
on one node (a tag moved, a delete, a repository delete, a garbage
collection) is never served stale by the other, also while one node
cannot reach Redis and after it can again.  With ``auto`` (the default)
on this filesystem root no read asks the cache, and the per-process
caches' stat of each link keeps the nodes as fresh; with one node ``on``
and one ``auto`` (a rolling change) the ``auto`` node's writes still make
the other forget.

Node A reaches Redis through a TCP proxy (``tests.s3.faults.FaultyStore``)
that can refuse connections or hang, so that A alone is cut off while B
still uses Redis: the case a cache of the nodes must survive.
"""

import hashlib
import os
import time

import pytest_twisted
import treq

from tests.integration.test_auth_api import ALICE, HTPASSWD, basic
from tests.integration.test_health_metrics import parse_metrics
from tests.integration.test_shared_nodes import NODE, push_image_through, put_manifest, until
from tests.s3.faults import FaultyStore
from tests.service_support import start_service

AUTH = basic(*ALICE)
MEMBERS = "registryd:{cache}:members"


CONSULTING = NODE + "  metadatacache: {metadatacache}\n"

#: redis.metadatacache of nodes A and B: both consult the cache; neither
#: (the filesystem's default); A does and B does not (a rolling change)
SETTINGS = [("on", "on"), ("auto", "auto"), ("on", "auto")]


@pytest_twisted.async_yield_fixture
async def nodes(tmp_path, redis_server):
    """Nodes A (Redis through the proxy: ``a.proxy``) and B (direct),
    both consulting the cache."""
    async for started in two_nodes(tmp_path, redis_server, ("on", "on")):
        yield started


@pytest_twisted.async_yield_fixture(params=SETTINGS, ids="-".join)
async def any_nodes(request, tmp_path, redis_server):
    """Nodes A and B with each pair of :data:`SETTINGS`."""
    async for started in two_nodes(tmp_path, redis_server, request.param):
        yield started


async def two_nodes(tmp_path, redis_server, settings):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(HTPASSWD)
    host, port = redis_server.addr.rsplit(":", 1)
    proxy = FaultyStore(host, int(port)).start()
    started = []
    try:
        addrs = (("a", f"127.0.0.1:{proxy.port}"), ("b", redis_server.addr))
        for (label, redis), setting in zip(addrs, settings, strict=True):
            directory = tmp_path / label
            directory.mkdir()
            node = await start_service(
                directory,
                CONSULTING,
                root=str(tmp_path / "registry-data"),
                htpasswd=str(htpasswd),
                redis=redis,
                metadatacache=setting,
            )
            node.root = str(tmp_path / "registry-data")
            node.metadatacache = setting
            started.append(node)
        for node in started:
            await until(lambda node=node: cache(node).trusted, "the node trusts the cache")
        started[0].proxy = proxy
        yield started
    finally:
        for node in started:
            await node.stop()
        await proxy.stop()


def cache(node):
    return node.service.registry.shared_cache


def lookups(node):
    """The cache lookups ``node``'s reads made (this process's counters)."""
    return cache(node).hits + cache(node).misses + cache(node).bypassed


def settle(root):
    """Date every file under the storage root back a minute: what a link
    resolved to is then kept by the per-process caches (they keep nothing
    read from a link under 2 s old), so a read that follows a move on the
    other node meets a cached entry that only the stat of the link can
    show to be stale."""
    past = time.time() - 60
    for directory, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(directory, name), (past, past))


async def request(node, method, path):
    response = await node.client.request(method, node.v2(path), headers=AUTH)
    await response.content()
    return response.code, (response.headers.getRawHeaders("Docker-Content-Digest") or [None])[0]


async def tag_names(node, name, tag):
    """The digest node serves for ``name:tag`` by GET, checked equal by
    HEAD (None: 404)."""
    code, digest = await request(node, "GET", f"{name}/manifests/{tag}")
    head_code, head_digest = await request(node, "HEAD", f"{name}/manifests/{tag}")
    assert (head_code, head_digest) == (code, digest)
    assert code in (200, 404), code
    return digest if code == 200 else None


async def two_images(node, name):
    """Two images pushed through ``node``: [(digest, manifest, blobs)]."""
    images = []
    for tag in ("one", "two"):
        manifest, blobs = await push_image_through(node, name, tag, AUTH)
        images.append(("sha256:" + hashlib.sha256(manifest).hexdigest(), manifest, blobs))
    return images


async def lookups_total(node):
    """``registryd_metadata_cache_lookups_total`` of every result, from
    ``/metrics`` (the process's: both nodes')."""
    response = await treq.get(node.debug_url + "/metrics", persistent=False)
    samples = parse_metrics(await response.content())
    return sum(
        value
        for (name, _), value in samples.items()
        if name == "registryd_metadata_cache_lookups_total"
    )


@pytest_twisted.ensureDeferred
async def test_a_tag_moved_on_one_node_is_never_served_stale_by_the_other(any_nodes):
    """60 moves of one tag between two manifests, alternately through A
    and B; after each, the other node (which had the old digest cached,
    in Redis or, not consulting it, in its own tag cache) serves the new
    one at once, by GET and HEAD.  A node consults Redis only with ``on``:
    with ``auto`` on a filesystem its reads make no lookup at all."""
    a, b = any_nodes
    consulting = [node for node in any_nodes if node.metadatacache == "on"]
    local = [node for node in any_nodes if node.metadatacache == "auto"]
    images = await two_images(a, "alice/app")
    hits = sum(cache(node).hits for node in consulting)
    total, made = await lookups_total(a), sum(lookups(node) for node in any_nodes)
    for move in range(60):
        writer, reader = (a, b) if move % 2 == 0 else (b, a)
        digest, manifest, _ = images[move % 2]
        settle(a.root)
        assert await tag_names(reader, "alice/app", "latest") in (None, images[1 - move % 2][0])
        assert await tag_names(reader, "alice/app", "latest") in (None, images[1 - move % 2][0])
        if move and reader in local:  # what the move must not leave stale
            assert reader.service.registry.tag_cache.seen("alice/app", "latest")
        await put_manifest(writer, "alice/app", "latest", manifest, AUTH)
        assert await tag_names(reader, "alice/app", "latest") == digest
        assert await tag_names(reader, "alice/app", "latest") == digest
    for node in local:
        assert lookups(node) == 0
        assert node.service.shared_state.shared  # the brake, locks, guard, leases: Redis
    # a consulting node's reads from the second on each round are hits
    assert sum(cache(node).hits for node in consulting) - hits >= 3 * 30 * len(consulting)
    # /metrics counts the same lookups: none for a node that does not consult
    assert await lookups_total(a) - total == sum(lookups(node) for node in any_nodes) - made


@pytest_twisted.ensureDeferred
async def test_deletes_on_one_node_are_seen_at_once_by_the_other(any_nodes):
    """B has the tag, the manifest by digest and the blobs cached (in
    Redis, or in its own link caches); each removal through A (blob
    DELETE, tag DELETE, manifest DELETE, GC, repository DELETE) is a 404
    on B right after."""
    from registryd.ops.gc import collect_garbage

    a, b = any_nodes
    (one, _, one_blobs), (two, _, two_blobs) = await two_images(a, "alice/app")
    settle(a.root)
    paths = (
        ["alice/app/manifests/one", f"alice/app/manifests/{one}"]
        + ["alice/app/manifests/two", f"alice/app/manifests/{two}"]
        + [f"alice/app/blobs/{blob}" for blob in list(one_blobs) + list(two_blobs)]
    )
    for _ in range(2):  # fill, then hit
        for path in paths:
            assert (await request(b, "HEAD", path))[0] == 200, path

    async def b_answers(code, path):
        assert (await request(b, "HEAD", path))[0] == code, path
        assert (await request(b, "GET", path))[0] == code, path

    blob = next(iter(one_blobs))
    assert (await request(a, "DELETE", f"alice/app/blobs/{blob}"))[0] == 202
    await b_answers(404, f"alice/app/blobs/{blob}")
    assert (await request(a, "DELETE", "alice/app/manifests/one"))[0] == 202
    await b_answers(404, "alice/app/manifests/one")
    await b_answers(200, f"alice/app/manifests/{one}")
    assert (await request(a, "DELETE", f"alice/app/manifests/{one}"))[0] == 202
    await b_answers(404, f"alice/app/manifests/{one}")
    # what is left of image one is garbage: A's collection removes it
    report = await collect_garbage(a.service.registry, grace_period=0)
    assert {digest for digest, _ in report.blobs_removed} >= set(one_blobs) - {blob}
    for gone in set(one_blobs) - {blob}:
        await b_answers(404, f"alice/app/blobs/{gone}")
    for kept in two_blobs:
        await b_answers(200, f"alice/app/blobs/{kept}")
    response = await a.client.delete(a.v2("alice/app/_registryd/repository"), headers=AUTH)
    assert response.code == 202, await response.content()
    for path in ["alice/app/manifests/two", f"alice/app/manifests/{two}"] + [
        f"alice/app/blobs/{kept}" for kept in two_blobs
    ]:
        await b_answers(404, path)


_EXPIRED = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local t = redis.call('TIME')
if not score or tonumber(score) <= t[1] * 1000 + math.floor(t[2] / 1000) then return 1 end
return 0
"""


def membership_expired(redis_server, member):
    """Whether ``member``'s hold of the cache is over, by Redis's clock."""
    import redis

    host, port = redis_server.addr.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port), socket_timeout=5)
    try:
        return client.eval(_EXPIRED, 1, MEMBERS, member) == 1
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_a_node_cut_off_from_redis_leaves_nothing_stale_once_its_hold_ends(
    nodes, redis_server
):
    """A loses Redis (connections refused) and moves a tag B has cached:
    A cannot make B forget it.  A serves the new digest (its cache is
    bypassed); once A's membership has expired (Redis's clock), B does
    too, without A ever reaching Redis; and after A is back, a move
    through A is seen by B at once, and A uses the cache again."""
    a, b = nodes
    (one, one_manifest, _), (two, two_manifest, _) = await two_images(a, "alice/app")
    await put_manifest(a, "alice/app", "latest", one_manifest, AUTH)
    for _ in range(2):
        assert await tag_names(b, "alice/app", "latest") == one
    await a.proxy.set_mode("refuse")
    await put_manifest(a, "alice/app", "latest", two_manifest, AUTH)
    assert not cache(a).trusted
    assert await tag_names(a, "alice/app", "latest") == two
    member = cache(a).member
    await until(lambda: membership_expired(redis_server, member), "A's membership expired")
    assert await tag_names(b, "alice/app", "latest") == two
    await a.proxy.set_mode("forward")
    await put_manifest(a, "alice/app", "latest", one_manifest, AUTH)
    assert await tag_names(b, "alice/app", "latest") == one
    await until(lambda: cache(a).trusted, "A trusts the cache again")
    hits = cache(a).hits
    assert await tag_names(a, "alice/app", "latest") == one
    assert await tag_names(a, "alice/app", "latest") == one
    assert cache(a).hits > hits


@pytest_twisted.ensureDeferred
async def test_a_hanging_redis_costs_one_wait_then_the_cache_is_bypassed(nodes):
    """Redis accepts A's connections and never answers: the first request
    that asks it waits at most the shared state's deadline, then A serves
    from storage without asking Redis until it answers again."""
    a, b = nodes
    (one, one_manifest, _), _ = await two_images(a, "alice/app")
    await a.proxy.set_mode("hang")
    deadline = a.service.shared_state.deadline
    started = time.monotonic()
    assert await tag_names(a, "alice/app", "one") == one
    assert time.monotonic() - started < 2 * deadline + 30  # generous: a busy machine
    bypassed = cache(a).bypassed
    for _ in range(5):
        assert await tag_names(a, "alice/app", "one") == one
    assert cache(a).bypassed >= bypassed + 10  # each GET and HEAD, without asking Redis
    await a.proxy.set_mode("forward")
    await until(lambda: cache(a).trusted, "A trusts the cache again")

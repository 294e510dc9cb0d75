"""The lifecycle features on two registryd nodes (two RegistryServices on
their own ports, one storage root) sharing a real ``redis-server``: an
immutable tag cannot be created twice with different digests, a quota
cannot be overrun by spreading pushes over the nodes, and pulls made
through one node are seen by the other after a flush.
"""

import json

import pytest_twisted
from twisted.internet import defer

from tests.integration.test_health_metrics import BASE
from tests.integration.test_manifests_api import push_image, put_manifest
from tests.integration.test_shared_nodes import set_calls, until, until_healthy
from tests.service_support import running_nodes
from tests.support import sha256

NODE = (
    BASE
    + """\
redis:
  addr: {redis}
  dialtimeout: 500ms
  readtimeout: 500ms
  writetimeout: 500ms
lifecycle:
  immutable:
    - {{repository: "team/**", tags: ["v*"]}}
  quotas:
    - {{repository: "small/**", bytes: {quota_bytes}}}
"""
)

#: the quota's bytes: one image of push_image (two 2000-byte layers, its
#: config and manifest) fits, a second one does not
QUOTA_BYTES = 7000


@pytest_twisted.async_yield_fixture
async def nodes(tmp_path, redis_server):
    async with running_nodes(
        tmp_path, NODE, redis=redis_server.addr, quota_bytes=QUOTA_BYTES
    ) as started:
        yield started


@pytest_twisted.ensureDeferred
async def test_an_immutable_tag_is_created_once_by_concurrent_puts_on_two_nodes(nodes):
    """For each of several new protected tags, A and B are sent a PUT of
    a different manifest at the same moment.  Each node's check of the tag
    and its write run under the tag's lock in Redis, so for every tag one
    PUT wins (201) and the other is refused (403 DENIED naming the
    winner's digest); the tag names the winner.  With a per-node lock
    both checks find the tag free and both PUTs succeed, the later
    silently moving an immutable tag."""
    a, b = nodes
    tags = [f"v{number}" for number in range(6)]
    bodies = {}
    for tag in tags:
        bodies[tag] = (await push_image(a, "team/app"), await push_image(b, "team/app"))
    racing = []
    for tag in tags:
        body_a, body_b = bodies[tag]
        racing.append(defer.ensureDeferred(put_manifest(a, "team/app", tag, body_a)))
        racing.append(defer.ensureDeferred(put_manifest(b, "team/app", tag, body_b)))
    responses = await defer.gatherResults(racing)
    for index, tag in enumerate(tags):
        pair = responses[2 * index : 2 * index + 2]
        codes = sorted(response.code for response in pair)
        assert codes == [201, 403], (tag, codes)
        winner = bodies[tag][[response.code for response in pair].index(201)]
        loser = pair[[response.code for response in pair].index(403)]
        [error] = json.loads(await loser.content())["errors"]
        assert error["code"] == "DENIED" and error["detail"]["digest"] == sha256(winner)
        for node in (a, b):
            response = await node.client.head(node.v2(f"team/app/manifests/{tag}"))
            await response.content()
            assert response.headers.getRawHeaders("Docker-Content-Digest") == [sha256(winner)]
    for response in responses:
        await response.content()


@pytest_twisted.ensureDeferred
async def test_a_protected_tag_waits_for_its_lock_held_by_another_node(nodes, redis_server):
    """Another node holds the lock of protected tag ``v-held`` (the test
    takes it in Redis as that node would).  PUTs of two different
    manifests through A and B both wait for it (seen retrying it) instead
    of writing the tag; once it is let go, one wins and the other is
    refused.  With per-node locks A writes at once, whatever other nodes
    hold."""
    a, b = nodes
    body_a, body_b = await push_image(a, "team/app"), await push_image(b, "team/app")
    lock = "registryd:tag:team/app:v-held"
    assert redis_server.command("SET", lock, "another-node", "PX", "60000") == b"+OK"
    answered = []
    tries = set_calls(redis_server)
    put_a = defer.ensureDeferred(put_manifest(a, "team/app", "v-held", body_a))
    put_a.addBoth(lambda result: answered.append("a") or result)
    await until(
        lambda: answered or set_calls(redis_server) >= tries + 2, "A answers or waits for the lock"
    )
    assert not answered, "A wrote a protected tag while another node held its lock"
    put_b = defer.ensureDeferred(put_manifest(b, "team/app", "v-held", body_b))
    put_b.addBoth(lambda result: answered.append("b") or result)
    await until(lambda: set_calls(redis_server) >= tries + 5, "A and B wait for the lock")
    assert not answered
    assert redis_server.command("DEL", lock) == b":1"
    responses = [await put_a, await put_b]
    assert sorted(response.code for response in responses) == [201, 403]
    for response in responses:
        await response.content()


async def details(node, name):
    response = await node.client.get(node.v2(f"{name}/_registryd/tags"))
    assert response.code == 200, await response.content()
    return {entry["tag"]: entry for entry in json.loads(await response.content())["tags"]}


async def ui_pulled(node, name):
    """The pulled time the web interface's repository page shows, by tag."""
    from tests.integration.test_ui import tag_rows

    response = await node.client.get(f"{node.url}/ui/repositories/{name}")
    assert response.code == 200
    return {
        tag: pulled for tag, (_, pulled, _) in tag_rows((await response.content()).decode()).items()
    }


async def pull(node, name, reference):
    response = await node.client.get(
        node.v2(f"{name}/manifests/{reference}"),
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert response.code == 200
    await response.content()


@pytest_twisted.ensureDeferred
async def test_pulls_through_a_are_seen_on_b_after_a_flush_through_redis(nodes, redis_server):
    """Pulls through A write nothing to Redis until A flushes; after the
    flush (one merge per repository) the details API and the web
    interface of B show them, before anything is written to storage; the
    scheduled job writes them to storage later (one node's run)."""
    a, b = nodes
    body = await push_image(a, "pulls/app")
    assert (await put_manifest(a, "pulls/app", "v1", body)).code == 201
    assert (await details(b, "pulls/app"))["v1"]["pulled"] is None
    for _ in range(20):
        await pull(a, "pulls/app", "v1")
    # (a manifest GET may ask the nodes' metadata cache; pull times wait)
    assert redis_server.command("KEYS", "registryd:pulls:*") == b"*0", "a pull was written"
    await a.service.app.pulls.flush()
    assert redis_server.command("EXISTS", "registryd:pulls:tags:pulls/app") == b":1"
    stored = b.service.registry.repository("pulls/app").pulls
    assert await stored._stored() == ({}, {})  # not in storage yet: B reads Redis
    pulled = (await details(b, "pulls/app"))["v1"]["pulled"]
    assert pulled is not None
    assert (await ui_pulled(b, "pulls/app"))["v1"] == pulled
    assert await b.service.registry.shared_pulls.persist(b.service.registry) == 1
    tags, manifests = await stored._stored()
    assert set(tags) == {"v1"} and set(manifests) == {sha256(body)}
    assert await b.service.registry.shared_pulls.persist(b.service.registry) == 0


@pytest_twisted.ensureDeferred
async def test_a_deleted_tag_loses_its_pull_times(nodes):
    """v1 is pulled, its time flushed to Redis and persisted to storage;
    v1 is deleted through B and later pushed again through A (another
    image): the new v1 was never pulled, on either node.  (The pull records used to keep
    deleted tags, so a re-pushed tag showed its predecessor's pulls.)"""
    a, b = nodes
    first, second = await push_image(a, "pulls/gone"), await push_image(a, "pulls/gone")
    assert (await put_manifest(a, "pulls/gone", "v1", first)).code == 201
    assert (await put_manifest(a, "pulls/gone", "keep", second)).code == 201
    await pull(a, "pulls/gone", "v1")
    await pull(a, "pulls/gone", "keep")
    await a.service.app.pulls.flush()
    await a.service.registry.shared_pulls.persist(a.service.registry)
    response = await b.client.delete(b.v2("pulls/gone/manifests/v1"))
    assert response.code == 202, await response.content()
    await response.content()
    third = await push_image(a, "pulls/gone")
    assert (await put_manifest(a, "pulls/gone", "v1", third)).code == 201
    for node in (a, b):
        listed = await details(node, "pulls/gone")
        assert listed["v1"]["pulled"] is None and listed["keep"]["pulled"] is not None
        tags, _ = await node.service.registry.repository("pulls/gone").pulls.read()
        assert set(tags) == {"keep"}


async def quota_refused(response):
    assert response.code == 403, await response.content()
    [error] = json.loads(await response.content())["errors"]
    assert error["code"] == "DENIED" and "exceeded" in error["message"]
    return error


@pytest_twisted.ensureDeferred
async def test_a_push_through_a_counts_against_the_quota_on_b_at_once(nodes):
    """B has counted small/a while it held a tiny image.  A then pushes an
    image into small/a; B is sent one for small/b at once: A's push counts
    on B (the repository's change counter moved, so B counts it again), and
    the two images together would overrun the quota: refused.  Trusting
    its own count (for up to a minute), B used to accept it."""
    a, b = nodes
    tiny = await push_image(b, "small/a", layers=0)
    assert (await put_manifest(b, "small/a", "tiny", tiny)).code == 201
    first, second = await push_image(a, "small/a"), await push_image(b, "small/b")
    assert (await put_manifest(a, "small/a", "v1", first)).code == 201
    error = await quota_refused(await put_manifest(b, "small/b", "v1", second))
    assert error["detail"]["repositories"] == 2
    response = await b.client.get(b.v2("small/a/_registryd/usage"))
    [usage] = json.loads(await response.content())["quotas"]
    assert usage["bytes"] > len(first) + 4000


@pytest_twisted.ensureDeferred
async def test_concurrent_pushes_through_two_nodes_cannot_both_take_the_last_bytes(nodes):
    """Pushes into an empty quota through A and B at the same moment, each
    fitting alone but not together: the quota's lock in Redis admits one
    after the other, so exactly one is accepted."""
    a, b = nodes
    for attempt in range(3):
        names = (f"small/race{attempt}-a", f"small/race{attempt}-b")
        bodies = (await push_image(a, names[0]), await push_image(b, names[1]))
        responses = await defer.gatherResults(
            [
                defer.ensureDeferred(put_manifest(node, name, "v1", body))
                for node, name, body in zip((a, b), names, bodies)
            ]
        )
        assert sorted(response.code for response in responses) == [201, 403]
        for response in responses:
            await response.content()
        # free the quota for the next round
        [accepted] = [
            (node, name, body)
            for node, name, body, response in zip((a, b), names, bodies, responses)
            if response.code == 201
        ]
        node, name, body = accepted
        response = await node.client.delete(node.v2(f"{name}/manifests/{sha256(body)}"))
        assert response.code == 202, await response.content()


@pytest_twisted.ensureDeferred
async def test_quota_counts_are_made_again_from_storage_when_redis_returns(nodes, redis_server):
    """B has counted small/a (a tiny image).  Redis goes away; A pushes an
    image into small/a (admitted as by a node alone); Redis comes back
    empty.  Once B finds Redis back, it does not trust its count from
    before: the epoch is new, so it counts small/a from storage, and a push
    that would overrun the quota with A's image is refused."""
    a, b = nodes
    tiny = await push_image(b, "small/a", layers=0)
    assert (await put_manifest(b, "small/a", "tiny", tiny)).code == 201
    first, second = await push_image(a, "small/a"), await push_image(b, "small/b")
    redis_server.stop()
    assert (await put_manifest(a, "small/a", "v1", first)).code == 201
    redis_server.start()
    # B sees Redis back (its scheduled jobs may have found it away: for a
    # moment after that B does not ask it, and admits as a node alone)
    await until_healthy(b)
    await quota_refused(await put_manifest(b, "small/b", "v1", second))


@pytest_twisted.ensureDeferred
async def test_redis_gone_pull_times_go_to_storage_and_protected_tags_still_work(
    nodes, redis_server
):
    """With Redis away, A's flush writes the pull times to storage, as a
    node alone does, and B (which cannot read Redis either) shows them;
    a protected tag is still created once and then refused a move (the
    per-node lock), and no request fails."""
    a, b = nodes
    first, second = await push_image(a, "team/down"), await push_image(a, "team/down")
    assert (await put_manifest(a, "team/down", "v1", first)).code == 201
    redis_server.stop()
    try:
        await pull(a, "team/down", "v1")
        await a.service.app.pulls.flush()
        tags, _ = await b.service.registry.repository("team/down").pulls._stored()
        assert set(tags) == {"v1"}
        assert (await details(b, "team/down"))["v1"]["pulled"] is not None
        assert (await put_manifest(b, "team/down", "v2", second)).code == 201
        response = await put_manifest(a, "team/down", "v2", first)
        assert response.code == 403, await response.content()
    finally:
        redis_server.start()

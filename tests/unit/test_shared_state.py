"""The ISharedState contract, held by the in-process implementation and by
the Redis one on a real ``redis-server``; and what the Redis one does when
Redis is gone.

For Redis, ``node()`` makes a new client each time: two of them are two
registryd nodes, and what one writes the other must see.  In process,
there is one node, so ``node()`` is always the same state.
"""

import time

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from zope.interface.verify import verifyObject

from registryd.interfaces import ISharedState
from registryd.shared.errors import SharedStateUnavailable
from registryd.shared.memory import MemorySharedState
from tests.redis_server import redis_state


@pytest.fixture(params=["memory", "redis"])
def node(request):
    made = []
    if request.param == "memory":
        state = MemorySharedState(reactor=reactor)

        def make():
            return state
    else:
        server = request.getfixturevalue("redis_server")

        def make():
            made.append(redis_state(server))
            return made[-1]

    yield make
    for state in made:
        state._stop_pool()


async def until(predicate, timeout=30.0):
    """Wait (on the reactor) until the async ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        await task.deferLater(reactor, 0.02, lambda: None)


async def answers(state):
    """Whether ``state`` reaches Redis now."""
    try:
        await state.ping()
    except SharedStateUnavailable:
        return False
    return True


@pytest_twisted.ensureDeferred
async def test_provides_the_interface(node):
    assert verifyObject(ISharedState, node())


@pytest_twisted.ensureDeferred
async def test_a_lock_is_held_by_one_token_across_nodes(node):
    a, b = node(), node()
    assert await a.acquire("lock:x", "token-a", 30)
    assert not await b.acquire("lock:x", "token-b", 30)
    assert not await b.extend("lock:x", "token-b", 30)
    assert not await b.release("lock:x", "token-b")
    assert await a.extend("lock:x", "token-a", 60)
    assert 30 < await b.remaining("lock:x") <= 60
    assert await a.release("lock:x", "token-a")
    assert await b.acquire("lock:x", "token-b", 30)


@pytest_twisted.ensureDeferred
async def test_a_lease_nobody_renews_expires(node):
    a, b = node(), node()
    assert await a.acquire("lease:gc", "a", 0.2)

    async def taken_by_b():
        return await b.acquire("lease:gc", "b", 30)

    await until(taken_by_b)
    assert not await a.extend("lease:gc", "a", 30)  # lost it: must not renew b's


@pytest_twisted.ensureDeferred
async def test_counters_add_up_across_nodes_and_expire(node):
    a, b = node(), node()
    assert await a.incr("count:x") == 1
    assert await b.incr("count:x", 5) == 6
    assert await a.remaining("count:x") is None  # no ttl given: kept
    assert await a.incr("count:y", 1, ttl=0.2) == 1

    async def forgotten():
        return await b.get("count:y") is None

    await until(forgotten)
    assert await b.incr("count:y", 1, ttl=30) == 1


@pytest_twisted.ensureDeferred
async def test_values_are_seen_by_every_node(node):
    a, b = node(), node()
    assert await b.get("tag:x") is None
    await a.set("tag:x", b"sha256:" + bytes(range(256)))
    assert await b.get("tag:x") == b"sha256:" + bytes(range(256))
    await b.set("tag:x", b"v2", ttl=30)
    assert 0 < await a.remaining("tag:x") <= 30
    await a.delete("tag:x")
    assert await b.get("tag:x") is None


@pytest_twisted.ensureDeferred
async def test_set_members_expire_one_by_one(node):
    a, b = node(), node()
    await a.add_member("held", "sha256:aa", 0.2)
    await a.add_member("held", "sha256:bb", 60)
    assert await b.is_member("held", "sha256:aa")

    async def aa_expired():
        return not await b.is_member("held", "sha256:aa")

    await until(aa_expired)
    assert await b.is_member("held", "sha256:bb")
    assert await b.members("held") == ["sha256:bb"]
    await a.add_member("held", "sha256:bb", 0.1)  # a shorter hold does not cut a longer one
    assert await b.is_member("held", "sha256:bb")
    await b.remove_member("held", "sha256:bb")
    assert not await a.is_member("held", "sha256:bb")
    assert await a.members("held") == []


@pytest_twisted.ensureDeferred
async def test_tables_keep_the_latest_number_of_each_field_across_nodes(node):
    """Pull times merged by several nodes: each field keeps its largest
    number whatever the order; a removal bounded by a number leaves a
    field merged again since; the table expires as a whole."""
    a, b = node(), node()
    assert await b.latest("times") == {}
    await a.merge_latest("times", {"v1": 100.5, "v2": 50.0}, ttl=60)
    await b.merge_latest("times", {"v1": 90.0, "v2": 70.25, "tag:with:colons": 1.0}, ttl=60)
    assert await a.latest("times") == {"v1": 100.5, "v2": 70.25, "tag:with:colons": 1.0}
    assert 0 < await a.remaining("times") <= 60
    await b.remove_fields("times", {"v1": 100.0, "v2": 70.25, "tag:with:colons": None})
    assert await a.latest("times") == {"v1": 100.5}
    await a.remove_fields("times", {})
    await a.merge_latest("short", {"x": 1.0}, ttl=0.2)

    async def expired():
        return await b.latest("short") == {}

    await until(expired)


@pytest_twisted.ensureDeferred
async def test_redis_gone_fails_fast_and_recovers(redis_server):
    state = redis_state(redis_server, dial_timeout=0.5, read_timeout=0.5, write_timeout=0.5)
    try:
        await state.ping()
        redis_server.stop()
        started = time.monotonic()
        for operation in (
            state.ping(),
            state.get("x"),
            state.acquire("l", "t", 1),
            state.incr("c"),
        ):
            with pytest.raises(SharedStateUnavailable):
                await operation
        assert time.monotonic() - started < state.deadline * 4 + 5
        assert state.problem and redis_server.addr in state.problem
        redis_server.start()

        await until(lambda: answers(state))
        assert state.problem is None
        assert await state.incr("c") == 1
    finally:
        state._stop_pool()


@pytest_twisted.ensureDeferred
async def test_redis_that_never_answers_times_out_within_the_deadline(redis_server):
    """A Redis that accepts and then says nothing (here: paused with
    DEBUG SLEEP) costs a caller at most the configured timeouts; the
    operations right after a failure fail at once instead of each waiting
    a deadline (a push makes several); after ``retry_pause`` the next one
    asks Redis again and finds it back."""
    state = redis_state(redis_server, dial_timeout=0.2, read_timeout=0.2, write_timeout=0.2)
    sleeper = redis_state(redis_server, read_timeout=10.0)
    try:
        await state.ping()
        sleeping = sleeper._run(sleeper._client.execute_command, "DEBUG", "SLEEP", "3")
        await task.deferLater(reactor, 0.3, lambda: None)
        started = time.monotonic()
        with pytest.raises(SharedStateUnavailable):
            await state.get("x")
        assert time.monotonic() - started < 2.5
        started = time.monotonic()
        for operation in (
            lambda: state.acquire("l", "t", 1),
            lambda: state.incr("c"),
            lambda: state.get("x"),
            lambda: state.latest("t"),
            lambda: state.set("x", b"1"),
        ):  # one after the other, as one request's steps
            with pytest.raises(SharedStateUnavailable):
                await operation()
        # each asking Redis would cost at least its read timeout (0.2 s)
        assert time.monotonic() - started < 0.2
        await sleeping
        await until(lambda: answers(state))
        assert state.problem is None and await state.incr("c") == 1
    finally:
        state._stop_pool()
        sleeper._stop_pool()

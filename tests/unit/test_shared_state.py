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
async def test_cache_entries_are_seen_by_every_node_until_one_forgets_them(node):
    a, b = node(), node()
    [(value, stamp)] = await a.cache_lookup(["tag:app:v1"])
    assert value is None
    assert await a.cache_fill("tag:app:v1", stamp, b"sha256:aa", 30)
    assert await b.cache_lookup(["tag:app:v1", "tag:app:v2"]) == [
        (b"sha256:aa", stamp),
        (None, (await b.cache_lookup(["tag:app:v2"]))[0][1]),
    ]
    await b.cache_forget(["tag:app:v1"], 30)
    [(value, _)] = await a.cache_lookup(["tag:app:v1"])
    assert value is None


@pytest_twisted.ensureDeferred
async def test_a_value_read_before_a_forget_is_never_stored_after_it(node):
    """A reads the old value from storage after its lookup; B writes
    storage and forgets; A's fill comes last and must be refused, or A's
    old value would be served by every node from then on."""
    a, b = node(), node()
    [(_, stamp)] = await a.cache_lookup(["tag:app:v1"])
    await b.cache_forget(["tag:app:v1"], 30)
    assert not await a.cache_fill("tag:app:v1", stamp, b"sha256:old", 30)
    [(value, stamp)] = await b.cache_lookup(["tag:app:v1"])
    assert value is None
    assert await b.cache_fill("tag:app:v1", stamp, b"sha256:new", 30)
    assert (await a.cache_lookup(["tag:app:v1"]))[0][0] == b"sha256:new"


@pytest_twisted.ensureDeferred
async def test_a_new_epoch_hides_every_entry_stored_before(node):
    a, b = node(), node()
    [(_, stamp)] = await a.cache_lookup(["blob:sha256:aa"])
    assert await a.cache_fill("blob:sha256:aa", stamp, b"42", 30)
    await b.cache_new_epoch("b", 30)
    [(value, newer)] = await a.cache_lookup(["blob:sha256:aa"])
    assert value is None
    assert not await a.cache_fill("blob:sha256:aa", stamp, b"42", 30)  # stamped before
    assert await a.cache_fill("blob:sha256:aa", newer, b"42", 30)
    assert (await b.cache_lookup(["blob:sha256:aa"]))[0][0] == b"42"


@pytest_twisted.ensureDeferred
async def test_a_member_that_stops_renewing_ends_the_epoch(node):
    """A node cut off from the state may have forgotten nothing of what it
    wrote since: once its membership expires, no entry stored before is
    served."""
    a, b = node(), node()
    await a.cache_join("a", 0.2)
    [(_, stamp)] = await b.cache_lookup(["tag:app:v1"])
    assert await b.cache_fill("tag:app:v1", stamp, b"sha256:aa", 30)

    async def hidden():
        return (await b.cache_lookup(["tag:app:v1"]))[0][0] is None

    await until(hidden)


def test_the_in_process_cache_is_bounded_and_stays_correct_when_it_evicts():
    """Entries beyond the bound go, least recently stored first; a stamp
    taken before an evicted entry was forgotten must still be refused."""
    state = MemorySharedState(reactor=reactor)
    state.max_cache_entries = 2
    [(_, stamp)] = state.cache_lookup(["x"]).result
    state.cache_forget(["x"], 30)  # a write
    for name in ("y", "z"):  # pushes x's record out
        state.cache_forget([name], 30)
    assert len(state._cache) == 2
    assert state.cache_fill("x", stamp, b"old", 30).result is False


def test_no_interleaving_lets_a_fill_store_what_storage_no_longer_holds():
    """Readers look up, read storage and fill; writers write storage and
    forget; the bound evicts; epochs begin: in every order hypothesis
    finds, a hit is what storage holds."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    steps = st.lists(
        st.tuples(
            st.sampled_from(["lookup", "read", "fill", "write", "epoch"]),
            st.integers(0, 2),  # reader or key
        ),
        max_size=60,
    )

    @settings(max_examples=1000, deadline=None)
    @given(steps)
    def run(steps):
        state = MemorySharedState(reactor=reactor)
        state.max_cache_entries = 1
        storage = {0: 0, 1: 0, 2: 0}
        readers = {}  # reader -> (key, stamp, value read or None)
        for number, (action, n) in enumerate(steps):
            key = f"k{n}"
            if action == "lookup":
                [(value, stamp)] = state.cache_lookup([key]).result
                if value is not None:
                    assert int(value) == storage[n], (key, value, storage)
                readers[n] = (n, stamp, None)
            elif action == "read" and n in readers:
                k, stamp, _ = readers[n]
                readers[n] = (k, stamp, storage[k])
            elif action == "fill" and n in readers and readers[n][2] is not None:
                k, stamp, value = readers.pop(n)
                state.cache_fill(f"k{k}", stamp, str(value).encode(), 30)
            elif action == "write":
                storage[n] = number + 1
                state.cache_forget([key], 30)
            elif action == "epoch":
                state.cache_new_epoch("m", 30)
        for n, held in storage.items():
            [(value, _)] = state.cache_lookup([f"k{n}"]).result
            assert value is None or int(value) == held, (n, value, storage)

    run()


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

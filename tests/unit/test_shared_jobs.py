"""Scheduled jobs across nodes (registryd.shared.jobs) on a real
redis-server: one node at a time, once per interval, paused while Redis
is away, alone when there is no Redis."""

import pytest_twisted
from twisted.internet import defer, reactor

from registryd.shared.jobs import JobLeases
from registryd.shared.memory import MemorySharedState
from tests.redis_server import redis_state


async def until(predicate, timeout=30.0):
    import time

    from twisted.internet import task

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_one_node_runs_a_due_job_and_the_others_skip_it(redis_server):
    states = [
        redis_state(redis_server, dial_timeout=0.5, read_timeout=0.5, write_timeout=0.5)
        for _ in range(3)
    ]
    nodes = [JobLeases(state, reactor) for state in states]
    try:
        gate, started = defer.Deferred(), []

        async def work(label):
            started.append(label)
            await gate

        running = [
            defer.ensureDeferred(node.run("garbage collection", 3600, lambda n=n: work(n)))
            for n, node in enumerate(nodes)
        ]
        finished = []
        for run in running:
            run.addBoth(lambda result: finished.append(True) or result)
        # the three are due at once: one takes the lease, two skip at once
        await until(lambda: len(started) == 1 and len(finished) == 2)
        gate.callback(None)
        await defer.gatherResults(running)
        # done for this interval: due again a moment later, nobody runs it
        for node in nodes:
            await node.run("garbage collection", 3600, lambda: work("again"))
        assert len(started) == 1
        assert sum(len(node.skipped) for node in nodes) == 5
        # other jobs have their own leases
        await nodes[2].run("upload purging", 3600, lambda: work("purge"))
        assert started[-1] == "purge"
        # Redis away: scheduled jobs pause, they do not fail
        redis_server.stop()
        await nodes[0].run("retention", 3600, lambda: work("while away"))
        assert "while away" not in started and nodes[0].skipped[-1] == "retention"
    finally:
        for state in states:
            state._stop_pool()


@pytest_twisted.ensureDeferred
async def test_one_node_without_redis_runs_every_job():
    leases = JobLeases(MemorySharedState(reactor))
    ran = []

    async def work():
        ran.append(True)

    for _ in range(3):
        await leases.run("garbage collection", 3600, work)
    assert ran == [True] * 3

"""SerialWorker (bursts, order, cancellation, drain) and BlockingExecutor."""

import threading
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from registryd.runtime.threads import BlockingExecutor, SerialWorker, WorkerThreads
from tests.support import logged_failures  # noqa: F401 (a fixture)


@pytest_twisted.ensureDeferred
async def test_serial_worker_runs_in_order_one_at_a_time():
    worker = SerialWorker()
    seen = []
    running = []

    def step(n):
        running.append(n)
        assert len(running) == 1, "two items ran at once"
        time.sleep(0.001)
        seen.append(n)
        running.remove(n)
        return n * 2

    results = [worker.submit(step, n) for n in range(50)]
    assert worker.busy
    values = [await result for result in results]
    assert values == [n * 2 for n in range(50)]
    assert seen == list(range(50))
    await worker.drain()
    assert not worker.busy


class _CountingPool:
    """The reactor's thread pool, counting hand-offs."""

    def __init__(self, pool):
        self.pool = pool
        self.handoffs = 0

    def callInThread(self, function, *args, **kwargs):
        self.handoffs += 1
        self.pool.callInThread(function, *args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_serial_worker_runs_queued_items_in_bursts():
    from twisted.internet import reactor

    pool = _CountingPool(reactor.getThreadPool())
    worker = SerialWorker(reactor, pool)
    worker.burst = 4
    results = [worker.submit(time.sleep, 0.002) for _ in range(10)]
    for result in results:
        await result
    # One hand-off per burst of up to 4 queued items, not one per item.
    assert pool.handoffs == 3


@pytest_twisted.ensureDeferred
async def test_serial_worker_errors_reach_the_caller_and_later_items_still_run():
    worker = SerialWorker()

    def fail():
        raise ValueError("boom")

    first = worker.submit(fail)
    second = worker.submit(lambda: "fine")
    with pytest.raises(ValueError):
        await first
    assert await second == "fine"


@pytest_twisted.ensureDeferred
async def test_serial_worker_cancelled_work_still_runs_and_drain_waits_for_it():
    from twisted.internet import defer

    worker = SerialWorker()
    gate = threading.Event()
    done = []

    def slow():
        gate.wait(5)
        done.append("slow")

    result = worker.submit(slow)
    later = worker.submit(done.append, "later")
    result.cancel()
    with pytest.raises(defer.CancelledError):
        await result
    draining = worker.drain()
    assert not draining.called
    gate.set()
    await draining
    await later
    assert done == ["slow", "later"]


@pytest_twisted.ensureDeferred
async def test_blocking_executor_returns_results_and_errors():
    executor = BlockingExecutor(max_threads=2)
    assert await executor.run(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        await executor.run(lambda: 1 / 0)


@pytest_twisted.ensureDeferred
async def test_blocking_executor_runs_at_most_max_threads_calls_at_once():
    from twisted.internet import defer

    executor = BlockingExecutor(max_threads=3)
    lock = threading.Lock()
    active = [0]
    peak = [0]

    def call():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1

    await defer.gatherResults([executor.run(call) for _ in range(12)])
    assert peak[0] == 3
    assert executor.threads <= 3


@pytest_twisted.ensureDeferred
async def test_blocking_executor_ignores_results_of_cancelled_calls():
    from twisted.internet import defer

    executor = BlockingExecutor(max_threads=1)
    gate = threading.Event()
    ran = []

    def call():
        gate.wait(5)
        ran.append(True)

    result = executor.run(call)
    result.cancel()
    with pytest.raises(defer.CancelledError):
        await result
    gate.set()
    # The call still ran; a later call is served normally.
    assert await executor.run(lambda: "next") == "next"
    assert ran == [True]


@pytest_twisted.ensureDeferred
async def test_blocking_executor_threads_end_when_idle():
    from twisted.internet import reactor, task

    executor = BlockingExecutor(max_threads=4)
    executor.worker_threads.idle_timeout = 0.05
    from twisted.internet import defer

    await defer.gatherResults([executor.run(time.sleep, 0.01) for _ in range(4)])
    assert executor.threads >= 1
    for _ in range(100):
        if executor.threads == 0:
            break
        await task.deferLater(reactor, 0.02, lambda: None)
    assert executor.threads == 0
    assert await executor.run(lambda: "again") == "again"


@pytest_twisted.ensureDeferred
async def test_serial_worker_runs_in_registryds_threads_by_default():
    """Without a pool, a SerialWorker hands work to registryd's own
    :class:`WorkerThreads` (one C-level queue put), not Twisted's pool."""
    worker = SerialWorker()
    name = await worker.submit(lambda: threading.current_thread().name)
    assert name == "registryd-serial"


@pytest_twisted.ensureDeferred
async def test_worker_threads_survive_a_failing_call(logged_failures):  # noqa: F811
    """An exception escaping a call is logged; the thread takes the next."""
    from twisted.internet import reactor

    threads = WorkerThreads(max_threads=1, name="registryd-test")
    done = defer.Deferred()

    def fail():
        raise ValueError("boom")

    threads.callInThread(fail)
    threads.callInThread(lambda: reactor.callFromThread(done.callback, "next ran"))
    assert await done == "next ran"
    assert threads.threads == 1
    assert [event["log_failure"].type for event in logged_failures] == [ValueError]

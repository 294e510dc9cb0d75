"""Pull times: the storage record merges rather than overwrites (also when
another writer replaces it between a write and its read-back), hostile
record contents read as empty, and the recorder counts in memory, flushes
in batches, keeps what a failed flush could not write, and flushes when
its service stops."""

import json

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from registryd.digest import Digest
from registryd.lifecycle.pulls import PullFlushing, PullRecorder
from registryd.storage import _paths as paths  # to plant what another node or writer leaves
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.errors import StorageError
from registryd.storage.registry import Registry
from tests.support import in_reactor, run_examples

DIGEST = Digest.of(b"manifest")


class InterferingDriver(InMemoryDriver):
    """After each of the first ``times`` writes of a pull record, another
    writer replaces it with its own stale copy, as a second node would."""

    def __init__(self, stale, times=1):
        super().__init__()
        self.stale = stale
        self.times = times

    def _put_content(self, path, content):
        super()._put_content(path, content)
        if path.endswith("/pulls.json") and self.times:
            self.times -= 1
            super()._put_content(path, self.stale)


@pytest_twisted.ensureDeferred
async def test_merge_keeps_the_latest_time_of_each_entry():
    records = Registry(InMemoryDriver()).repository("team/app").pulls
    assert await records.read() == ({}, {})
    assert await records.merge({"v1": 10.0, "v2": 20.0}, {str(DIGEST): 15.0})
    assert await records.merge({"v1": 5.0, "v3": 30.0}, {})
    assert await records.read() == ({"v1": 10.0, "v2": 20.0, "v3": 30.0}, {str(DIGEST): 15.0})


@pytest_twisted.ensureDeferred
async def test_merge_survives_another_writer_replacing_the_record():
    stale = json.dumps({"tags": {"other": 99.0}, "manifests": {}}).encode()
    driver = InterferingDriver(stale, times=2)
    records = Registry(driver).repository("team/app").pulls
    await driver.put_content(paths.pull_records("team/app"), stale)
    assert await records.merge({"v1": 10.0}, {})
    assert await records.read() == ({"other": 99.0, "v1": 10.0}, {})


RECORDS = st.binary(max_size=200) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["tags", "manifests", "v1"]) | st.text(max_size=4), children, max_size=3
        )
    ),
    max_leaves=12,
).map(lambda value: json.dumps(value).encode())


@pytest_twisted.ensureDeferred
async def test_any_stored_record_reads_as_times_or_empty():
    async def one(content):
        driver = InMemoryDriver()
        await driver.put_content(paths.pull_records("a"), content)
        records = Registry(driver).repository("a").pulls
        tags, manifests = await records.read()
        for entries in (tags, manifests):
            assert all(isinstance(k, str) and isinstance(v, float) for k, v in entries.items())
        assert await records.merge({"v1": 1.0}, {})

    @settings(max_examples=100, deadline=None)
    @given(RECORDS)
    def check(content):
        in_reactor(one, content)

    await run_examples(check)


@pytest_twisted.ensureDeferred
async def test_recorder_counts_in_memory_and_flushes_in_one_write_per_repository():
    driver = InMemoryDriver()
    registry = Registry(driver)
    clock = Clock()
    clock.advance(1000)
    recorder = PullRecorder(registry, clock)
    recorder.record("team/app", "v1", DIGEST)
    clock.advance(5)
    recorder.record("team/app", None, DIGEST)
    recorder.record("team/other", "latest", DIGEST)
    assert recorder.pending("team/app") == ({"v1": 1000.0}, {str(DIGEST): 1005.0})
    assert await registry.repository("team/app").pulls.read() == ({}, {})  # nothing written yet
    await recorder.flush()
    assert recorder.pending("team/app") == ({}, {})
    assert await registry.repository("team/app").pulls.read() == (
        {"v1": 1000.0},
        {str(DIGEST): 1005.0},
    )
    assert await registry.repository("team/other").pulls.read() == (
        {"latest": 1005.0},
        {str(DIGEST): 1005.0},
    )


class RefusingDriver(InMemoryDriver):
    refuse = True

    def _put_content(self, path, content):
        if self.refuse and path.endswith("/pulls.json"):
            raise StorageError("storage full")
        super()._put_content(path, content)


@pytest_twisted.ensureDeferred
async def test_a_failed_flush_keeps_its_entries_and_memory_stays_bounded():
    driver = RefusingDriver()
    registry = Registry(driver)
    clock = Clock()
    recorder = PullRecorder(registry, clock, max_pending=3)
    recorder.record("a", "v1", DIGEST)
    await recorder.flush()
    assert recorder.pending("a") == ({"v1": 0.0}, {str(DIGEST): 0.0})
    recorder.record("a", "v2", DIGEST)
    recorder.record("a", "v3", DIGEST)  # over the bound: not counted
    assert recorder.pending("a") == ({"v1": 0.0, "v2": 0.0}, {str(DIGEST): 0.0})
    driver.refuse = False
    await recorder.flush()
    assert await registry.repository("a").pulls.read() == (
        {"v1": 0.0, "v2": 0.0},
        {str(DIGEST): 0.0},
    )


@pytest_twisted.ensureDeferred
async def test_the_flushing_service_writes_on_its_interval_and_when_it_stops():
    registry = Registry(InMemoryDriver())
    clock = Clock()
    recorder = PullRecorder(registry, clock)
    service = PullFlushing(recorder, interval=5, clock=clock)
    service.startService()
    recorder.record("a", "v1", DIGEST)
    clock.advance(5)
    assert (await registry.repository("a").pulls.read())[0] == {"v1": 0.0}
    recorder.record("a", "v2", DIGEST)
    await service.stopService()
    assert (await registry.repository("a").pulls.read())[0] == {"v1": 0.0, "v2": 5.0}


@pytest.mark.parametrize("concurrent", [2, 5])
@pytest_twisted.ensureDeferred
async def test_flushes_called_together_run_one_after_another(concurrent):
    registry = Registry(InMemoryDriver())
    recorder = PullRecorder(registry, Clock())
    for index in range(concurrent):
        recorder.record("a", f"v{index}", DIGEST)
    await defer.gatherResults([recorder.flush() for _ in range(concurrent)])
    assert len((await registry.repository("a").pulls.read())[0]) == concurrent

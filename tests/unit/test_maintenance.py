"""Upload purging, the maintenance timers and the read-only switch."""

import time

import pytest
import pytest_twisted
from twisted.internet import defer, task

from registryd.config import Config, parse_config
from registryd.digest import Digest
from registryd.ops.maintenance import (
    GCAlreadyRunning,
    Maintenance,
    PeriodicService,
    list_uploads,
    parse_started_at,
    purge_uploads,
)
from registryd.storage import _paths as paths  # to plant states another registry may leave
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.errors import PathNotFound
from registryd.storage.registry import Registry

DAY = 86400.0


@pytest.fixture
def registry():
    return Registry(InMemoryDriver())


def test_parse_started_at():
    assert parse_started_at("2026-11-26T20:25:02Z") == 1795724702.0
    # Go's RFC3339Nano, and an offset.
    assert parse_started_at("2026-11-26T20:25:02.123456789Z") == pytest.approx(1795724702.123457)
    assert parse_started_at("2026-11-26T21:25:02+01:00") == 1795724702.0
    assert parse_started_at("yesterday") is None


async def _upload(registry, name, started_at=None, data=b""):
    async with await registry.repository(name).uploads.start() as upload:
        pass
    if started_at is not None:
        await registry.driver.put_content(
            paths.upload_started_at(name, upload.id), started_at.encode()
        )
    if data:
        await registry.driver.put_content(paths.upload_data(name, upload.id), data)
    return upload


@pytest_twisted.ensureDeferred
async def test_purge_removes_only_old_uploads(registry):
    old = await _upload(registry, "app", "2020-01-01T00:00:00Z", b"x" * 10)
    also_old = await _upload(registry, "nested/app", "2020-06-01T00:00:00Z")
    fresh = await _upload(registry, "app")
    stray = paths.upload_dir("app", "not-an-upload-id") + "/data"
    await registry.driver.put_content(stray, b"?")

    listed = {(u.repository, u.id): u for u in await list_uploads(registry)}
    assert set(listed) == {("app", old.id), ("nested/app", also_old.id), ("app", fresh.id)}
    assert listed[("app", old.id)].size == 10

    dry = await purge_uploads(registry, 7 * DAY, dry_run=True)
    assert {u.id for u in dry.removed} == {old.id, also_old.id}
    assert len(await list_uploads(registry)) == 3

    report = await purge_uploads(registry, 7 * DAY)
    assert {u.id for u in report.removed} == {old.id, also_old.id} and report.kept == 1
    assert [u.id for u in await list_uploads(registry)] == [fresh.id]
    assert await registry.driver.get_content(stray) == b"?"  # never touched
    assert "removed 2 uploads (10 bytes)" in report.summary()


@pytest_twisted.ensureDeferred
async def test_purge_keeps_an_upload_this_process_is_writing(registry):
    upload = await _upload(registry, "app", "2020-01-01T00:00:00Z")
    async with registry.upload_lock(upload.id):
        report = await purge_uploads(registry, DAY)
    assert report.removed == [] and report.kept == 1
    assert (await purge_uploads(registry, DAY)).removed[0].id == upload.id


@pytest_twisted.ensureDeferred
async def test_an_upload_without_startedat_is_aged_by_its_data(registry):
    upload = await _upload(registry, "app", data=b"abc")
    await registry.driver.delete(paths.upload_started_at("app", upload.id))
    report = await purge_uploads(registry, DAY, clock=lambda: time.time() + 2 * DAY)
    assert [u.id for u in report.removed] == [upload.id]
    with pytest.raises(PathNotFound):
        await registry.driver.stat(paths.upload_dir("app", upload.id))


def test_periodic_service_runs_on_schedule_and_survives_failures():
    clock = task.Clock()
    calls = []

    async def work():
        calls.append(clock.seconds())
        if len(calls) == 2:
            raise RuntimeError("boom")

    service = PeriodicService("test", 10, work, first_delay=3, clock=clock)
    service.startService()
    clock.advance(2)
    assert calls == []
    clock.advance(1)
    assert calls == [3]
    clock.pump([10, 10])
    assert calls == [3, 13, 23]  # the failure at 13 did not stop it
    assert service.runs == 3
    service.stopService()
    clock.advance(100)
    assert calls == [3, 13, 23]


def test_periodic_service_stop_waits_for_a_running_pass():
    clock = task.Clock()
    release = defer.Deferred()

    async def work():
        await release

    service = PeriodicService("slow", 5, work, first_delay=0, clock=clock)
    service.startService()
    clock.advance(0)
    stopped = service.stopService()
    assert stopped is not None and not stopped.called
    release.callback(None)
    assert stopped.called


def _config(text):
    import yaml

    return parse_config(yaml.safe_load("version: 0.1\nstorage:\n  inmemory:\n" + text))


def test_timers_follow_the_configuration(registry):
    # Distribution's default: purging on, first pass within the hour.
    services = Maintenance(registry, Config()).services(clock=task.Clock(), rng=lambda: 0.5)
    assert [(s.name, s.interval, s.first_delay) for s in services] == [
        ("upload purging", DAY, 1800.0)
    ]
    config = _config("  maintenance:\n    uploadpurging: {enabled: false}\ngc: {interval: 6h}\n")
    services = Maintenance(registry, config).services(clock=task.Clock())
    assert [(s.name, s.interval, s.first_delay) for s in services] == [
        ("garbage collection", 6 * 3600.0, 6 * 3600.0)
    ]
    assert (
        Maintenance(
            registry, _config("  maintenance:\n    uploadpurging: {enabled: false}\n")
        ).services()
        == []
    )


@pytest_twisted.ensureDeferred
async def test_scheduled_purge_uses_the_configured_age(registry):
    old = await _upload(registry, "app", "2020-01-01T00:00:00Z")
    fresh = await _upload(registry, "app")
    config = _config("  maintenance:\n    uploadpurging: {age: 1h, interval: 1m, dryrun: false}\n")
    maintenance = Maintenance(registry, config)
    clock = task.Clock()
    (purger,) = maintenance.services(clock=clock, rng=lambda: 0.0)
    purger.startService()
    clock.advance(0)
    purger.stopService()
    assert [u.id for u in maintenance.last_purge.removed] == [old.id]
    assert [u.id for u in await list_uploads(registry)] == [fresh.id]


@pytest_twisted.ensureDeferred
async def test_one_collection_at_a_time(registry):
    maintenance = Maintenance(registry, Config())
    gate = defer.Deferred()

    async def wait():
        await gate

    first = defer.ensureDeferred(maintenance.gc(dry_run=True, before_sweep=wait))
    assert maintenance.gc_running
    with pytest.raises(GCAlreadyRunning):
        await maintenance.gc()
    gate.callback(None)
    report = await first
    assert report.dry_run and maintenance.last_gc is report and not maintenance.gc_running


def test_read_only_switch(registry):
    maintenance = Maintenance(registry, _config("  maintenance:\n    readonly: {enabled: true}\n"))
    assert maintenance.set_read_only(True) is True and registry.read_only
    assert maintenance.set_read_only(False) is False and not registry.read_only


@pytest_twisted.ensureDeferred
async def test_online_runs_are_counted_in_metrics(registry):
    from registryd.ops import metrics

    maintenance = Maintenance(registry, Config())
    await _upload(registry, "app", "2020-01-01T00:00:00Z")
    orphan = b"x" * 123
    await registry.driver.put_content(paths.blob_data(Digest.of(orphan)), orphan)
    runs = metrics.sample("registryd_gc_runs_total", result="ok")
    freed = metrics.sample("registryd_gc_freed_bytes_total")
    purged = metrics.sample("registryd_uploads_purged_total")
    await maintenance.gc(dry_run=False, grace_period=0)
    await maintenance.purge_uploads()
    assert metrics.sample("registryd_gc_runs_total", result="ok") == runs + 1
    assert metrics.sample("registryd_gc_freed_bytes_total") == freed + 123
    assert metrics.sample("registryd_uploads_purged_total") == purged + 1


@pytest_twisted.ensureDeferred
async def test_scheduled_collection_runs_every_interval(registry):
    orphan = b"y" * 50
    await registry.driver.put_content(paths.blob_data(Digest.of(orphan)), orphan)
    config = _config(
        "  maintenance:\n    uploadpurging: {enabled: false}\ngc: {interval: 1h, graceperiod: 0s}\n"
    )
    maintenance = Maintenance(registry, config)
    clock = task.Clock()
    (timer,) = maintenance.services(clock=clock)
    timer.startService()
    clock.advance(3599)
    assert maintenance.last_gc is None
    clock.advance(1)
    assert maintenance.last_gc.blobs_removed == [(str(Digest.of(orphan)), 50)]
    assert not maintenance.last_gc.dry_run
    clock.advance(3600)
    assert timer.runs == 2 and maintenance.last_gc.blobs_removed == []
    timer.stopService()

"""Maintenance of a running registry: upload purging, scheduled garbage
collection, and the read-only switch.

:class:`Maintenance` is the one object the timers and the manhole share:
it runs at most one garbage collection at a time, remembers the last
reports, and flips ``Registry.read_only``.  The timers are plain Twisted
services (:class:`PeriodicService`) made by :meth:`Maintenance.services`,
children of ``RegistryService``.

Upload purging follows Distribution (``storage.maintenance.uploadpurging``):
an upload directory whose ``startedat`` is older than ``age`` is removed,
``interval`` after the previous pass, the first pass after a random delay
of up to an hour (so a fleet restarted together does not purge together).
An upload this process is writing or completing right now is never
removed, whatever its age.
"""

import random
import time

import attr
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from registryd.ops.gc import collect_garbage
from registryd.storage.uploads import UploadInfo, parse_started_at

__all__ = ["Maintenance", "UploadInfo", "list_uploads", "parse_started_at", "purge_uploads"]

log = Logger()

#: Distribution's largest start-up delay for upload purging.
MAX_FIRST_PURGE_DELAY = 3600.0


async def list_uploads(registry):
    """Every upload directory in storage, as :class:`UploadInfo` records, sorted."""
    found = []
    for name in await registry.repositories_with_uploads():
        found += await registry.stored_repository(name).uploads.enumerate()
    return found


@attr.s
class PurgeReport:
    dry_run = attr.ib(default=False)
    older_than = attr.ib(default=0.0)
    #: [UploadInfo] removed (or, in a dry run, that would be)
    removed: list = attr.ib(factory=list)
    kept = attr.ib(default=0)

    def summary(self):
        verb = "would remove" if self.dry_run else "removed"
        size = sum(upload.size for upload in self.removed)
        return (
            f"upload purging: {verb} {len(self.removed)} uploads ({size} bytes) older "
            f"than {self.older_than:g}s; {self.kept} kept"
        )

    def __repr__(self):
        prefix = "would remove" if self.dry_run else "removed"
        lines = [f"{prefix} upload {u.repository}/{u.id} ({u.size} bytes)" for u in self.removed]
        return "\n".join(lines + [self.summary()])


async def purge_uploads(registry, older_than, dry_run=False, clock=time.time):
    """Remove uploads started more than ``older_than`` seconds ago."""
    report = PurgeReport(dry_run=dry_run, older_than=older_than)
    now = clock()
    for upload in await list_uploads(registry):
        if upload.active or now - upload.started_at <= older_than:
            report.kept += 1
            continue
        if not dry_run:
            if registry.upload_lock.in_use(upload.id):
                report.kept += 1  # taken up while we were listing
                continue
            if not await registry.vacuum.remove_upload(upload.repository, upload.id):
                continue
        report.removed.append(upload)
    log.info("{summary}", summary=report.summary())
    return report


class PeriodicService(Service):
    """Runs ``work`` (returning a Deferred or coroutine) every ``interval``
    seconds, the first time after ``first_delay``; a run that fails is
    logged and the schedule goes on.  A run still going when the service
    stops is waited for."""

    def __init__(self, name, interval, work, first_delay=None, clock=None):
        self.setName(name)
        self.interval = interval
        self.work = work
        self.first_delay = interval if first_delay is None else first_delay
        self._clock = clock
        self._loop = None
        self._first = None
        self._running = None
        self.runs = 0

    @property
    def clock(self):
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self._run)
        self._loop.clock = self.clock
        self._first = self.clock.callLater(self.first_delay, self._start_loop)

    def _start_loop(self):
        self._first = None
        self._loop.start(self.interval, now=True)

    async def _run_work(self):
        try:
            await self.work()
        except Exception:
            log.failure("{name} failed", name=self.name)
        finally:
            self.runs += 1

    def _run(self):
        self._running = defer.ensureDeferred(self._run_work())
        return self._running

    def stopService(self):
        super().stopService()
        if self._first is not None and self._first.active():
            self._first.cancel()
        self._first = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        running, self._running = self._running, None
        if running is not None and not running.called:
            return running
        return None


class GCAlreadyRunning(Exception):
    """A garbage collection is already under way in this process."""


class Maintenance:
    """What the maintenance timers and the manhole do to one registry."""

    def __init__(self, registry, config, clock=time.time, jobs=None):
        """``jobs``: the nodes' :class:`registryd.shared.jobs.JobLeases`, which
        lets one node at a time run each timer's work; None: this node
        runs them all (alone)."""
        self.registry = registry
        self.config = config
        self.clock = clock
        self.jobs = jobs
        self.gc_running = False
        self.last_gc = None
        self.last_purge = None

    # garbage collection

    async def gc(self, dry_run=None, delete_untagged=None, grace_period=None, before_sweep=None):
        """One online collection with ``config.gc``'s settings unless given."""
        settings = self.config.gc
        if self.gc_running:
            raise GCAlreadyRunning("a garbage collection is already running")
        from registryd.ops import metrics

        self.gc_running = True
        try:
            with metrics.gc_run():
                report = await collect_garbage(
                    self.registry,
                    dry_run=settings.dry_run if dry_run is None else dry_run,
                    delete_untagged=(
                        settings.delete_untagged if delete_untagged is None else delete_untagged
                    ),
                    grace_period=settings.grace_period if grace_period is None else grace_period,
                    clock=self.clock,
                    before_sweep=before_sweep,
                )
        finally:
            self.gc_running = False
        if not report.dry_run:
            metrics.GC_BLOBS_DELETED.inc(len(report.blobs_removed))
            metrics.GC_MANIFESTS_DELETED.inc(len(report.manifests_removed))
            metrics.GC_BYTES_FREED.inc(report.bytes_reclaimed)
        self.last_gc = report
        return report

    # uploads

    async def purge_uploads(self, older_than=None, dry_run=None):
        settings = self.config.storage.maintenance.upload_purging
        report = await purge_uploads(
            self.registry,
            settings.age if older_than is None else older_than,
            dry_run=settings.dry_run if dry_run is None else dry_run,
            clock=self.clock,
        )
        if not report.dry_run:
            from registryd.ops import metrics

            metrics.UPLOADS_PURGED.inc(len(report.removed))
        self.last_purge = report
        return report

    # read-only mode

    def set_read_only(self, on):
        self.registry.read_only = bool(on)
        log.info("read-only mode {state}", state="on" if on else "off")
        return self.registry.read_only

    # timers

    def scheduled(self, name, interval, work):
        """``work`` as a timer runs it: through ``jobs`` when the nodes share them."""
        if self.jobs is None:
            return work

        async def leased():
            return await self.jobs.run(name, interval, work)

        return leased

    def services(self, clock=None, rng=random.random):
        """The timers ``config`` asks for, as services (not yet started)."""
        found = []
        purging = self.config.storage.maintenance.upload_purging
        if purging.enabled:
            delay = rng() * min(MAX_FIRST_PURGE_DELAY, purging.interval)
            found.append(
                PeriodicService(
                    "upload purging",
                    purging.interval,
                    self.scheduled("upload purging", purging.interval, self.purge_uploads),
                    first_delay=delay,
                    clock=clock,
                )
            )
        if self.config.gc.interval:

            async def scheduled_gc():
                if not self.gc_running:
                    await self.gc()

            found.append(
                PeriodicService(
                    "garbage collection",
                    self.config.gc.interval,
                    self.scheduled("garbage collection", self.config.gc.interval, scheduled_gc),
                    clock=clock,
                )
            )
        return found

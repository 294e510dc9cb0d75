"""Removing cached manifests once ``proxy.ttl`` passed since they were fetched.

Distribution keeps a scheduler state file for this; registryd keeps a
fetch record per cached manifest in storage
(``registryd.storage.fetch_records``), written before the manifest, so
every cached manifest has one (a record whose manifest never got written
is removed by the pass after its TTL; an unreadable record is dated by the
revision link's modification time).

Expiry removes the manifest revision, the tags that point at it, its
referrers entry and the record, so the next pull fetches from upstream
again; the blobs it referenced are then unreferenced and the garbage
collector (``registryd.ops.gc``) reclaims them.
"""

import time

import attr
from twisted.logger import Logger

from registryd import errors

log = Logger()


@attr.s
class ExpiryReport:
    ttl = attr.ib()
    #: [(repository, digest string, [tags removed])]
    removed: list = attr.ib(factory=list)
    kept = attr.ib(default=0)

    def summary(self):
        return (
            f"proxy cache expiry: removed {len(self.removed)} manifests fetched more than "
            f"{self.ttl:g}s ago; {self.kept} kept"
        )


async def _fetched_at(registry, repository, digest):
    record = await registry.fetch_records.read(repository.name, digest)
    if record is not None:
        return record[0]
    return await repository.manifests.revision_modified(digest)  # None: a stray record


async def _remove(registry, repository, digest):
    """Remove a cached manifest as a delete by digest would (whatever
    storage.delete says: this is the cache's own housekeeping), and its
    record; the tags removed with it."""
    manifests = repository.manifests
    subject = None
    try:
        subject = (await manifests.get(str(digest))).manifest.subject
    except errors.RegistryError:
        pass  # its data is gone already: the links still go
    removed_tags = []
    await manifests.remove(digest, subject, removed_tags)
    await registry.vacuum.remove_fetch_record(repository.name, digest)
    return removed_tags


async def expire(registry, ttl, clock=time.time):
    """Remove every cached manifest fetched more than ``ttl`` seconds ago."""
    report = ExpiryReport(ttl)
    now = clock()
    for name in await registry.repositories_with_fetch_records():
        repository = registry.stored_repository(name)
        for digest in await registry.fetch_records.enumerate(name):
            fetched = await _fetched_at(registry, repository, digest)
            if fetched is not None and now - fetched <= ttl:
                report.kept += 1
                continue
            tags = await _remove(registry, repository, digest)
            report.removed.append((name, str(digest), tags))
    log.info("{summary}", summary=report.summary())
    return report

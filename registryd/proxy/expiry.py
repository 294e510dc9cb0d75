"""When cached manifests were fetched, and their removal once ``proxy.ttl`` passed.

Distribution keeps a scheduler state file for this; registryd keeps one
small record per cached manifest under its repository, in the layout's
style (a ``_``-directory is never taken for a repository name, and the
collector ignores it)::

    repositories/<name>/_proxy/manifests/<alg>/<hex>/fetched
        {"fetchedAt": "2026-11-26T20:25:02Z", "mediaType": "..."}

The record also keeps the media type upstream served the manifest with,
which the cache serves it with again.  It is written before the manifest,
so every cached manifest has one (a record whose manifest never got
written is removed by the pass after its TTL; an unreadable record is
dated by the revision link's modification time).

Expiry removes the manifest revision, the tags that point at it, its
referrers entry and the record, so the next pull fetches from upstream
again; the blobs it referenced are then unreferenced and the garbage
collector (``registryd.admin.gc``) reclaims them.
"""

import json
import time
from datetime import datetime, timezone

import attr
from twisted.logger import Logger

from registryd import errors
from registryd.admin.maintenance import parse_started_at
from registryd.admin.walk import list_or_empty
from registryd.digest import Digest
from registryd.storage import paths
from registryd.storage.errors import PathNotFound

log = Logger()


async def write_record(driver, name, digest, media_type, now):
    moment = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.dumps({"fetchedAt": moment, "mediaType": media_type}).encode("utf-8")
    await driver.put_content(paths.proxy_record(name, digest), body)


async def read_record(driver, name, digest):
    """C{(fetched at, media type)}; None when there is no readable record."""
    try:
        document = json.loads(await driver.get_content(paths.proxy_record(name, digest)))
        fetched = parse_started_at(document["fetchedAt"])
        media_type = document.get("mediaType")
    except (PathNotFound, ValueError, KeyError, TypeError, AttributeError):
        return None
    if fetched is None:
        return None
    return fetched, media_type if isinstance(media_type, str) else None


@attr.s
class ExpiryReport:
    ttl = attr.ib()
    #: [(repository, digest string, [tags removed])]
    removed = attr.ib(factory=list)
    kept = attr.ib(default=0)

    def summary(self):
        return (f"proxy cache expiry: removed {len(self.removed)} manifests fetched more than "
                f"{self.ttl:g}s ago; {self.kept} kept")


async def _fetched_at(driver, name, digest):
    record = await read_record(driver, name, digest)
    if record is not None:
        return record[0]
    try:
        return (await driver.stat(paths.manifest_revision_link(name, digest))).modified
    except PathNotFound:
        return None  # neither manifest nor record: a stray directory


async def _remove(registry, name, digest):
    """Remove a cached manifest as a delete by digest would (whatever
    storage.delete says: this is the cache's own housekeeping), and its
    record; the tags removed with it."""
    manifests = registry.repository(name).manifests
    subject = None
    try:
        subject = (await manifests.get(str(digest))).manifest.subject
    except errors.RegistryError:
        pass  # its data is gone already: the links still go
    removed_tags = []
    await manifests.remove(digest, subject, removed_tags)
    try:
        await registry.driver.delete(paths.proxy_record_dir(name, digest))
    except PathNotFound:
        pass
    return removed_tags


async def expire(registry, ttl, clock=time.time):
    """Remove every cached manifest fetched more than C{ttl} seconds ago."""
    report = ExpiryReport(ttl)
    driver = registry.driver
    now = clock()
    for name in await registry.repositories(markers=("_proxy",)):
        base = paths.proxy_records(name)
        for algorithm in await list_or_empty(driver, base):
            for hex_digest in await list_or_empty(driver, f"{base}/{algorithm}"):
                try:
                    digest = Digest.parse(f"{algorithm}:{hex_digest}")
                except errors.RegistryError:
                    continue
                fetched = await _fetched_at(driver, name, digest)
                if fetched is not None and now - fetched <= ttl:
                    report.kept += 1
                    continue
                tags = await _remove(registry, name, digest)
                report.removed.append((name, str(digest), tags))
    log.info("{summary}", summary=report.summary())
    return report

"""Garbage collection: mark everything manifests reference, sweep the rest.

Like Distribution's ``registry garbage-collect`` this works on storage
alone, through the storage model's enumerators (repositories, revisions,
tags, layer links, blobs) and its vacuum, so it runs offline on a stopped
registry (``registryd-gc``, ``python -m registryd gc``) and online inside
the daemon (the manhole's ``gc()``, ``gc.interval``) while pushes go on.

Mark.  In every repository, every manifest revision is a root, and so are
the blobs and child manifests it references (config, layers, index
entries, schema 1 ``blobSum``s); a manifest's ``subject`` is not a
reference: a referrer does not keep its subject alive.  With
``delete_untagged`` only the manifests that a tag points at are roots,
plus, transitively, the child manifests of kept indexes and the referrers
(manifests whose ``subject`` is a kept manifest) -- Distribution has no
referrers and would delete an untagged signature or SBOM; registryd keeps
them with what they describe.  The other revisions are removed (revision
link, tag history entries, referrers index entry), unless they are younger
than the grace period or in use by a push.  References are read leniently
from each manifest's JSON (every ``digest``/``blobSum``), so a manifest
registryd's own parser would refuse still protects what it names: marking
too much is safe, too little is not.  Any storage error while marking
aborts the run before anything is deleted.

Sweep.  Every blob under ``blobs/`` that is not marked is removed with its
``_layers`` links in every repository (Distribution 3 removes such links;
2.8 leaves them dangling), unless

- its data, or a link to it, was written less than the grace period ago
  (a push whose manifest is not there yet: its blobs are fresh), or
- a push in this process (or on another node sharing state through Redis:
  ``registryd.storage.nodes_guard``) is using it (``registryd.storage.guard``): an
  upload that reuses a stored copy, a mount, a manifest that references
  it; a push that wants a blob while it is being deleted waits and then
  finds it gone, so it is uploaded again rather than lost.

Links left dangling by earlier runs of Distribution's collector (data gone)
are removed too, once older than the grace period.  Uploads in progress
are not blobs (their data is under ``_uploads/``) and are never touched
here; see ``registryd.ops.maintenance`` for purging stale ones.
"""

import time

import attr
from twisted.logger import Logger

from registryd import errors
from registryd.ops.walk import references_in
from registryd.storage.walking import gather_limited

log = Logger()

#: Distribution 3's default for its online collector, and a long time for
#: a push to sit between its last blob and its manifest.
DEFAULT_GRACE_PERIOD = 3600.0


@attr.s(repr=False)
class GCReport:
    """What a collection removed (or, in a dry run, would remove)."""

    dry_run = attr.ib(default=False)
    delete_untagged = attr.ib(default=False)
    grace_period = attr.ib(default=DEFAULT_GRACE_PERIOD)
    repositories = attr.ib(default=0)
    manifests_marked = attr.ib(default=0)
    blobs_marked = attr.ib(default=0)
    blobs_seen = attr.ib(default=0)
    #: [(digest, size)]
    blobs_removed: list = attr.ib(factory=list)
    #: [(repository, digest)]
    manifests_removed: list = attr.ib(factory=list)
    #: [(repository, digest the link is named by)]
    layer_links_removed: list = attr.ib(factory=list)
    #: [(digest, reason)]: unreferenced, but kept
    protected: list = attr.ib(factory=list)
    warnings: list = attr.ib(factory=list)
    started_at = attr.ib(default=None)
    duration = attr.ib(default=0.0)

    @property
    def bytes_reclaimed(self):
        return sum(size for _, size in self.blobs_removed)

    def summary(self):
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{self.repositories} repositories, {self.manifests_marked} manifests and "
            f"{self.blobs_marked} blobs marked; {verb} {len(self.blobs_removed)} blobs "
            f"({self.bytes_reclaimed} bytes), {len(self.manifests_removed)} manifests, "
            f"{len(self.layer_links_removed)} layer links; {len(self.protected)} unreferenced "
            f"blobs kept (grace period or in use); {self.duration:.2f}s"
        )

    def lines(self):
        """The report as text, one item per line, summary last."""
        prefix = "would remove" if self.dry_run else "removed"
        out = [f"warning: {warning}" for warning in self.warnings]
        out += [f"{prefix} manifest {repo}@{digest}" for repo, digest in self.manifests_removed]
        out += [f"{prefix} blob {digest} ({size} bytes)" for digest, size in self.blobs_removed]
        out += [f"{prefix} layer link {repo}@{digest}" for repo, digest in self.layer_links_removed]
        out += [f"kept blob {digest}: {reason}" for digest, reason in self.protected]
        out.append(self.summary())
        return out

    def to_dict(self):
        return {
            "dry_run": self.dry_run,
            "delete_untagged": self.delete_untagged,
            "grace_period": self.grace_period,
            "repositories": self.repositories,
            "manifests_marked": self.manifests_marked,
            "blobs_marked": self.blobs_marked,
            "blobs_seen": self.blobs_seen,
            "blobs_removed": [{"digest": d, "size": s} for d, s in self.blobs_removed],
            "bytes_reclaimed": self.bytes_reclaimed,
            "manifests_removed": [
                {"repository": r, "digest": d} for r, d in self.manifests_removed
            ],
            "layer_links_removed": [
                {"repository": r, "digest": d} for r, d in self.layer_links_removed
            ],
            "protected": [{"digest": d, "reason": why} for d, why in self.protected],
            "warnings": list(self.warnings),
            "started_at": self.started_at,
            "duration": self.duration,
        }

    def __repr__(self):
        return "\n".join(self.lines())


# --- reading the layout --------------------------------------------------------


@attr.s
class _RepositoryScan:
    repository = attr.ib()
    revisions: set = attr.ib(factory=set)
    #: tag -> digest its current link names
    tags: dict = attr.ib(factory=dict)
    #: tag -> digests in its history index
    tag_history: dict = attr.ib(factory=dict)
    #: link name digest -> digest of the data it points at
    layers: dict = attr.ib(factory=dict)
    #: manifest digest -> (references, subject)
    manifests: dict = attr.ib(factory=dict)
    keep: set = attr.ib(factory=set)
    candidates: list = attr.ib(factory=list)

    @property
    def name(self):
        return self.repository.name


class _Collector:
    def __init__(self, registry, dry_run, delete_untagged, grace_period, clock, before_sweep):
        self.registry = registry
        self.vacuum = registry.vacuum
        self.guard = registry.guard
        self.dry_run = dry_run
        self.delete_untagged = delete_untagged
        self.grace_period = grace_period
        self.clock = clock
        self.before_sweep = before_sweep
        self.marked = set()
        self.report = GCReport(
            dry_run=dry_run, delete_untagged=delete_untagged, grace_period=grace_period
        )

    def _young(self, modified):
        return self.clock() - modified < self.grace_period

    # mark

    async def _scan(self, name):
        repository = self.registry.stored_repository(name)
        scan = _RepositoryScan(repository)
        scan.revisions = set(await repository.manifests.enumerate())
        tags = await repository.tags.enumerate()
        for tag, digest in zip(tags, await gather_limited(repository.tags.get, tags)):
            if digest is not None:
                scan.tags[tag] = digest
        if self.delete_untagged:
            histories = await gather_limited(repository.tags.history, tags)
            scan.tag_history = {tag: set(history) for tag, history in zip(tags, histories)}

        async def layer(digest):
            if digest.algorithm == "sha256":
                return digest  # Distribution and registryd store these as named
            target = await repository.blobs.target(digest)
            return target or digest

        links = await repository.blobs.enumerate()
        scan.layers = dict(zip(links, await gather_limited(layer, links)))

        async def manifest(digest):
            body = await repository.manifests.content(digest)
            if body is None:
                self.report.warnings.append(f"{name}@{digest}: manifest data is missing")
                return set(), None
            try:
                return references_in(body)
            except ValueError:
                self.report.warnings.append(f"{name}@{digest}: manifest is not JSON")
                return set(), None

        revisions = sorted(scan.revisions, key=str)
        scan.manifests = dict(zip(revisions, await gather_limited(manifest, revisions)))
        return scan

    def _closure(self, scan, roots):
        """Manifests of ``scan`` kept by ``roots``: their child manifests and
        their referrers, transitively."""
        referrers = {}
        for digest, (_, subject) in scan.manifests.items():
            if subject is not None:
                referrers.setdefault(subject, []).append(digest)
        kept = set()
        queue = [root for root in roots if root in scan.revisions]
        while queue:
            digest = queue.pop()
            if digest in kept:
                continue
            kept.add(digest)
            references, _ = scan.manifests.get(digest, (set(), None))
            queue += [ref for ref in references if ref in scan.revisions]
            queue += referrers.get(digest, [])
        return kept

    async def _choose(self, scan):
        """Which manifests of ``scan`` stay (all, unless delete_untagged)."""
        if not self.delete_untagged:
            scan.keep = set(scan.revisions)
            return
        roots = set(scan.tags.values())
        keep = self._closure(scan, roots)
        untagged = sorted(scan.revisions - keep, key=str)

        async def rescued(digest):
            if await self.guard.in_use(digest):
                return True
            modified = await scan.repository.manifests.revision_modified(digest)
            return modified is not None and self._young(modified)

        extra = [d for d, young in zip(untagged, await gather_limited(rescued, untagged)) if young]
        if extra:
            keep = self._closure(scan, roots | set(extra))
        scan.keep = keep
        scan.candidates = sorted(scan.revisions - keep, key=str)

    def _mark_manifest(self, scan, digest):
        self.marked.add(digest)
        references, _ = scan.manifests.get(digest, (set(), None))
        for ref in references:
            self.marked.add(ref)
            target = scan.layers.get(ref)
            if target is not None:
                self.marked.add(target)

    # sweep

    async def _remove_manifest(self, scan, digest):
        _, subject = scan.manifests.get(digest, (set(), None))
        tags = [tag for tag, history in scan.tag_history.items() if digest in history]
        await self.vacuum.remove_manifest(scan.name, digest, tags=tags, subject=subject)

    async def _sweep_manifests(self, scans):
        async def sweep(item):
            scan, digest = item
            if self.dry_run:
                self.report.manifests_removed.append((scan.name, str(digest)))
                return
            if not await self.guard.begin_delete(digest):
                # A push took it up since marking: keep it and all it needs.
                for kept in self._closure(scan, {digest}):
                    self._mark_manifest(scan, kept)
                return
            try:
                await self._remove_manifest(scan, digest)
            finally:
                await self.guard.end_delete(digest)
            self.report.manifests_removed.append((scan.name, str(digest)))

        await gather_limited(
            sweep, [(scan, digest) for scan in scans for digest in scan.candidates]
        )
        self.report.manifests_removed.sort()

    async def _sweep_blobs(self, scans, blobs):
        links_to = {}  # data digest -> [(repository, link name digest)]
        for scan in scans:
            for link, target in scan.layers.items():
                links_to.setdefault(target, []).append((scan.name, link))
        existing = set(blobs)
        repositories = {scan.name: scan.repository for scan in scans}

        async def sweep(digest):
            try:
                info = await self.registry.blobs.stat(digest)
            except errors.BlobUnknown:
                return  # a directory without data: not a blob
            links = links_to.get(digest, [])
            reason = await self._keep_reason(repositories, digest, info.modified, links)
            if reason is not None:
                self.report.protected.append((str(digest), reason))
                return
            if not self.dry_run:
                if not await self.guard.begin_delete(digest, [link for _, link in links]):
                    self.report.protected.append((str(digest), "in use by a push"))
                    return
                try:
                    await self.vacuum.remove_blob(digest)
                    for repository, link in links:
                        await self.vacuum.remove_layer_link(repository, link)
                finally:
                    await self.guard.end_delete(digest)
            self.report.blobs_removed.append((str(digest), info.size))
            self.report.layer_links_removed += [(repo, str(link)) for repo, link in links]

        await gather_limited(sweep, [digest for digest in blobs if digest not in self.marked])
        self.report.blobs_removed.sort()
        self.report.protected.sort()
        # Links whose data is gone (an earlier collector removed it).
        for target, links in sorted(links_to.items(), key=lambda item: str(item[0])):
            if target in existing or target in self.marked:
                continue
            for repository, link in links:
                modified = await repositories[repository].blobs.link_modified(link)
                if modified is None or self._young(modified):
                    continue
                if self.dry_run:
                    self.report.layer_links_removed.append((repository, str(link)))
                    continue
                if not await self.guard.begin_delete(target, [link]):
                    continue
                try:
                    await self.vacuum.remove_layer_link(repository, link)
                finally:
                    await self.guard.end_delete(target)
                self.report.layer_links_removed.append((repository, str(link)))
        self.report.layer_links_removed.sort()

    async def _keep_reason(self, repositories, digest, modified, links):
        if self._young(modified):
            return "younger than the grace period"
        for repository, link in links:
            link_modified = await repositories[repository].blobs.link_modified(link)
            if link_modified is not None and self._young(link_modified):
                return f"linked into {repository} less than the grace period ago"
        if await self.guard.in_use(digest) or any(
            [await self.guard.in_use(link) for _, link in links]
        ):
            return "in use by a push"
        return None

    async def run(self):
        started = time.monotonic()
        self.report.started_at = self.clock()
        names = await self.registry.repositories_with_content()
        self.report.repositories = len(names)

        async def mark(name):
            scan = await self._scan(name)
            await self._choose(scan)
            return scan

        scans = await gather_limited(mark, names, limit=8)
        for scan in scans:
            for digest in scan.keep:
                self._mark_manifest(scan, digest)
            self.report.manifests_marked += len(scan.keep)
        if self.before_sweep is not None:
            await self.before_sweep()
        await self._sweep_manifests(scans)
        blobs = await self.registry.blobs.enumerate()
        self.report.blobs_seen = len(blobs)
        self.report.blobs_marked = len(self.marked & set(blobs))
        await self._sweep_blobs(scans, blobs)
        self.report.duration = time.monotonic() - started
        return self.report


async def collect_garbage(
    registry,
    dry_run=False,
    delete_untagged=False,
    grace_period=DEFAULT_GRACE_PERIOD,
    clock=time.time,
    before_sweep=None,
):
    """Mark and sweep ``registry``'s storage; return a :class:`GCReport`.

    :param dry_run: remove nothing; report what would be removed.
    :param delete_untagged: also remove manifests no tag reaches (see the
        module docstring for what still keeps one).
    :param grace_period: seconds; data or links younger than this stay.
    :param clock: the current POSIX time (tests move it).
    :param before_sweep: an async callable run between mark and sweep
        (tests use it to push while a collection is half done).
    """
    collector = _Collector(registry, dry_run, delete_untagged, grace_period, clock, before_sweep)
    async with registry.guard.collecting():
        report = await collector.run()
    log.info(
        "garbage collection{dry}: {summary}",
        dry=" (dry run)" if dry_run else "",
        summary=report.summary(),
    )
    return report

"""Rebuilding the referrers index from the manifests themselves.

The referrers API (``GET /v2/<name>/referrers/<digest>``) answers from an
index in storage, ``_referrers/<subject>/<alg>/<hex>/link``: one entry per
manifest revision whose ``subject`` is that digest, written by the manifest
PUT and removed by the manifest DELETE.  The manifests are the truth and the
index is derived from them, so it can always be rebuilt:

- after copying in a root directory written by CNCF Distribution, which has
  no such index (its 2.8 stores OCI 1.1 manifests but never answers the
  referrers API), so artifacts pushed there become visible here;
- after an interrupted PUT or DELETE, or manual surgery on storage, left an
  entry missing or stale.

One pass per repository: list the index entries, *then* read the revisions
(a PUT writes its revision link before its index entry, so an entry listed
first always finds its revision listed after), add what is missing, remove
what names a revision that is gone or whose ``subject`` is another digest
(checked again just before removing, in case it was pushed meanwhile).  Safe
to run on a live registry; ``python -m registryd referrers`` runs it
offline, the manhole's ``rebuild_referrers()`` online.
"""

import time

import attr

from registryd import errors
from registryd.ops.walk import references_in
from registryd.storage.walking import gather_limited


@attr.s(repr=False)
class ReferrersReport:
    """What a rebuild changed (or, in a dry run, would change)."""

    dry_run = attr.ib(default=False)
    repositories = attr.ib(default=0)
    manifests_read = attr.ib(default=0)
    #: entries that were right already
    entries_kept = attr.ib(default=0)
    #: [(repository, subject, referrer)]
    entries_added: list = attr.ib(factory=list)
    #: [(repository, subject, referrer)]
    entries_removed: list = attr.ib(factory=list)
    warnings: list = attr.ib(factory=list)
    duration = attr.ib(default=0.0)

    def summary(self):
        added, removed = ("would add", "would remove") if self.dry_run else ("added", "removed")
        return (
            f"{self.repositories} repositories, {self.manifests_read} manifests read; "
            f"{self.entries_kept} referrers entries correct, {added} {len(self.entries_added)}, "
            f"{removed} {len(self.entries_removed)}; {self.duration:.2f}s"
        )

    def lines(self):
        """The report as text, one change per line, summary last."""
        added, removed = ("would add", "would remove") if self.dry_run else ("added", "removed")
        out = [f"warning: {warning}" for warning in self.warnings]
        out += [
            f"{added} {repo}: {referrer} refers to {subject}"
            for repo, subject, referrer in self.entries_added
        ]
        out += [
            f"{removed} {repo}: {referrer} as a referrer of {subject}"
            for repo, subject, referrer in self.entries_removed
        ]
        out.append(self.summary())
        return out

    def to_dict(self):
        def entries(items):
            return [{"repository": r, "subject": str(s), "referrer": str(d)} for r, s, d in items]

        return {
            "dry_run": self.dry_run,
            "repositories": self.repositories,
            "manifests_read": self.manifests_read,
            "entries_kept": self.entries_kept,
            "entries_added": entries(self.entries_added),
            "entries_removed": entries(self.entries_removed),
            "warnings": list(self.warnings),
            "duration": self.duration,
        }

    def __repr__(self):
        return "\n".join(self.lines())


class _Rebuild:
    def __init__(self, registry, dry_run):
        self.registry = registry
        self.dry_run = dry_run
        self.report = ReferrersReport(dry_run=dry_run)

    async def _subject_of(self, manifests, digest):
        """The ``subject`` digest of revision ``digest``, or None (no
        subject, data missing, not JSON: each but the first is a warning)."""
        body = await manifests.content(digest)
        if body is None:
            self.report.warnings.append(f"{manifests.name}@{digest}: manifest data is missing")
            return None
        try:
            return references_in(body)[1]
        except ValueError:
            self.report.warnings.append(f"{manifests.name}@{digest}: manifest is not JSON")
            return None

    async def _still_stale(self, manifests, subject, referrer):
        """Checked again just before removing: pushed meanwhile?"""
        if await manifests.revision_modified(referrer) is None:
            return True
        return await self._subject_of(manifests, referrer) != subject

    async def repository(self, repository):
        name = repository.name
        manifests = repository.manifests
        existing = await manifests.referrer_entries()
        revisions = await manifests.enumerate()
        subjects = await gather_limited(
            lambda digest: self._subject_of(manifests, digest), revisions
        )
        self.report.manifests_read += len(revisions)
        wanted = {
            (subject, digest) for digest, subject in zip(revisions, subjects) if subject is not None
        }
        order = lambda entry: (str(entry[0]), str(entry[1]))  # noqa: E731
        missing = sorted(wanted - existing, key=order)
        stale = sorted(existing - wanted, key=order)
        self.report.entries_kept += len(wanted & existing)

        async def add(entry):
            subject, referrer = entry
            if not self.dry_run:
                await manifests.add_referrer(subject, referrer)
            self.report.entries_added.append((name, subject, referrer))

        async def remove(entry):
            subject, referrer = entry
            if not await self._still_stale(manifests, subject, referrer):
                return
            if not self.dry_run:
                await self.registry.vacuum.remove_referrer(name, subject, referrer)
            self.report.entries_removed.append((name, subject, referrer))

        await gather_limited(add, missing)
        await gather_limited(remove, stale)
        if not self.dry_run:
            await self._prune_empty_subjects(repository, {subject for subject, _ in stale})

    async def _prune_empty_subjects(self, repository, subjects):
        """Remove the indexes of ``subjects`` left without entries."""
        for subject in sorted(subjects, key=str):
            if await repository.manifests.referrers_of(subject):
                continue
            await self.registry.vacuum.remove_referrers_of(repository.name, subject)


async def rebuild_referrers(registry, repositories=None, dry_run=False, clock=time.monotonic):
    """Make the referrers index of ``repositories`` (default: every
    repository with manifests) match the manifests' ``subject`` fields.
    Returns a :class:`ReferrersReport`; a storage error aborts the run (entries
    already fixed stay fixed, which is harmless)."""
    started = clock()
    rebuild = _Rebuild(registry, dry_run)
    if repositories is None:
        names = await registry.repositories()
    else:
        names = []
        for name in repositories:
            registry.repository(name)  # NAME_INVALID for a bad name
            names.append(name)
    for name in names:
        repository = registry.stored_repository(name)
        if not await repository.manifests.exists():
            if repositories is not None:
                raise errors.NameUnknown(detail={"name": name})
            continue
        await rebuild.repository(repository)
        rebuild.report.repositories += 1
    rebuild.report.duration = clock() - started
    return rebuild.report

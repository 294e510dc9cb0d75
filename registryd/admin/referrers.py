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
from registryd.admin.walk import (
    digest_tree, gather_limited, list_or_empty, manifest_revisions, references_in,
)
from registryd.storage import paths
from registryd.storage.errors import PathNotFound


@attr.s(repr=False)
class ReferrersReport:
    """What a rebuild changed (or, in a dry run, would change)."""

    dry_run = attr.ib(default=False)
    repositories = attr.ib(default=0)
    manifests_read = attr.ib(default=0)
    #: entries that were right already
    entries_kept = attr.ib(default=0)
    #: [(repository, subject, referrer)]
    entries_added = attr.ib(factory=list)
    #: [(repository, subject, referrer)]
    entries_removed = attr.ib(factory=list)
    warnings = attr.ib(factory=list)
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
        out += [f"{added} {repo}: {referrer} refers to {subject}"
                for repo, subject, referrer in self.entries_added]
        out += [f"{removed} {repo}: {referrer} as a referrer of {subject}"
                for repo, subject, referrer in self.entries_removed]
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


async def _index_entries(driver, name):
    """The set of (subject, referrer) pairs in C{name}'s referrers index.
    A name in it that is not a digest is left alone (and not reported)."""
    base = f"{paths.repository(name)}/_referrers"
    subjects = await digest_tree(driver, base)

    async def referrers_of(subject):
        return await digest_tree(driver, paths.referrers(name, subject))

    found = set()
    for subject, referrers in zip(subjects, await gather_limited(referrers_of, subjects)):
        found.update((subject, referrer) for referrer in referrers)
    return found


class _Rebuild:
    def __init__(self, registry, dry_run):
        self.driver = registry.driver
        self.dry_run = dry_run
        self.report = ReferrersReport(dry_run=dry_run)

    async def _subject_of(self, name, digest):
        """The ``subject`` digest of revision C{digest}, or None (no
        subject, data missing, not JSON: each but the first is a warning)."""
        try:
            body = await self.driver.get_content(paths.blob_data(digest))
        except PathNotFound:
            self.report.warnings.append(f"{name}@{digest}: manifest data is missing")
            return None
        try:
            return references_in(body)[1]
        except ValueError:
            self.report.warnings.append(f"{name}@{digest}: manifest is not JSON")
            return None

    async def _still_stale(self, name, subject, referrer):
        """Checked again just before removing: pushed meanwhile?"""
        try:
            await self.driver.stat(paths.manifest_revision_link(name, referrer))
        except PathNotFound:
            return True
        return await self._subject_of(name, referrer) != subject

    async def repository(self, name):
        existing = await _index_entries(self.driver, name)
        revisions = await manifest_revisions(self.driver, name)
        subjects = await gather_limited(lambda digest: self._subject_of(name, digest), revisions)
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
                await self.driver.put_content(
                    paths.referrer_link(name, subject, referrer), str(referrer).encode("ascii")
                )
            self.report.entries_added.append((name, subject, referrer))

        async def remove(entry):
            subject, referrer = entry
            if not await self._still_stale(name, subject, referrer):
                return
            if not self.dry_run:
                try:
                    await self.driver.delete(
                        paths.referrer_link(name, subject, referrer).rsplit("/", 1)[0]
                    )
                except PathNotFound:
                    pass
            self.report.entries_removed.append((name, subject, referrer))

        await gather_limited(add, missing)
        await gather_limited(remove, stale)
        if not self.dry_run:
            await self._prune_empty_subjects(name, {subject for subject, _ in stale})

    async def _prune_empty_subjects(self, name, subjects):
        """Remove the directories of C{subjects} left without entries."""
        for subject in sorted(subjects, key=str):
            base = paths.referrers(name, subject)
            if await digest_tree(self.driver, base):
                continue
            try:
                await self.driver.delete(base)
            except PathNotFound:
                pass


async def rebuild_referrers(registry, repositories=None, dry_run=False, clock=time.monotonic):
    """Make the referrers index of C{repositories} (default: every
    repository with manifests) match the manifests' ``subject`` fields.
    Returns a L{ReferrersReport}; a storage error aborts the run (entries
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
        if not await list_or_empty(registry.driver, paths.manifests(name)):
            if repositories is not None:
                raise errors.NameUnknown(detail={"name": name})
            continue
        await rebuild.repository(name)
        rebuild.report.repositories += 1
    rebuild.report.duration = clock() - started
    return rebuild.report


"""Emptying a repository while pushes go on (``DELETE
/v2/<name>/_registryd/repository``, the manhole's ``delete_repository``).

Removing the repository's directory in one driver call would also remove
whatever a push wrote into it meanwhile: a manifest it has just
acknowledged, a blob link its manifest is about to need.  So the removal
works from a snapshot taken when it starts, through the model's
enumerators and the vacuum, and leaves alone anything written since:

- a manifest revision or blob link is left when a push in this process
  has held its digest since the removal started (the guard's collecting
  mode, ``registryd.storage.nodes_guard.NodesGuard``, as garbage collection uses
  it), or when its link is newer than a marker the removal writes when it
  starts (a push on another node: both times are the storage's own clock,
  so only a write within the storage's time precision of the start, a
  second on S3, can be taken);
- a tag likewise, and also when it no longer names the digest the
  snapshot saw (a push re-tagged it);
- uploads being written to right now stay (their push goes on); idle ones
  go, as the uploads purge would take them.

Blobs themselves are left to garbage collection.  What is left behind is
at most empty directories, which the catalog does not list
(``registryd.storage.registry.Registry.repositories``).
"""

import attr

from registryd.storage import _paths as paths
from registryd.storage.walking import gather_limited, modified_or_none


async def storage_now(driver, vacuum, name):
    """The time now in the storage's clock and precision (None if it keeps
    none): the modification time of a marker written in repository
    ``name`` and removed at once.  A link newer than it was written since,
    whichever node wrote it; comparing with this node's clock instead
    would depend on the clocks agreeing, and on S3's whole seconds."""
    marker = paths.clock_marker(name)
    await driver.put_content(marker, b"")
    try:
        return await modified_or_none(driver, marker)
    finally:
        await vacuum.remove_clock_marker(name)


@attr.s(frozen=True, slots=True)
class RemovalReport:
    """What one repository removal removed, and what it left to pushes."""

    name = attr.ib()
    tags = attr.ib()  # names removed
    manifests = attr.ib()  # digests (str) removed
    blob_links = attr.ib()  # count removed
    uploads = attr.ib()  # count removed
    #: what pushes wrote or held since the start: tags, digests (str),
    #: upload ids in progress
    kept = attr.ib()

    def to_dict(self):
        return attr.asdict(self)


class RepositoryRemoval:
    """Removes everything repository ``repository`` holds at the start of
    ``run``, except what pushes touch meanwhile."""

    def __init__(self, repository, driver, vacuum, guard):
        self._repository = repository
        self._driver = driver
        self._vacuum = vacuum
        self._guard = guard

    async def run(self):
        async with self._guard.collecting():
            return await self._run()

    async def _run(self):
        repository = self._repository
        name = repository.name
        tags = await repository.tags.enumerate()
        tag_targets = await gather_limited(repository.tags.get, tags)
        manifests = await repository.manifests.enumerate()
        referrers = await repository.manifests.referrer_entries()
        links = await repository.blobs.enumerate()
        uploads = await repository.uploads.enumerate()
        kept = [upload.id for upload in uploads if upload.active]
        uploads = [upload for upload in uploads if not upload.active]
        if not (tags or manifests or links or uploads or kept):
            return RemovalReport(name, [], [], 0, 0, [])  # no such repository: write nothing
        started = await storage_now(self._driver, self._vacuum, name)

        def written_since(modified):
            return modified is not None and started is not None and modified > started

        removed_tags = []
        for tag, target in zip(tags, tag_targets):
            if (
                await repository.tags.get(tag) != target
                or (target is not None and await self._guard.in_use(target))
                or written_since(await repository.tags.modified(tag))
            ):
                kept.append(tag)
            elif await repository.tags.untag(tag):
                removed_tags.append(tag)
        removed_manifests = []
        for digest in manifests:
            if await self._guard.in_use(digest) or written_since(
                await repository.manifests.revision_modified(digest)
            ):
                kept.append(str(digest))
            elif await self._vacuum.remove_manifest(name, digest):
                removed_manifests.append(str(digest))
        for subject, referrer in referrers:
            if str(referrer) in removed_manifests:
                await self._vacuum.remove_referrer(name, subject, referrer)
        removed_links = 0
        for digest in links:
            if await self._guard.in_use(digest) or written_since(
                await repository.blobs.link_modified(digest)
            ):
                kept.append(str(digest))
            elif await self._vacuum.remove_layer_link(name, digest):
                removed_links += 1
        await self._vacuum.remove_pull_records(name)
        removed_uploads = 0
        for upload in uploads:
            if await self._vacuum.remove_upload(name, upload.id):
                removed_uploads += 1
        return RemovalReport(
            name,
            removed_tags,
            removed_manifests,
            removed_links,
            removed_uploads,
            sorted(set(kept)),
        )

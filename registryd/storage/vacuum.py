"""The one deleter of the storage model (Distribution's ``vacuum.go``).

Every removal from storage goes through :class:`Vacuum`: the HTTP API's deletes
and upload cancels, garbage collection's sweep, upload purging, the
referrers rebuild and the pull-through cache's expiry.  Each method names
what it removes in the model's terms (a blob, a manifest revision, a tag,
an upload...) and knows which directories that is; something already gone
is not an error, since a concurrent removal or an earlier interrupted one
may have got there first.  Each returns whether there was something to
remove.  Policy (dry runs, the grace period, the push guard, whether
deletes are enabled) belongs to the callers; the vacuum only removes.

Being the one deleter, it is also where every node is told to forget a
removed tag, manifest revision, blob link or blob from the nodes' metadata
cache (:mod:`registryd.storage.shared_cache`), once storage has removed it
(or failed to: part of it may be gone).
"""

from registryd.storage import _paths as paths
from registryd.storage.errors import PathNotFound
from registryd.storage.shared_cache import blob_entry, link_entry, revision_entry, tag_entry


class Vacuum:
    """Removes blobs, manifests, tags, links and uploads from one driver."""

    def __init__(self, driver, hash_states, shared_cache=None):
        self._driver = driver
        #: running upload hashes (registryd.storage.uploads.HashStates),
        #: forgotten with their upload
        self._hash_states = hash_states
        #: the nodes' SharedMetadataCache, or None (no Redis)
        self._shared_cache = shared_cache

    async def _delete_cached(self, path, entry):
        """Delete ``path``, then make every node forget the cache ``entry``."""
        try:
            return await self._delete(path)
        finally:
            if self._shared_cache is not None:
                await self._shared_cache.forget(entry)

    async def _delete(self, path):
        try:
            await self._driver.delete(path)
        except PathNotFound:
            return False
        return True

    async def remove_blob(self, digest):
        """The blob's data in the global store (its repositories' links
        are ``remove_layer_link``'s)."""
        return await self._delete_cached(paths.blob_dir(digest), blob_entry(digest))

    async def remove_layer_link(self, name, digest):
        """Repository ``name``'s link to blob ``digest``."""
        return await self._delete_cached(
            paths.layer_link_dir(name, digest), link_entry(name, digest)
        )

    async def remove_manifest(self, name, digest, tags=(), subject=None):
        """Revision ``digest`` of repository ``name``; also its entry in the
        history of each of ``tags`` and in the referrers index of
        ``subject`` (a digest), when given.  True if the revision was there."""
        removed = await self._delete_cached(
            paths.manifest_revision_dir(name, digest), revision_entry(name, digest)
        )
        for tag in tags:
            await self._delete(paths.tag_index_dir(name, tag, digest))
        if subject is not None:
            await self.remove_referrer(name, subject, digest)
        return removed

    async def remove_tag(self, name, tag):
        """Tag ``tag`` of repository ``name``, with its history."""
        return await self._delete_cached(paths.tag_dir(name, tag), tag_entry(name, tag))

    async def remove_referrer(self, name, subject, referrer):
        """``referrer``'s entry in the referrers index of ``subject``."""
        return await self._delete(paths.referrer_dir(name, subject, referrer))

    async def remove_referrers_of(self, name, subject):
        """The whole referrers index of ``subject`` (emptied by the caller)."""
        return await self._delete(paths.referrers(name, subject))

    async def remove_referrers_index(self, name):
        """Repository ``name``'s whole referrers index (to be rebuilt)."""
        return await self._delete(paths.referrers_root(name))

    async def remove_upload(self, name, upload_id):
        """Upload ``upload_id`` of repository ``name`` and its running hash."""
        self._hash_states.forget((name, upload_id))
        return await self._delete(paths.upload_dir(name, upload_id))

    async def remove_fetch_record(self, name, digest):
        """The pull-through cache's record of fetching manifest ``digest``."""
        return await self._delete(paths.proxy_record_dir(name, digest))

    async def remove_clock_marker(self, name):
        """The marker a repository removal or retention run writes as it
        starts (registryd.storage.removal.storage_now)."""
        return await self._delete(paths.clock_marker(name))

    async def remove_pull_records(self, name):
        """When repository ``name``'s tags and manifests were last pulled
        (registryd.storage.pulls)."""
        return await self._delete(paths.pull_records(name))

"""Blobs: the registry-wide content store and each repository's links into it.

As in Distribution (``blobstore.go``, ``linkedblobstore.go``), the data of
a blob lives once, under its digest, in the global store (:class:`BlobStore`);
a repository "has" a blob when it holds a link to it under ``_layers``
(:class:`LinkedBlobStore`).  The link names where the data is: normally the
digest itself, but Distribution links a sha512-addressed blob to its
sha256 data.
"""

import attr
from zope.interface import implementer

from registryd import errors
from registryd.digest import ALGORITHMS, Digest
from registryd.interfaces import IBlobStore, ILinkedBlobStore
from registryd.storage import _paths as paths
from registryd.storage.errors import PathNotFound, translate_storage_errors
from registryd.storage.shared_cache import blob_entry, for_lookups, link_entry, parsed
from registryd.storage.walking import (
    digest_tree,
    list_or_empty,
    modified_or_none,
    parse_digest,
    read_link,
    stat_path,
)


def _size(text):
    """A blob size from the nodes' metadata cache (ValueError if it is none)."""
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


@attr.s(frozen=True, slots=True)
class BlobInfo:
    digest = attr.ib()
    size = attr.ib()
    #: Where the data lives: the digest itself, except for blobs written by
    #: Distribution under another (its canonical sha256) digest and linked
    #: as ``_layers/<alg>/<hex>/link`` -> ``sha256:...``.
    stored_as = attr.ib(default=None)
    #: POSIX time the data was written, when storage said (GC's grace period)
    modified = attr.ib(default=None, eq=False)
    #: whether it can be read from any offset (Range requests); a blob a
    #: pull-through cache is still fetching can only be read from its start
    seekable = attr.ib(default=True, eq=False)

    @property
    def data_digest(self):
        return self.stored_as or self.digest


@implementer(IBlobStore)
class BlobStore:
    """The registry-wide blobs: content addressed, written once, removed
    only by the vacuum."""

    def __init__(self, driver):
        self._driver = driver

    async def stat(self, digest, stored_as=None):
        """The blob's data in the global store; BLOB_UNKNOWN if absent."""
        try:
            info = await stat_path(self._driver, paths.blob_data(stored_as or digest))
        except PathNotFound:
            raise errors.BlobUnknown(detail={"digest": str(digest)}) from None
        return BlobInfo(
            digest, info.size, stored_as if stored_as != digest else None, info.modified
        )

    async def open(self, blob, offset=0):
        """A reader of a stat'ed blob's data from ``offset``."""
        try:
            return await self._driver.reader(paths.blob_data(blob.data_digest), offset)
        except PathNotFound:
            raise errors.BlobUnknown(detail={"digest": str(blob.digest)}) from None

    async def get(self, digest):
        """A small blob's whole content (a manifest); BLOB_UNKNOWN if absent."""
        try:
            return await self._driver.get_content(paths.blob_data(digest))
        except PathNotFound:
            raise errors.BlobUnknown(detail={"digest": str(digest)}) from None

    async def put(self, digest, content):
        """Store a small blob whose digest the caller computed (a manifest)."""
        await self._driver.put_content(paths.blob_data(digest), content)

    async def commit(self, upload, digest, size):
        """Make verified upload data (``upload`` a :class:`registryd.storage.uploads.Upload`)
        the blob ``digest``.

        The move is atomic, so a blob is never visible half-written.  No
        stat asks first whether the blob is already there: clients ask
        that before they upload (a ``HEAD``), so it almost never is, and if
        it is (a concurrent or earlier push of the same content) the move
        replaces verified bytes with the same bytes: content-addressed
        writes are idempotent.
        """
        await self._driver.move(paths.upload_data(upload.name, upload.id), paths.blob_data(digest))
        return BlobInfo(digest, size)

    def location(self, blob):
        """The blob's path in storage, for a web server or CDN in front of
        it (the redirect middleware's base URL plus this)."""
        return paths.blob_data(blob.data_digest)

    async def redirect_url(self, blob, method):
        """The driver's own URL for the blob's data (a presigned S3 URL), or None."""
        return await self._driver.redirect_url(paths.blob_data(blob.data_digest), method)

    async def enumerate(self):
        """Every blob directory ``blobs/<alg>/<hex[:2]>/<hex>`` as a Digest
        (whether or not its ``data`` is there; names that are not digests are
        skipped, never deleted)."""
        driver = self._driver
        root = paths.blobs()
        algorithms = [name for name in await list_or_empty(driver, root) if name in ALGORITHMS]
        prefix_dirs = []
        listings = await driver.list_many([f"{root}/{a}" for a in algorithms])
        for algorithm, names in zip(algorithms, listings):
            prefix_dirs += [(algorithm, prefix) for prefix in names or [] if len(prefix) == 2]
        found = []
        listings = await driver.list_many([f"{root}/{a}/{p}" for a, p in prefix_dirs])
        for (algorithm, prefix), names in zip(prefix_dirs, listings):
            for name in names or []:
                digest = parse_digest(algorithm, name)
                if digest is not None and digest.hex[:2] == prefix:
                    found.append(digest)
        return found


@implementer(ILinkedBlobStore)
class LinkedBlobStore:
    """The blobs one repository links (``_layers``)."""

    def __init__(
        self,
        name,
        driver,
        blobs,
        vacuum,
        guard,
        repositories,
        settings,
        link_cache=None,
        shared_cache=None,
    ):
        """
        :param blobs: the global :class:`BlobStore`.
        :param guard: the registry's :class:`registryd.storage.nodes_guard.NodesGuard`.
        :param repositories: ``name -> Repository``, for mounts.
        :param settings: the registry's switches (delete_enabled, redirect,
            redirect_base_url), read when used (they may change).
        :param link_cache: the registry's blob-link
            :class:`registryd.storage.cache.LinkCache` (where the data is,
            revalidated by a stat of the link), or None.
        :param shared_cache: the nodes' :class:`registryd.storage.shared_cache.SharedMetadataCache`
            (used instead of ``link_cache`` when reads consult it; ``link``
            forgets through it either way), or None.
        """
        self.name = name
        self._driver = driver
        self._blobs = blobs
        self._vacuum = vacuum
        self._guard = guard
        self._repositories = repositories
        self._settings = settings
        self._link_cache = link_cache
        self._shared_cache = shared_cache  # forgets what link() changes
        self._shared_lookups = for_lookups(shared_cache)  # None: stat() revalidates

    async def has(self, digest):
        try:
            await self.stat(digest)
        except errors.BlobUnknown:
            return False
        return True

    @translate_storage_errors
    async def stat(self, digest):
        """The blob if it is linked into this repository and its data exists.

        Blob HEADs and GETs and every pushed manifest's references ask
        this; with the nodes' shared cache a hit asks storage nothing, with
        the link cache a stat of the link replaces reading it (the data is
        stat'ed either way: another process may have removed it)."""
        if self._shared_lookups is not None:
            return await self._stat_shared(digest)
        if self._link_cache is not None:
            return await self._stat_revalidated(digest)
        return await self._stat_stored(digest)

    async def _stat_stored(self, digest):
        stored_as = await self.target(digest)
        if stored_as is None:
            raise errors.BlobUnknown(detail={"digest": str(digest)})
        return await self._blobs.stat(digest, stored_as)

    async def _stat_revalidated(self, digest):
        cache = self._link_cache
        if not cache.seen(self.name, digest):
            # asked for the first time: as without a cache (two calls,
            # not three), noted so that the next ask keeps an entry
            blob = await self._stat_stored(digest)
            cache.note(self.name, digest)
            return blob
        try:
            info = await stat_path(self._driver, paths.layer_link(self.name, digest))
        except PathNotFound:
            cache.invalidate(self.name, digest)
            raise errors.BlobUnknown(detail={"digest": str(digest)}) from None
        validator = (info.size, info.modified)
        cached = cache.get(self.name, digest, validator)
        if cached is not None:
            # The data is stat'ed too, never taken from the cache: the
            # vacuum of another process (a worker's or node's garbage
            # collection, Distribution's, or someone's rm) may have removed
            # it while the link stays, and that blob must be unknown at once.
            return await self._blobs.stat(digest, cached[0])
        # Read after the stat: a link rewritten in between misses next time.
        blob = await self._stat_stored(digest)
        cache.put(self.name, digest, validator, (blob.data_digest,))
        return blob

    async def _stat_shared(self, digest):
        cache = self._shared_lookups
        entries = [link_entry(self.name, digest), blob_entry(digest)]
        found = await cache.lookup(entries)
        if found is not None:
            stored_as = parsed(found[0][0], Digest.parse)
            size = parsed(found[1][0], _size)
            if stored_as is not None and size is not None:
                return BlobInfo(digest, size, stored_as if stored_as != digest else None)
        blob = await self._stat_stored(digest)
        if found is not None:
            await cache.fill(entries[0], found[0][1], str(blob.data_digest))
            if blob.data_digest == digest:
                # keyed by where the data is, which the vacuum forgets with
                # it: a blob stored under another digest is never a hit
                await cache.fill(entries[1], found[1][1], str(blob.size))
        return blob

    async def target(self, digest):
        """The digest the link ``digest`` names (where its data is), or None."""
        return await read_link(self._driver, paths.layer_link(self.name, digest))

    async def link_modified(self, digest):
        """When the link ``digest`` was written (GC's grace period), or None."""
        return await modified_or_none(self._driver, paths.layer_link(self.name, digest))

    @translate_storage_errors
    async def open(self, blob, offset=0):
        """A reader of a stat'ed blob's data from ``offset``."""
        return await self._blobs.open(blob, offset)

    @translate_storage_errors
    async def redirect(self, blob, method):
        """Where the client may fetch the blob itself: the redirect
        middleware's base URL plus the blob's storage path, or a presigned
        URL when storage.redirect is enabled and the driver can; else None."""
        if self._settings.redirect_base_url is not None:
            return self._settings.redirect_base_url + self._blobs.location(blob)
        if not self._settings.redirect:
            return None
        return await self._blobs.redirect_url(blob, method)

    @translate_storage_errors
    async def link(self, digest, stored_as=None):
        target = str(stored_as or digest).encode("ascii")
        await self._driver.put_content(paths.layer_link(self.name, digest), target)
        if self._link_cache is not None:
            self._link_cache.invalidate(self.name, digest)
        if self._shared_cache is not None:
            await self._shared_cache.forget(link_entry(self.name, digest))

    @translate_storage_errors
    async def delete(self, digest):
        """Unlink the blob from this repository; its data stays until GC."""
        if not self._settings.delete_enabled:
            raise errors.Unsupported("deletes are disabled (storage.delete.enabled is false)")
        await self.stat(digest)
        if not await self._vacuum.remove_layer_link(self.name, digest):
            raise errors.BlobUnknown(detail={"digest": str(digest)})

    @translate_storage_errors
    async def mount(self, digest, source_name):
        """Link a blob of repository ``source_name`` into this one; the
        blob, or None when the source does not have it."""
        source = self._repositories(source_name)
        async with self._guard.using([digest]):
            try:
                blob = await source.blobs.stat(digest)
            except errors.BlobUnknown:
                return None
            await self.link(digest, blob.data_digest)
        return blob

    async def enumerate(self):
        """The digests this repository links (whether or not their data is
        still there: GC removes dangling links)."""
        return await digest_tree(self._driver, paths.layers(self.name))

"""The registry model: repositories, their blobs and uploads, on a driver.

This layer knows Distribution's layout (``registryd.storage.paths``) and
translates storage errors into registry errors; it knows nothing of HTTP.
All authoritative state is in the driver, so several registryd processes
may share one backend; what is kept in memory here (running upload hashes,
locks) is an optimisation that a restart or another node cannot make wrong.
"""

import contextlib
import heapq

import attr
from twisted.internet import defer

from registryd import errors
from registryd.digest import DEFAULT_ALGORITHM, Digest, check_algorithm
from registryd.names import check_repository_name, check_upload_id, is_name_component, new_upload_id
from registryd.storage import paths
from registryd.storage.errors import PathNotFound, StorageError, translate_storage_errors
from registryd.storage.cache import ContentCache
from registryd.storage.guard import PushGuard
from registryd.storage.uploads import HashStates, Upload, rfc3339_now, stored_upload_size


@attr.s(frozen=True, slots=True)
class BlobInfo:
    digest = attr.ib()
    size = attr.ib()
    #: Where the data lives: the digest itself, except for blobs written by
    #: Distribution under another (its canonical sha256) digest and linked
    #: as ``_layers/<alg>/<hex>/link`` -> ``sha256:...``.
    stored_as = attr.ib(default=None)

    @property
    def data_digest(self):
        return self.stored_as or self.digest


#: Fewest directories listed in one driver call by a catalog page walk.
_PAGE_BATCH = 256


class _LockTable:
    """Per-key DeferredLocks that disappear when nobody holds or waits."""

    def __init__(self):
        self._locks = {}

    def __call__(self, key):
        table = self

        class _Held:
            async def __aenter__(self):
                lock = table._locks.get(key)
                if lock is None:
                    lock = table._locks[key] = defer.DeferredLock()
                self.lock = lock
                await lock.acquire()

            async def __aexit__(self, *exc):
                self.lock.release()
                if not self.lock.locked and not self.lock.waiting:
                    table._locks.pop(key, None)

        return _Held()

    def in_use(self, key):
        """Is the lock for C{key} held or waited for?"""
        return key in self._locks


class Registry:
    """The whole registry on one storage driver."""

    def __init__(self, driver, delete_enabled=False, accept_sparse_manifests=False,
                 read_only=False, redirect=False, manifest_url_policy=None,
                 redirect_base_url=None, accept_sparse_images=False):
        self.driver = driver
        #: storage.redirect: answer blob GETs with a 307 to the driver's
        #: URL (a presigned S3 URL) after the access checks, when it has one
        self.redirect = redirect
        #: middleware.storage redirect's baseurl: blob GETs answer 307 to it
        #: plus the blob's storage path (a web server or CDN serves those)
        self.redirect_base_url = redirect_base_url
        self.delete_enabled = delete_enabled
        #: accept indexes whose child manifests were never pushed, as
        #: mirrors of single platforms need
        self.accept_sparse_manifests = accept_sparse_manifests
        #: accept image manifests whose blobs (config, layers) were never
        #: pushed: the platforms such a mirror lists but does not copy
        self.accept_sparse_images = accept_sparse_images
        #: validation.manifests.urls (registryd.manifests.verify.URLPolicy):
        #: which URLs non-distributable layers may carry; None: any
        self.manifest_url_policy = manifest_url_policy
        #: callables told C{(read_only)} whenever it changes (worker mode
        #: passes the switch on to the other processes)
        self.read_only_observers = []
        self._read_only = bool(read_only)
        self.hash_states = HashStates()
        self.upload_lock = _LockTable()
        #: digests pushes are using, kept safe from online GC
        self.guard = PushGuard()
        #: parsed manifests by digest (immutable content; registryd.storage.cache)
        self.manifest_cache = ContentCache()

    @property
    def read_only(self):
        """storage.maintenance.readonly: the HTTP API refuses every write
        (registryd.app); the manhole can flip it while running."""
        return self._read_only

    @read_only.setter
    def read_only(self, on):
        on = bool(on)
        if on == self._read_only:
            return
        self._read_only = on
        for observer in list(self.read_only_observers):
            observer(on)

    def repository(self, name):
        """The repository C{name} (validated); it need not exist yet."""
        return Repository(self, check_repository_name(name))

    async def blob_info(self, digest, stored_as=None):
        """Size of the blob's data in the global store; BLOB_UNKNOWN if absent."""
        try:
            info = await self.driver.stat(paths.blob_data(stored_as or digest))
        except PathNotFound:
            raise errors.BlobUnknown(detail={"digest": str(digest)}) from None
        return BlobInfo(digest, info.size, stored_as if stored_as != digest else None)

    async def commit_blob(self, source_path, digest, size):
        """Make verified upload data at C{source_path} the global blob.

        The move is atomic, so a blob is never visible half-written; if the
        blob already exists (a concurrent or earlier push of the same
        content) the upload's copy is simply dropped: content-addressed
        writes are idempotent.
        """
        target = paths.blob_data(digest)
        try:
            existing = await self.driver.stat(target)
        except PathNotFound:
            existing = None
        if existing is not None and existing.size == size:
            return BlobInfo(digest, size)
        await self.driver.move(source_path, target)
        return BlobInfo(digest, size)

    @translate_storage_errors
    async def repositories(self, markers=("_manifests",)):
        """Names of all repositories, sorted: directories under
        ``repositories/`` with one of C{markers} as a child (the catalog
        counts ``_manifests``, as Distribution does), found recursively
        since names nest; directories starting with ``_`` are never names."""
        found = []
        # Breadth first, each level's directories listed in one driver
        # call: a catalog walk is thousands of small listings, so their
        # latency, not their work, is what costs.
        level = [("", paths.repositories())]
        while level:
            listings = await self.driver.list_many([path for _, path in level])
            next_level = []
            for (prefix, path), children in zip(level, listings):
                children = children or []
                if prefix and any(marker in children for marker in markers):
                    found.append(prefix)
                for child in children:
                    if child.endswith(".tmp") or not is_name_component(child):
                        continue  # _manifests, a driver's temporary, a stray name
                    next_level.append((f"{prefix}/{child}" if prefix else child, f"{path}/{child}"))
            level = next_level
        return sorted(name for name in found if name)

    @translate_storage_errors
    async def repository_page(self, last=None, limit=None, include=None, markers=("_manifests",)):
        """One page of the catalog: C{(names, more)}, the first C{limit}
        repository names after C{last} (all if C{limit} is None) for which
        C{include(name)} is true, sorted, and whether more follow.

        A client pages through a large catalog with ``n`` and ``last``; a
        walk of the whole tree per page would make listing N repositories
        cost N / n walks.  This walk visits directories in the order of
        their names (a heap), skips subtrees that sort entirely before
        C{last}, and stops once nothing left to visit can sort before the
        names it has: a page costs about C{limit} directory listings.
        (A depth-first walk would not do: ``a/b`` sorts after ``a-b``.)
        Listings go to the driver in batches, as in L{repositories}.
        """
        heap = [("", paths.repositories())]
        found = []
        while heap:
            if limit is not None and len(found) > limit:
                found.sort()
                if heap[0][0] > found[limit]:
                    break  # whatever is left sorts after a full page
            if limit is None:
                size = len(heap)
            else:
                size = max(limit + 1 - len(found), _PAGE_BATCH)
            batch = [heapq.heappop(heap) for _ in range(min(size, len(heap)))]
            listings = await self.driver.list_many([path for _, path in batch])
            for (prefix, path), children in zip(batch, listings):
                children = children or []
                if (prefix and (last is None or prefix > last)
                        and any(marker in children for marker in markers)
                        and (include is None or include(prefix))):
                    found.append(prefix)
                for child in children:
                    if child.endswith(".tmp") or not is_name_component(child):
                        continue  # _manifests, a driver's temporary, a stray name
                    name = f"{prefix}/{child}" if prefix else child
                    if last is not None and name < last and not last.startswith(name):
                        continue  # it and all below it sort before last
                    heapq.heappush(heap, (name, f"{path}/{child}"))
        found.sort()
        if limit is None:
            return found, False
        return found[:limit], len(found) > limit

    @translate_storage_errors
    async def find_readable_repository_with_blob(self, digest, may_read=lambda name: True):
        """A repository the caller may read that links C{digest}, or None."""
        for name in await self.repositories(markers=("_layers",)):
            if not may_read(name):
                continue
            if await self.repository(name).has_blob(digest):
                return name
        return None


class Repository:
    """One repository's view of blobs and uploads."""

    def __init__(self, registry, name):
        self.registry = registry
        self.name = name
        from registryd.storage.manifest_store import ManifestStore

        self.manifests = ManifestStore(self)

    @property
    def driver(self):
        return self.registry.driver

    # blobs

    async def has_blob(self, digest):
        try:
            await self.stat_blob(digest)
        except errors.BlobUnknown:
            return False
        return True

    @translate_storage_errors
    async def stat_blob(self, digest):
        """The blob if it is linked into this repository and its data exists.

        The link names where the data is: normally the digest itself, but
        Distribution links a sha512-addressed blob to its sha256 data.
        """
        try:
            link = await self.driver.get_content(paths.layer_link(self.name, digest))
        except PathNotFound:
            raise errors.BlobUnknown(detail={"digest": str(digest)}) from None
        try:
            stored_as = Digest.parse(link.strip())
        except errors.DigestInvalid:
            raise errors.BlobUnknown(detail={"digest": str(digest)}) from None
        return await self.registry.blob_info(digest, stored_as)

    @translate_storage_errors
    async def open_blob(self, blob, offset=0):
        """A reader of a stat'ed blob's data from C{offset}."""
        try:
            return await self.driver.reader(paths.blob_data(blob.data_digest), offset)
        except PathNotFound:
            raise errors.BlobUnknown(detail={"digest": str(blob.digest)}) from None

    @translate_storage_errors
    async def blob_redirect(self, blob, method):
        """Where the client may fetch the blob itself: the redirect
        middleware's base URL plus the blob's storage path, or a presigned
        URL when storage.redirect is enabled and the driver can; else None."""
        if self.registry.redirect_base_url is not None:
            return self.registry.redirect_base_url + paths.blob_data(blob.data_digest)
        if not self.registry.redirect:
            return None
        return await self.driver.redirect_url(paths.blob_data(blob.data_digest), method)

    @translate_storage_errors
    async def link_blob(self, digest, stored_as=None):
        target = str(stored_as or digest).encode("ascii")
        await self.driver.put_content(paths.layer_link(self.name, digest), target)

    @translate_storage_errors
    async def delete_blob(self, digest):
        """Unlink the blob from this repository; its data stays until GC."""
        if not self.registry.delete_enabled:
            raise errors.Unsupported("deletes are disabled (storage.delete.enabled is false)")
        await self.stat_blob(digest)
        try:
            await self.driver.delete(paths.layer_link(self.name, digest).rsplit("/", 1)[0])
        except PathNotFound:
            raise errors.BlobUnknown(detail={"digest": str(digest)}) from None

    @translate_storage_errors
    async def mount_blob(self, digest, source_name):
        """Link a blob of repository C{source_name} into this one; True if done."""
        source = self.registry.repository(source_name)
        async with self.registry.guard.using([digest]):
            try:
                blob = await source.stat_blob(digest)
            except errors.BlobUnknown:
                return None
            await self.link_blob(digest, blob.data_digest)
        return blob

    # uploads

    @translate_storage_errors
    async def start_upload(self, algorithm=DEFAULT_ALGORITHM):
        check_algorithm(algorithm)
        upload_id = new_upload_id()
        started_at = rfc3339_now()
        try:
            await self.driver.put_content(paths.upload_data(self.name, upload_id), b"")
            if algorithm != DEFAULT_ALGORITHM:
                await self.driver.put_content(
                    paths.upload_algorithm(self.name, upload_id), algorithm.encode("ascii")
                )
            # startedat last: its presence marks the upload as existing.
            await self.driver.put_content(
                paths.upload_started_at(self.name, upload_id), started_at.encode("ascii")
            )
        except BaseException:
            # A full disk can refuse startedat after taking the data file:
            # leave no half-made upload nobody knows the id of.
            with contextlib.suppress(StorageError):  # else the purge of stale uploads will
                await self.driver.delete(paths.upload_dir(self.name, upload_id))
            raise
        return Upload(self.registry, self.name, upload_id, algorithm, started_at, 0)

    @translate_storage_errors
    async def get_upload(self, upload_id):
        check_upload_id(upload_id)
        try:
            started_at = await self.driver.get_content(paths.upload_started_at(self.name, upload_id))
        except PathNotFound:
            raise errors.BlobUploadUnknown(detail={"uuid": upload_id}) from None
        try:
            algorithm = (
                await self.driver.get_content(paths.upload_algorithm(self.name, upload_id))
            ).decode("ascii")
        except PathNotFound:
            algorithm = DEFAULT_ALGORITHM
        try:
            size = await stored_upload_size(self.driver, paths.upload_data(self.name, upload_id))
        except PathNotFound:
            size = 0
        return Upload(
            self.registry, self.name, upload_id, algorithm,
            started_at.decode("ascii", "replace"), size,
        )

"""The registry model: repositories, their blobs and uploads, on a driver.

This layer (the ``registryd.storage`` package) alone knows Distribution's
layout (``registryd.storage._paths``) and translates storage errors into
registry errors; it knows nothing of HTTP.  As in Distribution
(``registry.go``), a :class:`Registry` has the global ``blobs``, enumerators of
its repositories, and the ``vacuum`` that every removal goes through; a
:class:`Repository` has ``blobs``, ``manifests``, ``tags`` and ``uploads``.  Garbage
collection, maintenance, the referrers rebuild, the pull-through cache and
the HTTP handlers all work through these.
All authoritative state is in the driver, so several registryd processes
may share one backend; what is kept in memory here (running upload hashes,
locks) is an optimisation that a restart or another node cannot make wrong.
"""

import bisect
import heapq
from collections import OrderedDict

from zope.interface import implementer

from registryd import errors
from registryd.digest import ALGORITHMS
from registryd.interfaces import IRepository
from registryd.lifecycle.immutable import ImmutableTags
from registryd.lifecycle.quotas import QuotaAccounting
from registryd.lifecycle.shared_pulls import SharedPullTimes
from registryd.names import check_repository_name, is_name_component
from registryd.storage import _paths as paths
from registryd.storage.blobs import BlobInfo, BlobStore, LinkedBlobStore
from registryd.storage.cache import ContentCache, LinkCache
from registryd.storage.errors import translate_storage_errors
from registryd.storage.fetch_records import FetchRecords
from registryd.storage.manifest_store import ManifestStore
from registryd.storage.nodes_guard import NodesGuard
from registryd.storage.pulls import PullRecords
from registryd.storage.removal import RepositoryRemoval, storage_now
from registryd.storage.tags import TagStore
from registryd.storage.uploads import HashStates, UploadContext, UploadLocks, UploadStore
from registryd.storage.vacuum import Vacuum

__all__ = ["BlobInfo", "Registry", "Repository"]

#: Fewest directories listed in one driver call by a catalog page walk.
_PAGE_BATCH = 256

#: Directories listed in one driver call by a walk without a page size.
_WHOLE_BATCH = 1024

#: The order ``Registry._with_revisions`` looks for revisions in: the
#: usual algorithm first, so the others are asked about rarely.
_REVISION_ALGORITHMS = sorted(ALGORITHMS, key=lambda algorithm: algorithm != "sha256")

#: Repositories kept made (:meth:`Registry.repository`), least recently used
#: out beyond this: a pull made one per request, and building its stores
#: cost more CPU than a small manifest's whole answer from storage.
MAX_KEPT_REPOSITORIES = 1024


class Registry:
    """The whole registry on one storage driver."""

    def __init__(
        self,
        driver,
        delete_enabled=False,
        accept_sparse_manifests=False,
        read_only=False,
        redirect=False,
        manifest_url_policy=None,
        redirect_base_url=None,
        accept_sparse_images=False,
        immutable_tags=None,
        quotas=(),
        shared_state=None,
        shared_cache=None,
        shared_clock=None,
        store_hash_states=False,
    ):
        """``shared_state``: the ISharedState of the nodes serving ``driver``
        (registryd.shared); upload locks, the push guard, protected tags'
        locks and pull times span the nodes through it (``shared_clock``:
        the IReactorTime stamping shared pull times; the global reactor by
        default).  ``shared_cache``: the nodes'
        :class:`registryd.storage.shared_cache.SharedMetadataCache` (with
        Redis), trusted instead of the per-process link caches when reads
        consult it (``redis.metadatacache``), or None.  ``store_hash_states``:
        other processes or nodes continue this one's uploads (``--workers``,
        or nodes sharing ``shared_state``): store each upload's running hash
        for them (:class:`registryd.storage.uploads.HashStates`)."""
        self.driver = driver
        #: lifecycle.immutable (registryd.lifecycle.immutable.ImmutableTags):
        #: tags that may not be moved or deleted once pushed
        self.immutable_tags = immutable_tags if immutable_tags is not None else ImmutableTags()
        #: held while a protected tag is checked and written, so two pushes
        #: (through any of the nodes sharing ``shared_state``) cannot both
        #: find it free
        self.tag_locks = UploadLocks(shared_state, namespace="tag")
        #: lifecycle.quotas and lifecycle.quota: usage, and the admission
        #: of pushes, one at a time per quota across the nodes
        #: (registryd.lifecycle.quotas)
        self.quotas = QuotaAccounting(
            self,
            quotas,
            locks=UploadLocks(shared_state, namespace="quota"),
            shared_state=shared_state,
        )
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
        #: callables told ``(read_only)`` whenever it changes (worker mode
        #: passes the switch on to the other processes)
        self.read_only_observers = []
        self._read_only = bool(read_only)
        self.hash_states = HashStates(
            stored=store_hash_states or bool(shared_state is not None and shared_state.shared)
        )
        self.upload_lock = UploadLocks(shared_state)
        #: digests pushes (on any node) are using, kept safe from online GC
        self.guard = NodesGuard(shared_state)
        #: parsed manifests by digest (immutable content; registryd.storage.cache)
        self.manifest_cache = ContentCache()
        #: what tags resolved to, revalidated by a stat on every use
        #: (registryd.storage.cache)
        self.tag_cache = LinkCache()
        #: where linked blobs' data is and its size, likewise
        self.blob_link_cache = LinkCache()
        #: tags, revisions, blob links and sizes the nodes share (Redis)
        self.shared_cache = shared_cache
        #: the registry-wide blob store (content by digest)
        self.blobs = BlobStore(driver)
        #: the one way anything is removed from storage
        self.vacuum = Vacuum(driver, self.hash_states, shared_cache)
        #: the pull-through cache's fetch records (registryd.proxy.expiry)
        self.fetch_records = FetchRecords(driver)
        #: pull times the nodes share (registryd.lifecycle.shared_pulls), or
        #: None for a node alone
        self.shared_pulls = None
        if shared_state is not None and shared_state.shared:
            self.shared_pulls = SharedPullTimes(shared_state, shared_clock or _global_reactor())
        #: name -> Repository, most recently used last: a repository holds
        #: no state of its own (everything is in the driver or in the
        #: registry-wide collaborators above), so one per name serves every
        #: request for it
        self._repositories_made = OrderedDict()

    @property
    def read_only(self):
        """storage.maintenance.readonly: the HTTP API refuses every write
        (registryd.http.app); the manhole can flip it while running."""
        return self._read_only

    @read_only.setter
    def read_only(self, on):
        on = bool(on)
        if on == self._read_only:
            return
        self._read_only = on
        for observer in list(self.read_only_observers):
            observer(on)

    def write_refusal(self):
        """The error every write (a request other than GET and HEAD) gets
        now, or None when writes are allowed: read-only mode."""
        if not self.read_only:
            return None
        return errors.Unsupported(
            "the registry is in read-only mode (storage.maintenance.readonly): "
            "pushes and deletes are refused until an administrator turns it off",
            detail={"readonly": True},
            headers={"Allow": "GET, HEAD"},
        )

    def repository(self, name):
        """The repository ``name`` (validated); it need not exist yet.

        Made once per name and kept (up to :data:`MAX_KEPT_REPOSITORIES`):
        a repository's stores are stateless views over the driver, so
        reusing one changes nothing but the CPU a request costs."""
        made = self._repositories_made
        repository = made.get(name)
        if repository is not None:
            made.move_to_end(name)
            return repository
        repository = made[name] = Repository(self, check_repository_name(name))
        if len(made) > MAX_KEPT_REPOSITORIES:
            made.popitem(last=False)
        return repository

    def stored_repository(self, name):
        """The repository ``name`` as found by an enumerator (``repositories``
        and its kin), not validated again: storage may hold names that
        registryd's rules refuse (another registry wrote them), and
        housekeeping must still reach them."""
        return Repository(self, name)

    async def repositories_with_content(self):
        """Names of repositories with manifests or blob links (garbage
        collection marks and sweeps them)."""
        return await self._repositories(("_manifests", "_layers"))

    async def repositories_with_uploads(self):
        """Names of repositories with an uploads directory (upload purging)."""
        return await self._repositories(("_uploads",))

    async def repositories_with_fetch_records(self):
        """Names of repositories holding the pull-through cache's fetch
        records (registryd.proxy.expiry)."""
        return await self._repositories((FetchRecords.MARKER,))

    async def repositories(self):
        """Names of the repositories with manifests, sorted (what the
        catalog lists: see ``_with_revisions``)."""
        return await self._with_revisions(await self._repositories(("_manifests",)))

    async def _with_revisions(self, names):
        """Those of ``names`` that hold a manifest revision, in order: one
        batch of listings per digest algorithm, sha256's first, each
        asking only about the names no earlier algorithm settled (nearly
        every revision is sha256, so that is about one listing per name).

        Deleting a repository, or its last manifest, leaves empty
        directories behind on a filesystem (removing them could race a
        push writing into them): such a repository is gone for clients,
        and must not stay in the catalog.  A revision directory
        Distribution's delete left without its link still counts, as it
        does for Distribution."""
        names = list(names)
        with_revision = set()
        unsettled = names
        for algorithm in _REVISION_ALGORITHMS:
            if not unsettled:
                break
            listings = await self.driver.list_many(
                [f"{paths.manifest_revisions(name)}/{algorithm}" for name in unsettled]
            )
            with_revision.update(name for name, found in zip(unsettled, listings) if found)
            unsettled = [name for name, found in zip(unsettled, listings) if not found]
        return [name for name in names if name in with_revision]

    @translate_storage_errors
    async def _repositories(self, markers):
        """Names of all repositories, sorted: directories under
        ``repositories/`` with one of ``markers`` as a child, found recursively
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
                    if not _is_walked(child):
                        continue  # _manifests, a driver's temporary, a stray name
                    next_level.append((f"{prefix}/{child}" if prefix else child, f"{path}/{child}"))
            level = next_level
        return sorted(name for name in found if name)

    @translate_storage_errors
    async def repository_page(self, last=None, limit=None, include=None, markers=("_manifests",)):
        """One page of the catalog: ``(names, more)``, the first ``limit``
        repository names after ``last`` (all if ``limit`` is None) for which
        ``include(name)`` is true, sorted, and whether more follow.  Found by
        ``_manifests`` (the default ``markers``), only repositories holding a
        manifest revision count (:meth:`_with_revisions`).

        A client pages through a large catalog with ``n`` and ``last``; a
        walk of the whole tree per page would make listing N repositories
        cost N / n walks.  This walk visits directories in the order of
        their names (a heap), skips subtrees that sort entirely before
        ``last``, and stops once nothing left to visit can sort before the
        names it has: a page costs about ``limit`` directory listings.
        (A depth-first walk would not do: ``a/b`` sorts after ``a-b``.)
        A listed directory's children enter the heap one at a time, each
        when its previous sibling leaves (:class:`_Siblings`), starting at
        ``last``: a page of a directory of 10,000 repositories costs the
        page, not 10,000 names.
        Listings go to the driver in batches, as in ``repositories``.
        """
        heap = [("", paths.repositories(), None)]
        found = []
        while heap:
            if limit is not None and len(found) > limit:
                found.sort()
                if heap[0][0] > found[limit]:
                    break  # whatever is left sorts after a full page
            if limit is None:
                size = _WHOLE_BATCH
            else:
                size = max(limit + 1 - len(found), _PAGE_BATCH)
            batch = []
            while heap and len(batch) < size:
                entry = heap[0]
                following = entry[2].following() if entry[2] is not None else None
                if following is None:
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, following)
                batch.append(entry)
            listings = await self.driver.list_many([path for _, path, _ in batch])
            candidates = []
            for (prefix, path, _), children in zip(batch, listings):
                if not children:
                    continue
                if (
                    prefix
                    and (last is None or prefix > last)
                    and any(marker in children for marker in markers)
                    and (include is None or include(prefix))
                ):
                    candidates.append(prefix)
                first = _Siblings.first_of(prefix, path, children, last)
                if first is not None:
                    heapq.heappush(heap, first)
            if candidates and "_manifests" in markers:
                candidates = await self._with_revisions(candidates)
            found.extend(candidates)
        found.sort()
        if limit is None:
            return found, False
        return found[:limit], len(found) > limit

    @translate_storage_errors
    async def find_readable_repository_with_blob(self, digest, may_read=lambda name: True):
        """A repository the caller may read that links ``digest``, or None."""
        for name in await self._repositories(("_layers",)):
            if not may_read(name):
                continue
            if await self.stored_repository(name).blobs.has(digest):
                return name
        return None


class _Siblings:
    """The children of one listed directory, as the catalog walk
    (:meth:`Registry.repository_page`) visits them: in order, starting
    with the first that can matter after ``last``, skipping what is no
    name component (``_manifests``, a driver's temporary, a stray name).

    Each heap entry is ``(name, driver path, siblings)``; only the next
    unvisited child of each directory is in the heap, which is enough as
    the children sort among themselves as their names do."""

    __slots__ = ("_name_prefix", "_directory_path", "_listed", "_next_index", "_before_last")

    def __init__(self, name, path, children, last):
        self._name_prefix = f"{name}/" if name else ""
        self._directory_path = path
        self._listed = children
        self._next_index, self._before_last = self._start(children, last)

    def _start(self, children, last):
        """Where to start in ``children``, and the children before it to
        visit anyway: those whose names are a beginning of ``last``
        (below ``a`` are names after ``a-b``; ``a/b``'s children may
        follow ``a/b/c``)."""
        prefix = self._name_prefix
        if last is None:
            return 0, ()
        if not last.startswith(prefix):
            # All of them sort on the same side of last.
            return (0, ()) if prefix > last else (len(children), ())
        rest = last[len(prefix) :]
        index = bisect.bisect_left(children, rest)
        also = sorted(
            {
                rest[:length]
                for length in range(1, len(rest))
                if _in_sorted(children, rest[:length], index)
            }
        )
        return index, also

    @classmethod
    def first_of(cls, name, path, children, last):
        """The heap entry of the first child of directory ``name`` (at
        ``path``, listed as ``children``) to visit, or None.  A repository's
        own directory (``_layers``, ``_manifests``...) has none: most
        directories of a walk, so that answer is found without more."""
        if not any(map(_is_walked, children)):
            return None
        return cls(name, path, children, last).following()

    def following(self):
        """The heap entry of the child after those handed out so far, or None."""
        if self._before_last:
            child, self._before_last = self._before_last[0], self._before_last[1:]
            if _is_walked(child):
                return (self._name_prefix + child, f"{self._directory_path}/{child}", self)
            return self.following()
        children = self._listed
        index = self._next_index
        while index < len(children):
            child = children[index]
            index += 1
            if _is_walked(child):
                self._next_index = index
                return (self._name_prefix + child, f"{self._directory_path}/{child}", self)
        self._next_index = index
        return None


def _is_walked(child):
    """Whether a walk descends into ``child``: a name component, and not a
    driver's temporary."""
    return not child.endswith(".tmp") and is_name_component(child)


def _in_sorted(items, item, end):
    """Whether ``item`` is among the first ``end`` of sorted ``items``."""
    index = bisect.bisect_left(items, item, 0, end)
    return index < end and items[index] == item


@implementer(IRepository)
class Repository:
    """One repository: its ``blobs``, ``manifests``, ``tags`` and ``uploads``
    (Distribution's ``Repository``), each made here with the collaborators
    it needs from the registry."""

    def __init__(self, registry, name):
        self.name = name
        self._registry = registry
        driver = registry.driver
        vacuum = registry.vacuum
        self.blobs = LinkedBlobStore(
            name,
            driver,
            registry.blobs,
            vacuum,
            registry.guard,
            registry.repository,
            registry,
            link_cache=registry.blob_link_cache,
            shared_cache=registry.shared_cache,
        )
        self.tags = TagStore(name, driver, vacuum, registry.tag_cache, registry.shared_cache)
        #: when its tags and manifests were last pulled (registryd.storage.pulls)
        self.pulls = PullRecords(name, driver, registry.shared_pulls)
        self.manifests = ManifestStore(
            name,
            driver,
            registry.blobs,
            self.blobs,
            self.tags,
            vacuum,
            registry.guard,
            registry.manifest_cache,
            registry,
            registry.immutable_tags,
            registry.tag_locks,
            registry.quotas,
            tag_cache=registry.tag_cache,
            pulls=self.pulls,
            shared_cache=registry.shared_cache,
        )
        self.uploads = UploadStore(
            UploadContext(
                name,
                driver,
                registry.blobs,
                self.blobs,
                vacuum,
                registry.guard,
                registry.hash_states,
                registry.upload_lock,
            )
        )
        self._removal = RepositoryRemoval(self, driver, vacuum, registry.guard)

    @translate_storage_errors
    async def storage_time(self):
        """Now, in the storage's own clock (``registryd.storage.removal.storage_now``):
        what to compare link times with to tell what was written since."""
        return await storage_now(self._registry.driver, self._registry.vacuum, self.name)

    async def check_removable(self):
        """DENIED if a tag of this repository is immutable (lifecycle.immutable)."""
        protection = self._registry.immutable_tags
        if not protection:
            return
        for tag in await self.tags.enumerate():
            rule = protection.rule_for(self.name, tag)
            current = await self.tags.get(tag) if rule is not None else None
            if current is not None:
                raise protection.refusal(self.name, tag, current, rule)

    @translate_storage_errors
    async def remove(self):
        """Remove the repository's tags, manifests, blob links, referrers
        index and idle uploads, leaving what pushes write meanwhile
        (``registryd.storage.removal``); a RemovalReport.  No policy
        checks: storage.delete and protected tags are the callers'."""
        try:
            return await self._removal.run()
        finally:
            await self._registry.quotas.forget(self.name)
            await self.pulls.forget_repository()


def _global_reactor():
    from twisted.internet import reactor

    return reactor

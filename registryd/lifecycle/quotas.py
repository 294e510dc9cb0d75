"""Quotas: ``lifecycle.quotas`` (per repository pattern) and
``lifecycle.quota`` (the whole registry).

A quota bounds the bytes the repositories matching its pattern hold
together, and how many such repositories there are.  Usage is counted
from what manifests reference, deduplicated by digest across those
repositories: each manifest's own bytes and each blob's stored size (not
the size a descriptor claims, which nothing checks).  A blob no manifest
references (an upload a refused push left behind) counts for nothing and
is garbage collection's.

A manifest PUT that would take a quota over is refused with 403 DENIED
naming the quota and its usage, before anything of it is linked
(``QuotaAccounting.admitting``, around the storage model's linking).  Pushes
under one quota are admitted one at a time, so two cannot both fit into
the last free bytes: in this process, and across the nodes that share
state (Redis), through the quota's lock there (``quota:<id>``, the keyed
locks of :class:`registryd.storage.uploads.UploadLocks`).  Each admission
lists the repositories again, so one another node created counts at once.

What a repository holds is counted from storage and kept by each node;
with shared state, every change to a repository (a push admitted, a
manifest or the repository removed) increments its counter
``quota:changes:<name>``, and a node's count is used only while the
counter still reads what it read when counting, so a push through one
node counts against the quota on every other node at once.  The counters
belong to an epoch (``quota:epoch``, chosen by the first node that finds
none): a Redis that lost its data (restarted) has a new epoch, and every
node counts again from storage rather than trust what it counted before.
So does a node that served while Redis was away (its pushes then went
uncounted by the counters): its first answer from Redis again starts a
new epoch.  While Redis is away, each node admits as it would alone, with
its counts trusted for ``MAX_AGE`` seconds (another node's pushes are
seen within that), which is also the longest any count is trusted.
"""

import contextlib
import hashlib
import re
import time
import uuid

import attr

from registryd import errors
from registryd.patterns import compile_pattern
from registryd.shared.errors import SharedStateUnavailable
from registryd.storage.walking import gather_limited

#: Seconds a repository's counted usage (and the list of repositories) is
#: trusted before it is counted again from storage (other nodes' pushes).
MAX_AGE = 60.0
#: Most blob sizes remembered (content-addressed, so never stale).
MAX_SIZES = 1_000_000


def format_size(size):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@attr.s(frozen=True, eq=False)
class Quota:
    """One quota: at most ``bytes`` and ``repositories`` (each None: no
    bound) over the repositories matching ``repository``."""

    repository = attr.ib()  # the pattern as written
    bytes = attr.ib(default=None)
    repositories = attr.ib(default=None)
    where = attr.ib(default="lifecycle.quotas")

    def __attrs_post_init__(self):
        object.__setattr__(self, "_pattern", re.compile(compile_pattern(self.repository)))

    def _key(self):
        return (self.repository, self.bytes, self.repositories, self.where)

    def __eq__(self, other):
        return isinstance(other, Quota) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    @property
    def lock_name(self):
        """The name of this quota's lock, the same on every node with the
        same configuration."""
        return hashlib.sha256(repr(self._key()).encode("utf-8")).hexdigest()[:32]

    def applies_to(self, name):
        return bool(self._pattern.fullmatch(name))

    def describe(self):
        bounds = []
        if self.bytes is not None:
            bounds.append(f"bytes {format_size(self.bytes)}")
        if self.repositories is not None:
            bounds.append(f"repositories {self.repositories}")
        return f"{self.where} (repository {self.repository!r}, {', '.join(bounds)})"


@attr.s(frozen=True)
class QuotaUsage:
    quota = attr.ib()
    bytes = attr.ib()
    repositories = attr.ib()

    def to_dict(self):
        return {
            "quota": self.quota.describe(),
            "repository": self.quota.repository,
            "bytes": self.bytes,
            "maxbytes": self.quota.bytes,
            "repositories": self.repositories,
            "maxrepositories": self.quota.repositories,
        }


class QuotaAccounting:
    """Counts usage through the storage model and admits pushes."""

    def __init__(
        self,
        registry,
        quotas=(),
        locks=None,
        shared_state=None,
        clock=time.monotonic,
        max_age=MAX_AGE,
    ):
        """
        :param registry: the ``registryd.storage.registry.Registry`` counted.
        :param quotas: ``Quota``s, the global one (if any) among them.
        :param locks: keyed locks (:class:`registryd.storage.uploads.UploadLocks`)
            held while a push is admitted, one per quota; shared by the
            nodes when made with their shared state.
        :param shared_state: the nodes' ISharedState, for the counters of
            changes (used when ``shared``).
        """
        if locks is None:
            from registryd.storage.uploads import UploadLocks

            locks = UploadLocks(namespace="quota")
        self._registry = registry
        self.quotas = tuple(quotas)
        self._locks = locks
        self._shared = shared_state if shared_state is not None and shared_state.shared else None
        self._clock = clock
        self._max_age = max_age
        # name -> (counted at, {digest: size}, (epoch, changes) or None)
        self._usage = {}
        self._names = None  # (counted at, set of names)
        self._sizes = {}  # blob digest (str) -> stored size
        #: this node served without the shared counters: start a new epoch
        self._missed_changes = False

    def __bool__(self):
        return bool(self.quotas)

    def applying_to(self, name):
        return [quota for quota in self.quotas if quota.applies_to(name)]

    async def _blob_size(self, descriptor):
        key = str(descriptor.digest)
        size = self._sizes.get(key)
        if size is None:
            try:
                size = (await self._registry.blobs.stat(descriptor.digest)).size
            except errors.BlobUnknown:
                return descriptor.size or 0  # a sparse manifest's: not stored, counted as claimed
            if len(self._sizes) >= MAX_SIZES:
                self._sizes.clear()
            self._sizes[key] = size
        return size

    async def contribution(self, digest, manifest):
        """What one manifest adds: ``{digest: size}`` of itself and its blobs."""
        found = {str(digest): len(manifest.body)}
        for blob in manifest.blobs:
            found[str(blob.digest)] = await self._blob_size(blob)
        return found

    async def _epoch(self):
        """The counters' epoch (bytes), a new one when Redis has none or
        this node missed changes; None while Redis does not answer."""
        if self._shared is None:
            return None
        try:
            epoch = await self._shared.get("quota:epoch")
            if epoch is None or self._missed_changes:
                epoch = uuid.uuid4().hex.encode("ascii")
                await self._shared.set("quota:epoch", epoch)
                self._missed_changes = False
            return epoch
        except SharedStateUnavailable:
            self._missed_changes = True
            return None

    async def _version(self, name, epoch):
        """``(epoch, changes of name)``, or None without shared counters."""
        if epoch is None:
            return None
        try:
            changes = await self._shared.get(f"quota:changes:{name}")
        except SharedStateUnavailable:
            self._missed_changes = True
            return None
        try:
            return (epoch, int(changes or 0))
        except ValueError:
            # not a node's counter; a node's INCR of it fails, which starts
            # a new epoch, so a count made now is never trusted past a change
            return (epoch, -1)

    async def _changed(self, name):
        """Count a change of repository ``name`` on the shared counter;
        its new value, or None without shared counters."""
        if self._shared is None:
            return None
        try:
            return await self._shared.incr(f"quota:changes:{name}")
        except SharedStateUnavailable:
            self._missed_changes = True
            return None

    async def repository_usage(self, name, epoch=None):
        """``{digest: size}`` of what repository ``name``'s manifests hold.
        ``epoch``: the counters' epoch of this admission or report."""
        version = await self._version(name, epoch)
        cached = self._usage.get(name)
        if (
            cached is not None
            and self._clock() - cached[0] < self._max_age
            and (version is None or cached[2] == version)
        ):
            return cached[1]
        repository = self._registry.stored_repository(name)
        counted = {}

        async def count(digest):
            try:
                stored = await repository.manifests.get(str(digest))
            except errors.RegistryError:
                return {}  # deleted meanwhile, or unreadable: holds nothing
            return await self.contribution(stored.digest, stored.manifest)

        for found in await gather_limited(count, await repository.manifests.enumerate()):
            counted.update(found)
        self._usage[name] = (self._clock(), counted, version)
        return counted

    async def _repository_names(self, fresh=False):
        """The registry's repositories; listed again when ``fresh`` (an
        admission: a repository another node created counts at once), else
        at most ``MAX_AGE`` old."""
        if fresh or self._names is None or self._clock() - self._names[0] >= self._max_age:
            self._names = (self._clock(), set(await self._registry.repositories()))
        return self._names[1]

    async def usage(self, quota, adding=None, fresh=False):
        """``QuotaUsage`` of ``quota``; with ``adding`` = ``(name,
        {digest: size})``, as it would be after that push.  ``fresh``: list
        the repositories again (``_repository_names``)."""
        names = {name for name in await self._repository_names(fresh) if quota.applies_to(name)}
        if adding is not None:
            names.add(adding[0])
        epoch = await self._epoch()
        held = {}
        for name in sorted(names):
            held.update(await self.repository_usage(name, epoch))
        if adding is not None:
            held.update(adding[1])
            return QuotaUsage(quota, sum(held.values()), len(names))
        found = QuotaUsage(quota, sum(held.values()), len(names))
        # Imported when used: prometheus_client must not be imported before
        # worker mode has chosen its multiprocess directory (registryd.runtime.workers).
        from registryd.ops import metrics

        metrics.QUOTA_USED_BYTES.labels(quota.where).set(found.bytes)
        metrics.QUOTA_REPOSITORIES.labels(quota.where).set(found.repositories)
        if quota.bytes is not None:
            metrics.QUOTA_LIMIT_BYTES.labels(quota.where).set(quota.bytes)
        return found

    async def report(self, name=None):
        """Every quota's usage (of those applying to ``name``, if given)."""
        quotas = self.quotas if name is None else self.applying_to(name)
        return [await self.usage(quota) for quota in quotas]

    @contextlib.asynccontextmanager
    async def admitting(self, name, digest, manifest):
        """Around the linking of a pushed manifest: DENIED if it would take
        a quota over; pushes under the same quotas wait for each other."""
        quotas = self.applying_to(name)
        if not quotas:
            yield
            return
        releases = []
        try:
            for quota in sorted(quotas, key=lambda q: q.lock_name):
                releases.append(await self._locks.acquire(quota.lock_name))
            adding = await self.contribution(digest, manifest)
            for quota in quotas:
                before = await self.usage(quota, fresh=True)
                after = await self.usage(quota, (name, adding))
                self._check(quota, before, after, name)
            yield
            self._counted_push(name, adding, await self._changed(name))
            if self._names is not None:
                self._names[1].add(name)
        finally:
            for release in reversed(releases):
                release()

    def _counted_push(self, name, adding, changes):
        """Add a linked push to this node's count of ``name`` when the
        shared counter moved only by it (``changes``: its new value), else
        leave the repository to be counted again."""
        cached = self._usage.pop(name, None)
        if cached is None:
            return
        counted_at, counted, version = cached
        if version is None and changes is None:
            self._usage[name] = (counted_at, {**counted, **adding}, None)
        elif version is not None and changes == version[1] + 1:
            self._usage[name] = (counted_at, {**counted, **adding}, (version[0], changes))

    def _check(self, quota, before, after, name):
        """Refuse a push that adds a repository or bytes beyond ``quota``
        (one that adds nothing passes even over a quota lowered since)."""
        if (
            quota.repositories is not None
            and after.repositories > quota.repositories
            and after.repositories > before.repositories
        ):
            raise errors.Denied(
                f"quota {quota.describe()} exceeded: a new repository {name} would make "
                f"{after.repositories} repositories",
                detail=after.to_dict(),
            )
        if quota.bytes is not None and after.bytes > quota.bytes and after.bytes > before.bytes:
            raise errors.Denied(
                f"quota {quota.describe()} exceeded: this push would make its usage "
                f"{format_size(after.bytes)} ({after.bytes} bytes) of {format_size(quota.bytes)}",
                detail=after.to_dict(),
            )

    async def forget(self, name):
        """Repository ``name`` lost manifests: count it again when asked,
        on every node."""
        self._usage.pop(name, None)
        self._names = None
        await self._changed(name)

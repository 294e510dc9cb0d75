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
under one quota are admitted one at a time in this process, so two cannot
both fit into the last free bytes.  Each admission lists the repositories
again, so one another node created counts at once; a repository this node
has counted is counted again from storage after ``MAX_AGE`` seconds, so
another node's pushes into it are seen within that.
"""

import contextlib
import re
import time

import attr
from twisted.internet import defer

from registryd import errors
from registryd.patterns import compile_pattern
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

    def __init__(self, registry, quotas=(), clock=time.monotonic, max_age=MAX_AGE):
        """
        :param registry: the ``registryd.storage.registry.Registry`` counted.
        :param quotas: ``Quota``s, the global one (if any) among them.
        """
        self._registry = registry
        self.quotas = tuple(quotas)
        self._clock = clock
        self._max_age = max_age
        self._usage = {}  # name -> (counted at, {digest: size})
        self._names = None  # (counted at, set of names)
        self._sizes = {}  # blob digest (str) -> stored size
        self._locks = {}  # quota -> DeferredLock

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

    async def repository_usage(self, name):
        """``{digest: size}`` of what repository ``name``'s manifests hold."""
        cached = self._usage.get(name)
        if cached is not None and self._clock() - cached[0] < self._max_age:
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
        self._usage[name] = (self._clock(), counted)
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
        held = {}
        for name in sorted(names):
            held.update(await self.repository_usage(name))
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
        locks = [
            self._locks.setdefault(quota, defer.DeferredLock())
            for quota in sorted(quotas, key=lambda q: q.where)
        ]
        held = []
        try:
            for lock in locks:
                await lock.acquire()
                held.append(lock)
            adding = await self.contribution(digest, manifest)
            for quota in quotas:
                before = await self.usage(quota, fresh=True)
                after = await self.usage(quota, (name, adding))
                self._check(quota, before, after, name)
            yield
            usage = await self.repository_usage(name)
            usage.update(adding)
            if self._names is not None:
                self._names[1].add(name)
        finally:
            for lock in held:
                lock.release()

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

    def forget(self, name):
        """Repository ``name`` lost manifests: count it again when asked."""
        self._usage.pop(name, None)
        self._names = None

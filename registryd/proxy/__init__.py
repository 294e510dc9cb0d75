"""registryd as a pull-through cache of another registry (Distribution's ``proxy:``).

With ``proxy.remoteurl`` set, registryd mirrors that registry.  As in
Distribution (``registry/proxy``), the cache is another implementation of
the storage model's interfaces (``registryd.interfaces``), chosen once when
the service is composed: a :class:`ProxyRegistry` in place of the local
:class:`registryd.storage.registry.Registry`, whose repositories'
``blobs``, ``manifests`` and ``tags`` wrap the local ones and go upstream on
a miss (``blobs``, ``manifests``, ``tags``), keeping what upstream sent.
The HTTP handlers cannot tell the difference; writes are refused (405
UNSUPPORTED) through :meth:`ProxyRegistry.write_refusal`, and the catalog shows
what is cached locally.  Cached manifests expire ``proxy.ttl`` after they
were fetched (``expiry``), and the garbage collector then reclaims their
blobs.

The pieces: ``upstream`` (the HTTP client with Docker token and Basic
auth), ``manifests`` (tag lookups, verification, storing), ``blobs``
(streaming to the client and into storage at once), ``tags`` (upstream's
tag list), ``expiry`` (removal after the TTL).  The services here are
children of ``RegistryService``.
"""

import time

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from registryd import errors
from registryd.interfaces import IRepository

log = Logger()

#: Longest time between two expiry passes.
MAX_EXPIRY_INTERVAL = 3600.0
#: The name of the expiry timer (one process only in worker mode).
EXPIRY_TIMER = "proxy cache expiry"


@implementer(IRepository)
class ProxyRepository:
    """A repository of the cache: the local one's stores, wrapped."""

    def __init__(self, local, upstream, fetch_records, clock):
        from registryd.proxy.blobs import ProxyBlobStore
        from registryd.proxy.manifests import ProxyManifestStore
        from registryd.proxy.tags import ProxyTagStore

        self.name = local.name
        self.blobs = ProxyBlobStore(local.blobs, local.uploads, upstream)
        self.tags = ProxyTagStore(local.tags, upstream)
        self.manifests = ProxyManifestStore(
            local.manifests, local.tags, upstream, fetch_records, clock
        )
        #: never written to: the cache refuses pushes (write_refusal)
        self.uploads = local.uploads
        #: pull times of what the cache serves (registryd.storage.pulls)
        self.pulls = local.pulls


class ProxyRegistry:
    """The registry the HTTP API serves in pull-through mode: the local
    :class:`registryd.storage.registry.Registry` (``local``, which garbage
    collection, maintenance and the manhole keep working on) with its
    repositories wrapped."""

    def __init__(self, local, upstream, ttl, clock=time.time):
        self.local = local
        self.upstream = upstream
        self.ttl = ttl
        self.clock = clock

    @property
    def remote_url(self):
        return self.upstream.url

    def repository(self, name):
        return ProxyRepository(
            self.local.repository(name), self.upstream, self.local.fetch_records, self.clock
        )

    def write_refusal(self):
        """As Distribution: a pull-through cache only pulls (and read-only
        mode, if on, says so first)."""
        refusal = self.local.write_refusal()
        if refusal is not None:
            return refusal
        return errors.Unsupported(
            f"registryd is a pull-through cache of {self.remote_url} (proxy.remoteurl): "
            "pushes, uploads and deletes are not supported",
            detail={"proxy": self.remote_url},
            headers={"Allow": "GET, HEAD"},
        )

    # what the handlers ask of a registry besides repositories: the local one's

    @property
    def accept_sparse_manifests(self):
        return self.local.accept_sparse_manifests

    @property
    def read_only(self):
        return self.local.read_only

    @property
    def delete_enabled(self):
        return self.local.delete_enabled

    @property
    def immutable_tags(self):
        return self.local.immutable_tags

    @property
    def quotas(self):
        return self.local.quotas

    async def repository_page(self, *args, **kwargs):
        """The catalog: what is cached."""
        return await self.local.repository_page(*args, **kwargs)

    async def find_readable_repository_with_blob(self, *args, **kwargs):
        return await self.local.find_readable_repository_with_blob(*args, **kwargs)

    async def expire(self):
        from registryd.proxy.expiry import expire

        return await expire(self.local, self.ttl, clock=self.clock)


def create(registry, config, reactor=None):
    """The :class:`ProxyRegistry` around ``registry`` for a :class:`registryd.config.ProxyConfig`."""
    from registryd.proxy.upstream import Upstream

    upstream = Upstream(
        config.remote_url,
        config.username,
        config.password,
        reactor=reactor,
        max_blob_size=config.max_blob_size,
    )
    return ProxyRegistry(registry, upstream, config.ttl)


class UpstreamConnections(Service):
    """Closes the upstream client's idle connections when registryd stops."""

    def __init__(self, cache):
        self.setName("proxy upstream")
        self.cache = cache

    def stopService(self):
        super().stopService()
        return defer.maybeDeferred(self.cache.upstream.close)


def services(cache, maintenance, clock=None):
    """The services a pull-through cache adds to RegistryService: the
    upstream connections and, unless ``ttl`` is 0, the expiry timer, which
    runs the garbage collector after each pass that removed something."""
    from registryd.ops.maintenance import PeriodicService

    found = [UpstreamConnections(cache)]
    if cache.ttl > 0:

        async def expire_and_collect():
            report = await cache.expire()
            if report.removed and not maintenance.gc_running:
                await maintenance.gc()

        interval = max(1.0, min(cache.ttl, MAX_EXPIRY_INTERVAL))
        found.append(
            PeriodicService(
                EXPIRY_TIMER,
                interval,
                maintenance.scheduled(EXPIRY_TIMER, interval, expire_and_collect),
                clock=clock,
            )
        )
    return found

"""registryd as a pull-through cache of another registry (Distribution's ``proxy:``).

With ``proxy.remoteurl`` set, registryd mirrors that registry: pulls are
answered from local storage when it has the content and from upstream
otherwise, keeping what upstream sent (``manifests``, ``blobs``); pushes,
uploads and deletes are refused (405 UNSUPPORTED, in ``registryd.app``);
catalog and tags list show what is cached locally.  Cached manifests
expire ``proxy.ttl`` after they were fetched (``expiry``), and the garbage
collector then reclaims their blobs.

The pieces: ``upstream`` (the HTTP client with Docker token and Basic
auth), ``manifests`` (tag lookups, verification, storing), ``blobs``
(streaming to client and storage at once), ``expiry`` (fetch records and
their removal).  L{ProxyCache} is what the HTTP handlers see; the
services here are children of ``RegistryService``.
"""

import time

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

#: Longest time between two expiry passes.
MAX_EXPIRY_INTERVAL = 3600.0
#: The name of the expiry timer (one process only in worker mode).
EXPIRY_TIMER = "proxy cache expiry"


class ProxyCache:
    """The pull-through cache of one registry, for the HTTP handlers."""

    def __init__(self, registry, upstream, ttl, clock=time.time):
        from registryd.proxy.manifests import ManifestFetcher

        self.registry = registry
        self.upstream = upstream
        self.ttl = ttl
        self.clock = clock
        self._manifests = ManifestFetcher(registry, upstream, clock)

    @property
    def remote_url(self):
        return self.upstream.url

    async def manifest(self, repository, reference, accept=None):
        """The StoredManifest C{reference} names: cached or fetched."""
        return await self._manifests.get(repository, reference, accept)

    async def tags(self, repository):
        """The tags of C{repository} upstream (all of them, not just the
        cached ones, as Distribution's proxy lists them); the cached tags
        when upstream cannot be reached."""
        from registryd import errors

        try:
            tags = await self.upstream.tags(repository.name)
        except errors.UpstreamUnavailable:
            return await repository.manifests.tags()
        if tags is None:
            raise errors.NameUnknown(detail={"name": repository.name})
        return tags

    def served_from_cache(self, kind):
        """Count a blob or manifest the cache had (a hit)."""
        from registryd import metrics

        metrics.PROXY_REQUESTS.labels(kind, "hit").inc()

    async def serve_blob(self, ctx, request, repository, digest):
        """Answer a GET/HEAD of a blob the repository lacks locally."""
        from registryd.proxy.blobs import serve_blob

        return await serve_blob(ctx, request, repository, digest, self.upstream)

    async def expire(self):
        from registryd.proxy.expiry import expire

        return await expire(self.registry, self.ttl, clock=self.clock)


def create(registry, config, reactor=None):
    """The L{ProxyCache} for a L{registryd.config.ProxyConfig}."""
    from registryd.proxy.upstream import Upstream

    upstream = Upstream(config.remote_url, config.username, config.password, reactor=reactor,
                        max_blob_size=config.max_blob_size)
    return ProxyCache(registry, upstream, config.ttl)


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
    upstream connections and, unless C{ttl} is 0, the expiry timer, which
    runs the garbage collector after each pass that removed something."""
    from registryd.admin.maintenance import PeriodicService

    found = [UpstreamConnections(cache)]
    if cache.ttl > 0:

        async def expire_and_collect():
            report = await cache.expire()
            if report.removed and not maintenance.gc_running:
                await maintenance.gc()

        interval = max(1.0, min(cache.ttl, MAX_EXPIRY_INTERVAL))
        found.append(PeriodicService(EXPIRY_TIMER, interval, expire_and_collect, clock=clock))
    return found

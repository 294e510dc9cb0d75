"""Manifests through the cache: ask upstream what a tag is, keep what it sent.

As Distribution 2.8's proxy: a tag is looked up upstream on every pull (a
HEAD, so a tag moved upstream is seen at once) and served from local
storage when the local copy has the digest upstream names; otherwise the
manifest is fetched by that digest, checked against it, stored verbatim
(without its blobs, which come when they are asked for) and tagged.  When
upstream cannot be reached or fails, the tag as cached is served (stale but
available).  A digest reference is immutable: local first, else upstream.

:class:`ProxyManifestStore` is the cache's manifest store (Distribution's
``proxymanifeststore.go``): ``get`` does the above; everything else is the
local store's.
"""

import attr
from twisted.logger import Logger
from zope.interface import implementer

from registryd import errors
from registryd.digest import DEFAULT_ALGORITHM, Digest
from registryd.interfaces import IManifestStore
from registryd.manifests import mediatypes
from registryd.manifests.parse import MAX_MANIFEST_SIZE
from registryd.ops import metrics
from registryd.proxy.upstream import header_values
from registryd.storage.manifest_store import is_digest_reference
from registryd.storage.tags import check_tag

log = Logger()


def _header(response, name):
    values = header_values(response, name)
    return values[0] if values else None


def _upstream_digest(response):
    text = _header(response, "docker-content-digest")
    if text is None:
        return None
    try:
        return Digest.parse(text.strip())
    except errors.RegistryError:
        return None


@implementer(IManifestStore)
class ProxyManifestStore:
    """The manifests of one repository of the cache."""

    def __init__(self, local, tags, upstream, fetch_records, clock):
        """
        :param local: the repository's local manifest store.
        :param tags: the repository's local tag store (where a tag fetched
            from upstream is cached).
        :param fetch_records: :class:`registryd.storage.fetch_records.FetchRecords`.
        """
        self._local = local
        self._tags = tags
        self._upstream = upstream
        self._records = fetch_records
        self.clock = clock
        self.name = local.name

    # the local store's

    def has(self, digest):
        return self._local.has(digest)

    def content(self, digest):
        """What is cached of ``digest`` (None if nothing): the tag details
        read an image's config from it for its platform."""
        return self._local.content(digest)

    def resolve(self, reference):
        return self._local.resolve(reference)

    def put(self, *args, **kwargs):
        return self._local.put(*args, **kwargs)

    def delete(self, *args, **kwargs):
        return self._local.delete(*args, **kwargs)

    def enumerate(self):
        return self._local.enumerate()

    def referrers(self, subject, artifact_type=None):
        return self._local.referrers(subject, artifact_type)

    # through the cache

    async def get(self, reference, accept=None):
        """The StoredManifest ``reference`` names, from the cache or upstream."""
        local = self._local
        if is_digest_reference(reference):
            digest = Digest.parse(reference)
            if await local.has(digest):
                return await self._hit(str(digest))
            return await self._fetch(digest, None, accept)
        check_tag(reference)
        try:
            response = await self._upstream.manifest("HEAD", self.name, reference, accept)
        except errors.UpstreamUnavailable as unavailable:
            try:
                stored = await self._local_copy(reference)
            except errors.ManifestUnknown:
                raise unavailable from None  # nothing cached to fall back on
            log.warn(
                "upstream unavailable: serving {name}:{tag} as cached",
                name=self.name,
                tag=reference,
            )
            metrics.PROXY_REQUESTS.labels("manifest", "stale").inc()
            return stored
        if response is None:
            raise errors.ManifestUnknown(detail={"tag": reference})
        digest = _upstream_digest(response)
        if digest is not None and await local.has(digest):
            if await self._tagged(reference) != digest:
                await self._tags.tag(reference, digest)
            return await self._hit(str(digest))
        return await self._fetch(digest, reference, accept)

    async def _tagged(self, tag):
        try:
            return await self._local.resolve(tag)
        except errors.ManifestUnknown:
            return None

    async def _hit(self, reference):
        stored = await self._local_copy(reference)
        metrics.PROXY_REQUESTS.labels("manifest", "hit").inc()
        return stored

    async def _local_copy(self, reference):
        stored = await self._local.get(reference)
        record = await self._records.read(self.name, stored.digest)
        if record is not None and record[1] and record[1] != stored.media_type:
            stored = attr.evolve(stored, media_type=record[1])
        return stored

    async def _fetch(self, digest, tag, accept):
        """GET the manifest (by ``digest`` when known, else by ``tag``),
        check it, store it, tag it."""
        reference = str(digest) if digest is not None else tag
        response = await self._upstream.manifest("GET", self.name, reference, accept)
        if response is None:
            raise errors.ManifestUnknown(
                detail={"digest": reference} if digest is not None else {"tag": tag}
            )
        body = await self._upstream.body(response).read_all(MAX_MANIFEST_SIZE)
        metrics.PROXY_REQUESTS.labels("manifest", "miss").inc()
        metrics.PROXY_PULLED_BYTES.labels("manifest").inc(len(body))
        content_type = _header(response, "content-type")
        said = _upstream_digest(response)
        expected = digest or said
        actual = Digest.of(body, expected.algorithm if expected else DEFAULT_ALGORITHM)
        for claimed in (digest, said):
            if claimed is not None and Digest.of(body, claimed.algorithm) != claimed:
                raise errors.UpstreamUnavailable(
                    "the upstream registry sent a manifest that does not match its digest",
                    detail={"expected": str(claimed), "name": self.name},
                )
        media_type = content_type.split(";")[0].strip() if content_type else None
        if media_type not in mediatypes.MANIFEST_MEDIA_TYPES:
            media_type = None  # generic (application/json): the parsed type will do
        await self._records.write(self.name, actual, media_type, self.clock())
        stored = await self._local.put(
            str(actual),
            body,
            content_type,
            tags=[tag] if tag else [],
            verify=False,
        )
        log.info("cached {name}@{digest} from upstream", name=self.name, digest=str(actual))
        if media_type and media_type != stored.media_type:
            stored = attr.evolve(stored, media_type=media_type)
        return stored

"""Manifests through the cache: ask upstream what a tag is, keep what it sent.

As Distribution 2.8's proxy: a tag is looked up upstream on every pull (a
HEAD, so a tag moved upstream is seen at once) and served from local
storage when the local copy has the digest upstream names; otherwise the
manifest is fetched by that digest, checked against it, stored verbatim
(without its blobs, which come when they are asked for) and tagged.  When
upstream cannot be reached or fails, the tag as cached is served (stale but
available).  A digest reference is immutable: local first, else upstream.
"""

import attr
from twisted.logger import Logger

from registryd import errors, metrics
from registryd.digest import DEFAULT_ALGORITHM, Digest
from registryd.manifests import mediatypes
from registryd.manifests.parse import MAX_MANIFEST_SIZE
from registryd.proxy import expiry
from registryd.storage.manifest_store import check_tag, is_digest_reference

log = Logger()


def _header(response, name):
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


def _upstream_digest(response):
    text = _header(response, "docker-content-digest")
    if text is None:
        return None
    try:
        return Digest.parse(text.strip())
    except errors.RegistryError:
        return None


class ManifestFetcher:
    """What the manifest handler asks in proxy mode (``get``)."""

    def __init__(self, registry, upstream, clock):
        self.registry = registry
        self.upstream = upstream
        self.clock = clock

    async def get(self, repository, reference, accept=None):
        """The StoredManifest C{reference} names, from the cache or upstream."""
        if is_digest_reference(reference):
            digest = Digest.parse(reference)
            if await repository.manifests.has(digest):
                return await self._hit(repository, str(digest))
            return await self._fetch(repository, digest, None, accept)
        check_tag(reference)
        try:
            response = await self.upstream.manifest("HEAD", repository.name, reference, accept)
        except errors.UpstreamUnavailable as unavailable:
            try:
                stored = await self._local(repository, reference)
            except errors.ManifestUnknown:
                raise unavailable from None  # nothing cached to fall back on
            log.warn("upstream unavailable: serving {name}:{tag} as cached",
                     name=repository.name, tag=reference)
            metrics.PROXY_REQUESTS.labels("manifest", "stale").inc()
            return stored
        if response is None:
            raise errors.ManifestUnknown(detail={"tag": reference})
        digest = _upstream_digest(response)
        if digest is not None and await repository.manifests.has(digest):
            if await self._tagged(repository, reference) != digest:
                await repository.manifests.tag(reference, digest)
            return await self._hit(repository, str(digest))
        return await self._fetch(repository, digest, reference, accept)

    async def _tagged(self, repository, tag):
        try:
            return await repository.manifests.resolve(tag)
        except errors.ManifestUnknown:
            return None

    async def _hit(self, repository, reference):
        stored = await self._local(repository, reference)
        metrics.PROXY_REQUESTS.labels("manifest", "hit").inc()
        return stored

    async def _local(self, repository, reference):
        stored = await repository.manifests.get(reference)
        record = await expiry.read_record(self.registry.driver, repository.name, stored.digest)
        if record is not None and record[1] and record[1] != stored.media_type:
            stored = attr.evolve(stored, media_type=record[1])
        return stored

    async def _fetch(self, repository, digest, tag, accept):
        """GET the manifest (by C{digest} when known, else by C{tag}),
        check it, store it, tag it."""
        reference = str(digest) if digest is not None else tag
        response = await self.upstream.manifest("GET", repository.name, reference, accept)
        if response is None:
            raise errors.ManifestUnknown(
                detail={"digest": reference} if digest is not None else {"tag": tag}
            )
        body = await self.upstream.body(response).read_all(MAX_MANIFEST_SIZE)
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
                    detail={"expected": str(claimed), "name": repository.name},
                )
        media_type = content_type.split(";")[0].strip() if content_type else None
        if media_type not in mediatypes.MANIFEST_MEDIA_TYPES:
            media_type = None  # generic (application/json): the parsed type will do
        await expiry.write_record(
            self.registry.driver, repository.name, actual, media_type, self.clock()
        )
        stored = await repository.manifests.put(
            str(actual), body, content_type, tags=[tag] if tag else [], verify=False,
        )
        log.info("cached {name}@{digest} from upstream", name=repository.name, digest=str(actual))
        if media_type and media_type != stored.media_type:
            stored = attr.evolve(stored, media_type=media_type)
        return stored

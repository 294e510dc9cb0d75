"""Checking that everything a manifest references is in the repository.

The registry model supplies two async predicates (blob exists? manifest
exists?) that do storage I/O; this module only decides *what* to ask and
turns the answers into one error.  All lookups run concurrently, and every
missing digest is reported at once so a client learns in one round trip
everything it still has to push.
"""

import inspect
import re

import attr
from twisted.internet import defer

from registryd.errors import ManifestBlobUnknown

#: How many missing digests the error message spells out (detail has all).
_MESSAGE_LIMIT = 10


@attr.s(frozen=True)
class URLPolicy:
    """``validation.manifests.urls``: which URLs of non-distributable
    layers a pushed manifest may carry, as Distribution decides: a URL
    must match one of ``allow`` (when there are any) and none of ``deny``;
    Go-style unanchored searches.  With neither list, no URL is allowed."""

    allow = attr.ib(default=(), converter=tuple)
    deny = attr.ib(default=(), converter=tuple)

    def refusal(self, url):
        """Why ``url`` is refused, or None."""
        if not self.allow and not self.deny:
            return "no URLs are allowed (validation.manifests.urls has no allow or deny patterns)"
        if self.allow and not any(re.search(pattern, url) for pattern in self.allow):
            return "it matches no validation.manifests.urls.allow pattern"
        if any(re.search(pattern, url) for pattern in self.deny):
            return "it matches a validation.manifests.urls.deny pattern"
        return None


def check_urls(manifest, policy):
    """Refuse ``manifest`` if an external layer's URL breaks ``policy``
    (None: every URL is fine), as Distribution does: MANIFEST_BLOB_UNKNOWN
    naming the layer."""
    if policy is None:
        return
    for descriptor in manifest.external:
        for url in descriptor.urls:
            reason = policy.refusal(url)
            if reason is not None:
                raise ManifestBlobUnknown(
                    f"layer {descriptor.digest} may not be fetched from {url!r}: {reason}",
                    detail={"digest": str(descriptor.digest), "url": url},
                )


async def _exists(predicate, digest):
    result = predicate(digest)
    if isinstance(result, defer.Deferred) or inspect.isawaitable(result):
        result = await result
    return bool(result)


def _unique(descriptors):
    seen = set()
    for descriptor in descriptors:
        if descriptor.digest not in seen:
            seen.add(descriptor.digest)
            yield descriptor.digest


async def verify_references(
    manifest,
    repository_has_blob,
    repository_has_manifest,
    allow_sparse=False,
    url_policy=None,
    allow_missing_blobs=False,
):
    """Check that ``manifest``'s blobs and child manifests exist.

    :param repository_has_blob: ``digest -> bool``, or a coroutine or
        Deferred of one: is this blob in the repository?
    :param repository_has_manifest: the same for manifests.
    :param allow_sparse: do not require an index's child manifests (a
        "sparse" index, e.g. one platform of a multi-platform image); its
        blobs are still required.
    :param allow_missing_blobs: do not require an image manifest's blobs
        (config and layers): a "sparse" image, e.g. the platforms a mirror
        did not copy.  Its manifest can be pulled, its blobs cannot.
        Indexes' blob entries are still required.
    :param url_policy: a :class:`URLPolicy` for the URLs of external layers, or
        None to accept any (they are never required to exist).
    :raises ManifestBlobUnknown: one or more are missing; ``detail`` is
        ``{"missing": [digest strings, in manifest order]}``.  Or an
        external layer's URL is refused (:func:`check_urls`).

    The ``subject`` is never checked: the spec lets a manifest refer to a
    subject that has not been pushed (yet).  An exception from a predicate
    (e.g. the storage backend is unavailable) propagates unchanged.
    """
    check_urls(manifest, url_policy)
    sparse_image = allow_missing_blobs and manifest.config is not None
    checks = (
        []
        if sparse_image
        else [(digest, repository_has_blob) for digest in _unique(manifest.blobs)]
    )
    if not allow_sparse:
        checks += [(digest, repository_has_manifest) for digest in _unique(manifest.manifests)]
    if not checks:
        return
    try:
        found = await defer.gatherResults(
            [defer.ensureDeferred(_exists(predicate, digest)) for digest, predicate in checks],
            consumeErrors=True,
        )
    except defer.FirstError as error:
        error.subFailure.raiseException()
    missing = []
    for (digest, _), exists in zip(checks, found):
        if not exists and str(digest) not in missing:
            missing.append(str(digest))
    if missing:
        shown = ", ".join(missing[:_MESSAGE_LIMIT])
        if len(missing) > _MESSAGE_LIMIT:
            shown += f" and {len(missing) - _MESSAGE_LIMIT} more"
        raise ManifestBlobUnknown(
            f"manifest references unknown blobs or manifests: {shown}",
            detail={"missing": missing},
        )

"""What the web interface's pages show, read from the registry model.

Pages ask this module, never storage: repositories come from the model's
catalog walk (``Registry.repository_page``, which visits only about one
page of the tree), tags from the repository's manifest store, and
everything about a manifest from its parsed form
(``registryd.manifests.Manifest``) and the referrers index.  What a user
may not pull never gets here: every listing filters with the caller's
grant, the same ``allows("repository", name, "pull")`` the API asks.
"""

import bisect

import attrs
from twisted.internet import defer

from registryd import errors
from registryd.auth.scope import DELETE, PULL, REPOSITORY
from registryd.lifecycle.details import describe_manifest, describe_tags, platform_name
from registryd.storage.walking import gather_limited

#: Rows per page of the repository and tag listings.
PAGE_SIZE = 50

#: How a referrer's ``artifactType`` is shown: the first fragment found in
#: it names its kind.
_REFERRER_KINDS = (
    ("signature", "signature"),
    (".sig", "signature"),
    ("spdx", "SBOM"),
    ("cyclonedx", "SBOM"),
    ("sbom", "SBOM"),
    ("in-toto", "attestation"),
    ("attestation", "attestation"),
    ("provenance", "attestation"),
    ("sigstore.bundle", "attestation"),
)


def referrer_kind(artifact_type):
    """``signature``, ``SBOM``, ``attestation`` or ``artifact``."""
    lowered = (artifact_type or "").lower()
    for fragment, kind in _REFERRER_KINDS:
        if fragment in lowered:
            return kind
    return "artifact"


def may_pull(grant, name):
    return grant.allows(REPOSITORY, name, PULL)


def may_delete(grant, name):
    return grant.allows(REPOSITORY, name, DELETE)


@attrs.frozen
class Page:
    """One page of a listing: its rows, and the ``last`` of the next page
    (None on the last page)."""

    rows: list
    next_last: str | None


async def repositories(registry, grant, query="", last=None):
    """The page after ``last`` of the repositories the caller may pull whose
    name contains ``query``."""
    query = query or ""

    def include(name):
        return query in name and may_pull(grant, name)

    names, more = await registry.repository_page(last or None, PAGE_SIZE, include=include)
    return Page(names, names[-1] if more and names else None)


async def tag_names(repository):
    """All of ``repository``'s tags, sorted; NAME_UNKNOWN without manifests."""
    return await repository.tags.all()


async def tags(repository, pulls, protection, last=None):
    """The page of ``repository``'s tags after ``last``, each described
    (registryd.lifecycle.details, as the API's details listing describes them).

    NAME_UNKNOWN when the repository has no manifests."""
    names = await tag_names(repository)
    start = bisect.bisect_right(names, last) if last else 0
    page = names[start : start + PAGE_SIZE]
    more = start + PAGE_SIZE < len(names)
    rows = await describe_tags(repository, page, pulls, protection)
    return Page(rows, page[-1] if more and page else None)


async def usage(registry, names):
    """Bytes each of ``names`` holds (registryd.lifecycle.quotas), by name;
    empty when no quota is configured (the walk is the quotas' cost)."""
    quotas = registry.quotas
    if not quotas or not names:
        return {}

    async def held(name):
        return sum((await quotas.repository_usage(name)).values())

    return dict(zip(names, await gather_limited(held, names)))


def platform_label(platform):
    return platform_name(platform) or None if platform else None


@attrs.frozen
class ManifestDetails:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    config: object  # a registryd.manifests.Descriptor or None
    layers: list  # Descriptors
    #: an index's images: (Descriptor, platform label)
    children: list
    annotations: dict
    subject: object  # a Descriptor or None
    #: referrer descriptors (dicts, as the referrers API answers), each
    #: with its "kind" (:func:`referrer_kind`)
    referrers: list
    #: the tags that point at this manifest
    tags: list
    size_total: int | None


async def manifest(repository, reference):
    """Everything the manifest page shows about ``reference`` (tag or digest)."""
    stored = await repository.manifests.get(reference)
    parsed = stored.manifest
    config = parsed.config
    layers = [
        d
        for d in list(parsed.blobs) + list(parsed.external)
        if config is None or d.digest != config.digest
    ]
    children = [(d, platform_label(d.platform)) for d in parsed.manifests]
    referrers = await repository.manifests.referrers(stored.digest)
    for referrer in referrers:
        referrer["kind"] = referrer_kind(referrer.get("artifactType"))
    tags_here = await _tags_of(repository, stored.digest)
    size_total, _ = await describe_manifest(repository, stored)
    return ManifestDetails(
        digest=str(stored.digest),
        media_type=stored.media_type,
        size=len(stored.body),
        artifact_type=parsed.artifact_type,
        config=config,
        layers=layers,
        children=children,
        annotations=dict(parsed.annotations or {}),
        subject=parsed.subject,
        referrers=referrers,
        tags=tags_here,
        size_total=size_total,
    )


async def _tags_of(repository, digest):
    names = await tag_names(repository)
    resolved = await defer.gatherResults(
        [defer.ensureDeferred(_resolve(repository, tag)) for tag in names[:1000]],
        consumeErrors=True,
    )
    return [tag for tag, found in zip(names, resolved) if found == digest]


async def _resolve(repository, tag):
    try:
        return await repository.manifests.resolve(tag)
    except (errors.ManifestUnknown, errors.TagInvalid):
        return None

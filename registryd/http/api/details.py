"""``GET /v2/<name>/_registryd/tags``: the tags list with what tools and
the web UI show about each tag.

Paginated exactly as ``tags/list`` (``n``, ``last``, a ``Link`` to the
next page; registryd.http.api.listing).  Each entry::

    {"tag": "v1", "digest": "sha256:...", "mediaType": "...",
     "size": 12345,                  # the manifest, its blobs, and for an
                                     # index its child manifests and theirs
     "platforms": ["linux/amd64"],   # an index's children; an image's config
     "pushed": "2026-12-03T15:00:00Z",
     "pulled": "2026-12-03T15:05:00Z" or null,
     "protected": false}             # lifecycle.immutable; with "rule" if true

``pushed`` is when the tag's link was last written (storage's time);
``pulled`` the latest pull of the tag, or of the digest it names (clients
that resolve a tag with HEAD and fetch by digest), from the repository's
pull record plus what this process has not written yet.  A tag whose
manifest is gone (deleted meanwhile) is left out of its page.
"""

import json
from datetime import datetime, timezone

from registryd import errors
from registryd.http.api.listing import max_tags, paginate, respond_tags_page
from registryd.storage.walking import gather_limited

#: Most bytes of an image's config read for its platform.
MAX_CONFIG_BYTES = 1024 * 1024


def _rfc3339(seconds):
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _platform_of_config(repository, descriptor):
    if descriptor is None or (descriptor.size or 0) > MAX_CONFIG_BYTES:
        return []
    try:
        config = json.loads(await repository.manifests.content(descriptor.digest) or b"")
    except ValueError:
        return []
    if not isinstance(config, dict) or not isinstance(config.get("os"), str):
        return []
    return [_platform_name(config)]


def _platform_name(platform):
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(str(part) for part in parts if isinstance(part, str) and part)


async def describe_manifest(repository, stored):
    """``(size, platforms)`` of a stored manifest: its bytes plus its
    blobs', deduplicated, and for an index those of its children found in
    the repository."""
    sizes = {str(stored.digest): len(stored.body)}
    platforms = []
    manifest = stored.manifest
    for blob in manifest.blobs:
        sizes[str(blob.digest)] = blob.size or 0
    for child in manifest.manifests:
        if child.platform:
            platforms.append(_platform_name(child.platform))
        try:
            child_stored = await repository.manifests.get(str(child.digest))
        except errors.RegistryError:
            continue  # a sparse index: the child was never pushed
        sizes[str(child.digest)] = len(child_stored.body)
        for blob in child_stored.manifest.blobs:
            sizes[str(blob.digest)] = blob.size or 0
    if not manifest.manifests:
        platforms = await _platform_of_config(repository, manifest.config)
    return sum(sizes.values()), platforms


async def list_tag_details(ctx, request, name):
    repository = ctx.registry.repository(name)
    tags = await repository.tags.all()
    page, next_last = paginate(tags, request, max_tags=max_tags(ctx))
    pulled_tags, pulled_manifests = await repository.pulls.read()
    pending_tags, pending_manifests = ctx.pulls.pending(repository.name)
    protection = ctx.registry.immutable_tags

    def pulled(key, *records):
        times = [record[key] for record in records if key in record]
        return max(times) if times else None

    async def entry(tag):
        try:
            stored = await repository.manifests.get(tag)
        except errors.ManifestUnknown:
            return None
        size, platforms = await describe_manifest(repository, stored)
        digest = str(stored.digest)
        last_pull = max(
            (
                t
                for t in (
                    pulled(tag, pulled_tags, pending_tags),
                    pulled(digest, pulled_manifests, pending_manifests),
                )
                if t is not None
            ),
            default=None,
        )
        rule = protection.rule_for(repository.name, tag)
        found = {
            "tag": tag,
            "digest": digest,
            "mediaType": stored.media_type,
            "size": size,
            "platforms": platforms,
            "pushed": _rfc3339(await repository.tags.modified(tag)),
            "pulled": _rfc3339(last_pull),
            "protected": rule is not None,
        }
        if rule is not None:
            found["rule"] = rule.describe()
        return found

    entries = [found for found in await gather_limited(entry, page) if found is not None]
    return respond_tags_page(ctx, request, repository, "_registryd/tags", page, next_last, entries)

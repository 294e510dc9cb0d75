"""What is shown about each tag of a repository: its manifest's digest,
media type, size and platforms, when it was pushed and last pulled, and
whether an immutable-tag rule protects it.

One module for both readers, the details listing of the API
(registryd.http.api.details) and the web interface's repository page
(registryd.ui.browse), so the two never disagree.

``pushed`` is when the tag's link was last written (storage's time);
``pulled`` the latest pull of the tag, or of the digest it names (clients
that resolve a tag with HEAD and fetch by digest), from the repository's
pull record plus what this process has not written yet
(registryd.lifecycle.pulls).  A tag whose manifest is gone (deleted
meanwhile) is left out.
"""

import json
from datetime import datetime, timezone

import attrs

from registryd import errors
from registryd.storage.walking import gather_limited

#: Most bytes of an image's config read for its platform.
MAX_CONFIG_BYTES = 1024 * 1024


def rfc3339(seconds):
    """``seconds`` since the epoch as ``2026-12-03T15:00:00Z``; None stays None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def platform_name(platform):
    """``os/architecture[/variant]`` of an OCI platform object."""
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(str(part) for part in parts if isinstance(part, str) and part)


async def _platform_of_config(repository, descriptor):
    if descriptor is None or (descriptor.size or 0) > MAX_CONFIG_BYTES:
        return []
    try:
        config = json.loads(await repository.manifests.content(descriptor.digest) or b"")
    except ValueError:
        return []
    if not isinstance(config, dict) or not isinstance(config.get("os"), str):
        return []
    return [platform_name(config)]


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
            platforms.append(platform_name(child.platform))
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


@attrs.frozen
class TagDetails:
    """One tag, described."""

    tag: str
    digest: str
    media_type: str
    #: bytes of the manifest, its blobs, and for an index its children's
    size: int
    #: ``os/architecture[/variant]`` of an index's children, or an image's config
    platforms: list
    #: RFC 3339 times, ``pulled`` None if never pulled
    pushed: str | None
    pulled: str | None
    #: the immutable-tag rule (registryd.lifecycle.immutable) protecting
    #: the tag, or None
    rule: object = None

    @property
    def protected(self):
        return self.rule is not None

    def to_dict(self):
        """The tag's entry of ``GET /v2/<name>/_registryd/tags``."""
        found = {
            "tag": self.tag,
            "digest": self.digest,
            "mediaType": self.media_type,
            "size": self.size,
            "platforms": self.platforms,
            "pushed": self.pushed,
            "pulled": self.pulled,
            "protected": self.protected,
        }
        if self.rule is not None:
            found["rule"] = self.rule.describe()
        return found


async def describe_tags(repository, tags, pulls, protection):
    """:class:`TagDetails` of each of ``tags`` (in order) still naming a manifest.

    :param pulls: the pulls this process has not written yet
        (a registryd.lifecycle.pulls.PullRecorder).
    :param protection: the registry's registryd.lifecycle.immutable.ImmutableTags.
    """
    pulled_tags, pulled_manifests = await repository.pulls.read()
    pending_tags, pending_manifests = pulls.pending(repository.name)

    def latest(key, *records):
        times = [record[key] for record in records if key in record]
        return max(times) if times else None

    async def describe(tag):
        try:
            stored = await repository.manifests.get(tag)
        except (errors.ManifestUnknown, errors.TagInvalid):
            return None  # untagged meanwhile, or a stray directory
        size, platforms = await describe_manifest(repository, stored)
        digest = str(stored.digest)
        times = [
            latest(tag, pulled_tags, pending_tags),
            latest(digest, pulled_manifests, pending_manifests),
        ]
        last_pull = max((t for t in times if t is not None), default=None)
        return TagDetails(
            tag=tag,
            digest=digest,
            media_type=stored.media_type,
            size=size,
            platforms=platforms,
            pushed=rfc3339(await repository.tags.modified(tag)),
            pulled=rfc3339(last_pull),
            rule=protection.rule_for(repository.name, tag),
        )

    return [found for found in await gather_limited(describe, tags) if found is not None]

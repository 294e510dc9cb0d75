"""Manifests and referrers of one repository, in Distribution's layout
(``manifeststore.go``).

A manifest is stored as a blob (its exact bytes, in the global store) and
linked under ``_manifests/revisions/``; its tags are the tag store's
(``registryd.storage.tags``).  The referrers index (OCI 1.1) lives under
``_referrers/<subject>/``: one link per manifest whose ``subject`` is that
digest, rebuildable from the manifests themselves
(``registryd.ops.referrers``).
"""

import attr
from twisted.internet import defer
from zope.interface import implementer

from registryd import errors
from registryd.digest import DEFAULT_ALGORITHM, Digest
from registryd.interfaces import IManifestStore
from registryd.manifests import parse_manifest, verify_references
from registryd.storage import _paths as paths
from registryd.storage.errors import translate_storage_errors
from registryd.storage.shared_cache import for_lookups, revision_entry, tag_entry
from registryd.storage.tags import check_tag
from registryd.storage.walking import (
    digest_tree,
    gather_limited,
    list_or_empty,
    modified_or_none,
    read_link,
)


@attr.s(frozen=True, slots=True)
class StoredManifest:
    digest = attr.ib()
    media_type = attr.ib()
    body = attr.ib()
    manifest = attr.ib()  # the parsed registryd.manifests.Manifest


def is_digest_reference(reference):
    return ":" in reference


#: a linked revision's entry in the nodes' metadata cache
_LINKED = "linked"


def _is_linked(text):
    if text != _LINKED:
        raise ValueError(text)
    return True


@implementer(IManifestStore)
class ManifestStore:
    """The manifest revisions and referrers index of repository ``name``."""

    def __init__(
        self,
        name,
        driver,
        blobs,
        linked_blobs,
        tags,
        vacuum,
        guard,
        cache,
        settings,
        immutable_tags,
        tag_locks,
        quotas,
        tag_cache=None,
        pulls=None,
        shared_cache=None,
    ):
        """
        :param blobs: the global :class:`registryd.storage.blobs.BlobStore`
            (manifest bytes are blobs).
        :param linked_blobs: this repository's blobs (what a pushed
            manifest must reference).
        :param tags: this repository's :class:`registryd.storage.tags.TagStore`.
        :param cache: parsed manifests by digest
            (:class:`registryd.storage.cache.ContentCache`).
        :param settings: the registry's switches (delete_enabled,
            manifest_url_policy), read when used.
        :param immutable_tags: :class:`registryd.lifecycle.immutable.ImmutableTags`:
            the tags that may not move nor go once pushed.
        :param tag_locks: keyed locks (:class:`registryd.storage.uploads.UploadLocks`)
            held from the check of a protected tag until it is written.
        :param quotas: :class:`registryd.lifecycle.quotas.QuotaAccounting`: admits
            a push before anything of it is linked, counts what it adds.
        :param tag_cache: what tags resolved to, revalidated by a stat of
            the tag's link (:class:`registryd.storage.cache.LinkCache`), or None.
        :param pulls: this repository's pull record
            (:class:`registryd.storage.pulls.PullRecords`), whose deleted tags
            are forgotten, or None.
        :param shared_cache: the nodes' :class:`registryd.storage.shared_cache.SharedMetadataCache`
            of tags and revisions (used instead of ``tag_cache`` when reads
            consult it), or None.
        """
        self.name = name
        self._driver = driver
        self._blobs = blobs
        self._linked_blobs = linked_blobs
        self._tags = tags
        self._vacuum = vacuum
        self._guard = guard
        self._cache = cache
        self._settings = settings
        self._immutable = immutable_tags
        self._tag_locks = tag_locks
        self._quotas = quotas
        self._tag_cache = tag_cache
        self._pulls = pulls
        # reads only: this store's writes forget through TagStore and Vacuum
        self._shared_cache = for_lookups(shared_cache)

    async def has(self, digest):
        """Is revision ``digest`` linked (a manifest GET by digest, a
        pushed index's children)?  With the nodes' shared cache, a hit asks
        storage nothing."""
        if self._shared_cache is None:
            return await self._linked(digest)

        async def load():
            return _LINKED if await self._linked(digest) else None

        entry = revision_entry(self.name, digest)
        return await self._shared_cache.through(entry, load, _is_linked) is not None

    async def _linked(self, digest):
        return (
            await read_link(self._driver, paths.manifest_revision_link(self.name, digest)) == digest
        )

    @translate_storage_errors
    async def resolve(self, reference):
        """The digest a tag or digest reference names; MANIFEST_UNKNOWN if none."""
        if is_digest_reference(reference):
            digest = Digest.parse(reference)
            if not await self.has(digest):
                raise errors.ManifestUnknown(detail={"digest": str(digest)})
            return digest
        check_tag(reference)
        digest = await self._resolve_tag(reference)
        if digest is None:
            raise errors.ManifestUnknown(detail={"tag": reference})
        return digest

    async def _resolve_tag(self, tag):
        """The digest ``tag`` names, if its revision is linked; else None.

        With a tag cache, one stat of the tag's link tells whether what it
        resolved to before still holds (the link unchanged; a revision a
        tag names is only removed after the tag, as every delete and GC
        does), instead of reading the link and the revision's link."""
        if self._shared_cache is not None:
            return await self._resolve_tag_shared(tag)
        cache = self._tag_cache
        if cache is None:
            return await self._resolve_tag_stored(tag)
        validator = await self._tags.validator(tag)
        if validator is None:
            cache.invalidate(self.name, tag)
            return None
        digest = cache.get(self.name, tag, validator)
        if digest is not None:
            return digest
        digest = await self._resolve_tag_stored(tag)
        if digest is None:
            return None
        # Read after the stat: if the tag moved in between, the validator
        # is older than what was read and the next stat misses.
        cache.put(self.name, tag, validator, digest)
        return digest

    async def _resolve_tag_stored(self, tag):
        digest = await self._tags.get(tag)
        return digest if digest is not None and await self.has(digest) else None

    async def _resolve_tag_shared(self, tag):
        """The nodes' shared cache holds what the tag resolved to; every
        write of the tag, and the removal of it, forgets it on all nodes."""

        async def load():
            digest = await self._resolve_tag_stored(tag)
            return None if digest is None else str(digest)

        return await self._shared_cache.through(tag_entry(self.name, tag), load, Digest.parse)

    @translate_storage_errors
    async def get(self, reference, accept=None):
        """The StoredManifest ``reference`` names; MANIFEST_UNKNOWN if none.
        (``accept``, the client's Accept header, is for a store that fetches
        from elsewhere, :mod:`registryd.proxy`; stored bytes are served as they are.)"""
        digest = await self.resolve(reference)
        # The bytes under a digest never change: once storage confirmed the
        # manifest is in this repository (resolve), a parsed copy will do.
        stored = self._cache.get(digest)
        if stored is not None:
            return stored
        try:
            body = await self._blobs.get(digest)
        except errors.BlobUnknown:
            raise errors.ManifestUnknown(detail={"digest": str(digest)}) from None
        manifest = parse_manifest(body, None)
        stored = StoredManifest(digest, manifest.media_type, body, manifest)
        self._cache.put(digest, stored, len(body))
        return stored

    @translate_storage_errors
    async def put(
        self,
        reference,
        body,
        content_type,
        tags=(),
        allow_sparse=False,
        allow_missing_blobs=False,
        verify=True,
    ):
        """Validate, verify and store a manifest; tag it.  Returns StoredManifest.

        ``allow_sparse`` and ``allow_missing_blobs``: see
        :func:`registryd.manifests.verify.verify_references`.

        ``verify=False`` skips the check that referenced blobs and manifests
        exist: a pull-through cache (registryd.proxy) stores a manifest
        before any of its blobs, which it fetches when they are asked for."""
        tags = list(tags)
        if is_digest_reference(reference):
            expected = Digest.parse(reference)
            algorithm = expected.algorithm
        else:
            expected = None
            algorithm = DEFAULT_ALGORITHM
            tags.insert(0, reference)
        for tag in tags:
            check_tag(tag)
        manifest = parse_manifest(body, content_type)
        digest = Digest.of(manifest.digest_body, algorithm)
        if expected is not None and digest != expected:
            raise errors.DigestInvalid(
                f"manifest content has digest {digest}, not {expected}",
                detail={"expected": str(expected), "actual": str(digest)},
            )
        # Held from the existence checks until written, so online GC
        # cannot sweep what this manifest is about to reference.
        in_use = [digest] + [ref.digest for ref in manifest.references]
        protected = sorted({tag for tag in tags if self._immutable.rule_for(self.name, tag)})
        releases = []
        try:
            for tag in protected:
                releases.append(await self._tag_locks.acquire((self.name, tag)))
            for tag in protected:
                await self._check_tag_change(tag, digest)
            async with self._quotas.admitting(self.name, digest, manifest):
                return await self._put(
                    digest, body, manifest, tags, in_use, verify, allow_sparse, allow_missing_blobs
                )
        finally:
            for release in releases:
                release()

    async def _check_tag_change(self, tag, wanted):
        """DENIED if ``tag`` is protected and names a stored manifest other
        than ``wanted`` (a digest; None: the tag is to be deleted)."""
        rule = self._immutable.rule_for(self.name, tag)
        if rule is None:
            return
        current = await self._tags.get(tag)
        if current is not None and current != wanted and await self.has(current):
            raise self._immutable.refusal(self.name, tag, current, rule, wanted)

    async def _put(
        self, digest, body, manifest, tags, in_use, verify, allow_sparse, allow_missing_blobs
    ):
        async with self._guard.using(in_use):
            if verify:
                await verify_references(
                    manifest,
                    self._linked_blobs.has,
                    self.has,
                    allow_sparse=allow_sparse,
                    allow_missing_blobs=allow_missing_blobs,
                    url_policy=self._settings.manifest_url_policy,
                )
            # The content first, then the revision link, then tags: a reader
            # that finds a link always finds the bytes.
            await self._blobs.put(digest, body)
            await self._driver.put_content(
                paths.manifest_revision_link(self.name, digest), str(digest).encode("ascii")
            )
            if manifest.subject is not None:
                await self.add_referrer(manifest.subject.digest, digest)
            for tag in tags:
                await self._tags.tag(tag, digest)
        return StoredManifest(digest, manifest.media_type, body, manifest)

    @translate_storage_errors
    async def delete(self, reference, removed_tags=None):
        """Delete by digest (the revision, its tags, its referrer entry) or,
        for a tag reference, only the tag; DENIED when that would delete an
        immutable tag.  The tags deleted along with a
        digest are appended to the list ``removed_tags``, if given (their
        delete notifications)."""
        if not self._settings.delete_enabled:
            raise errors.Unsupported("deletes are disabled (storage.delete.enabled is false)")
        if not is_digest_reference(reference):
            check_tag(reference)
            await self.resolve(reference)
            await self._check_tag_change(reference, None)
            await self._tags.untag(reference)
            await self._forget_pulls([reference])
            return None
        stored = await self.get(reference)
        if self._immutable:
            for tag in await self._tags.enumerate():
                if await self._tags.get(tag) == stored.digest:
                    await self._check_tag_change(tag, None)
        if not await self.remove(stored.digest, stored.manifest.subject, removed_tags):
            raise errors.ManifestUnknown(detail={"digest": str(stored.digest)})
        return stored.digest

    async def remove(self, digest, subject=None, removed_tags=None):
        """Remove revision ``digest``, the tags that point at it, and its
        entry in the referrers index of ``subject`` (the manifest's subject
        descriptor, if it has one); whether the revision was there.  No
        check of storage.delete: for ``delete`` and the registry's own
        housekeeping (the pull-through cache's expiry)."""
        untagged = []
        try:
            for tag in await self._tags.enumerate():
                if await self._tags.get(tag) == digest:
                    await self._tags.untag(tag)
                    untagged.append(tag)
                    if removed_tags is not None:
                        removed_tags.append(tag)
            await self._forget_pulls(untagged)
            return await self._vacuum.remove_manifest(
                self.name, digest, subject=subject.digest if subject is not None else None
            )
        finally:
            await self._quotas.forget(self.name)  # counted again when next asked

    async def _forget_pulls(self, tags):
        """Deleted ``tags`` take their pull times with them (a tag pushed
        again later was never pulled)."""
        if self._pulls is not None and tags:
            await self._pulls.forget_tags(tags)

    async def enumerate(self):
        """Digests of this repository's manifest revisions, sorted.

        A revision is its link file, not its directory: Distribution's manifest
        delete removes only the link."""
        named = await digest_tree(self._driver, paths.manifest_revisions(self.name))

        async def linked(digest):
            return (
                await modified_or_none(
                    self._driver, paths.manifest_revision_link(self.name, digest)
                )
                is not None
            )

        found = [d for d, ok in zip(named, await gather_limited(linked, named)) if ok]
        return sorted(found, key=str)

    async def revision_modified(self, digest):
        """When revision ``digest`` was linked (GC's grace period), or None."""
        return await modified_or_none(self._driver, paths.manifest_revision_link(self.name, digest))

    async def content(self, digest):
        """The stored bytes of revision ``digest``, unparsed (GC and the
        referrers rebuild read them leniently); None when they are missing."""
        try:
            return await self._blobs.get(digest)
        except errors.BlobUnknown:
            return None

    async def exists(self):
        """Does the repository have anything in its manifests directory
        (revisions or tags, ever)?"""
        return bool(await list_or_empty(self._driver, paths.manifests(self.name)))

    # the referrers index

    @translate_storage_errors
    async def add_referrer(self, subject, referrer):
        """Record ``referrer`` in the referrers index of ``subject``."""
        await self._driver.put_content(
            paths.referrer_link(self.name, subject, referrer), str(referrer).encode("ascii")
        )

    async def referrer_entries(self):
        """The set of (subject, referrer) pairs in the referrers index.
        A name in it that is not a digest is left alone (and not reported)."""
        subjects = await digest_tree(self._driver, paths.referrers_root(self.name))
        found = set()
        for subject, referrers in zip(subjects, await gather_limited(self.referrers_of, subjects)):
            found.update((subject, referrer) for referrer in referrers)
        return found

    async def referrers_of(self, subject):
        """Digests in the referrers index of ``subject``."""
        return await digest_tree(self._driver, paths.referrers(self.name, subject))

    @translate_storage_errors
    async def referrers(self, subject, artifact_type=None):
        """Descriptors of the manifests whose subject is ``subject``."""
        found = await self.referrers_of(subject)

        async def describe(digest):
            try:
                stored = await self.get(str(digest))
            except errors.RegistryError:
                return None  # deleted meanwhile, or a stray entry
            manifest = stored.manifest
            descriptor = {
                "mediaType": stored.media_type,
                "digest": str(stored.digest),
                "size": len(stored.body),
            }
            if manifest.artifact_type:
                descriptor["artifactType"] = manifest.artifact_type
            if manifest.annotations:
                descriptor["annotations"] = manifest.annotations
            return descriptor

        descriptors = await defer.gatherResults(
            [defer.ensureDeferred(describe(digest)) for digest in sorted(found, key=str)],
            consumeErrors=True,
        )
        descriptors = [d for d in descriptors if d is not None]
        if artifact_type is not None:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
        return descriptors

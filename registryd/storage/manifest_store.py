"""Manifests, tags and referrers of one repository, in Distribution's layout.

A manifest is stored as a blob (its exact bytes) and linked under
``_manifests/revisions/``; a tag is ``_manifests/tags/<tag>/current/link``
plus a history entry under ``index/``.  The referrers index (OCI 1.1) lives
under ``_referrers/<subject>/``: one link per manifest whose ``subject`` is
that digest, rebuildable from the manifests themselves.
"""

import attr
from twisted.internet import defer

from registryd import errors
from registryd.digest import DEFAULT_ALGORITHM, Digest
from registryd.manifests import parse_manifest, verify_references
from registryd.names import is_valid_tag, valid_tags
from registryd.storage import paths
from registryd.storage.errors import PathNotFound, translate_storage_errors


@attr.s(frozen=True, slots=True)
class StoredManifest:
    digest = attr.ib()
    media_type = attr.ib()
    body = attr.ib()
    manifest = attr.ib()  # the parsed registryd.manifests.Manifest


def check_tag(tag):
    if not is_valid_tag(tag):
        raise errors.TagInvalid(
            "tags are up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
            detail={"tag": tag[:200]},
        )
    return tag


def is_digest_reference(reference):
    return ":" in reference


class ManifestStore:
    def __init__(self, repository):
        self.repository = repository
        self.name = repository.name
        self.driver = repository.driver
        self.registry = repository.registry

    async def _read_link(self, path):
        try:
            text = await self.driver.get_content(path)
        except PathNotFound:
            return None
        try:
            return Digest.parse(text.strip())
        except errors.DigestInvalid:
            return None

    async def has(self, digest):
        return await self._read_link(paths.manifest_revision_link(self.name, digest)) == digest

    @translate_storage_errors
    async def resolve(self, reference):
        """The digest a tag or digest reference names; MANIFEST_UNKNOWN if none."""
        if is_digest_reference(reference):
            digest = Digest.parse(reference)
            if not await self.has(digest):
                raise errors.ManifestUnknown(detail={"digest": str(digest)})
            return digest
        check_tag(reference)
        digest = await self._read_link(paths.tag_current_link(self.name, reference))
        if digest is None or not await self.has(digest):
            raise errors.ManifestUnknown(detail={"tag": reference})
        return digest

    @translate_storage_errors
    async def get(self, reference):
        digest = await self.resolve(reference)
        # The bytes under a digest never change: once storage confirmed the
        # manifest is in this repository (resolve), a parsed copy will do.
        cache = getattr(self.registry, "manifest_cache", None)
        stored = cache.get(digest) if cache is not None else None
        if stored is not None:
            return stored
        try:
            body = await self.driver.get_content(paths.blob_data(digest))
        except PathNotFound:
            raise errors.ManifestUnknown(detail={"digest": str(digest)}) from None
        manifest = parse_manifest(body, None)
        stored = StoredManifest(digest, manifest.media_type, body, manifest)
        if cache is not None:
            cache.put(digest, stored, len(body))
        return stored

    @translate_storage_errors
    async def put(self, reference, body, content_type, tags=(), allow_sparse=False,
                  allow_missing_blobs=False, verify=True):
        """Validate, verify and store a manifest; tag it.  Returns StoredManifest.

        C{allow_sparse} and C{allow_missing_blobs}: see
        L{registryd.manifests.verify.verify_references}.

        C{verify=False} skips the check that referenced blobs and manifests
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
        async with self.registry.guard.using(in_use):
            if verify:
                await verify_references(
                    manifest, self.repository.has_blob, self.has, allow_sparse=allow_sparse,
                    allow_missing_blobs=allow_missing_blobs,
                    url_policy=self.registry.manifest_url_policy,
                )
            # The content first, then the revision link, then tags: a reader
            # that finds a link always finds the bytes.
            await self.driver.put_content(paths.blob_data(digest), body)
            await self.driver.put_content(
                paths.manifest_revision_link(self.name, digest), str(digest).encode("ascii")
            )
            if manifest.subject is not None:
                await self.driver.put_content(
                    paths.referrer_link(self.name, manifest.subject.digest, digest),
                    str(digest).encode("ascii"),
                )
            for tag in tags:
                await self.tag(tag, digest)
        return StoredManifest(digest, manifest.media_type, body, manifest)

    async def tag(self, tag, digest):
        link = str(digest).encode("ascii")
        await self.driver.put_content(paths.tag_index_link(self.name, tag, digest), link)
        await self.driver.put_content(paths.tag_current_link(self.name, tag), link)

    @translate_storage_errors
    async def delete(self, reference, removed_tags=None):
        """Delete by digest (the revision, its tags, its referrer entry) or,
        for a tag reference, only the tag.  The tags deleted along with a
        digest are appended to the list C{removed_tags}, if given (their
        delete notifications)."""
        if not self.registry.delete_enabled:
            raise errors.Unsupported("deletes are disabled (storage.delete.enabled is false)")
        if not is_digest_reference(reference):
            check_tag(reference)
            await self.resolve(reference)
            await self.driver.delete(paths.tag_dir(self.name, reference))
            return None
        stored = await self.get(reference)
        if not await self.remove(stored.digest, stored.manifest.subject, removed_tags):
            raise errors.ManifestUnknown(detail={"digest": str(stored.digest)})
        return stored.digest

    async def remove(self, digest, subject=None, removed_tags=None):
        """Remove revision C{digest}, the tags that point at it, and its
        entry in the referrers index of C{subject} (the manifest's subject
        descriptor, if it has one); whether the revision was there.  No
        check of storage.delete: for L{delete} and the registry's own
        housekeeping (the pull-through cache's expiry)."""
        for tag in await self._tags_or_empty():
            if await self._read_link(paths.tag_current_link(self.name, tag)) == digest:
                try:
                    await self.driver.delete(paths.tag_dir(self.name, tag))
                except PathNotFound:
                    pass
                if removed_tags is not None:
                    removed_tags.append(tag)
        if subject is not None:
            try:
                await self.driver.delete(
                    paths.referrer_link(self.name, subject.digest, digest).rsplit("/", 1)[0]
                )
            except PathNotFound:
                pass
        try:
            await self.driver.delete(paths.manifest_revision_dir(self.name, digest))
        except PathNotFound:
            return False
        return True

    async def _tags_or_empty(self):
        try:
            return await self.driver.list(paths.tags(self.name))
        except PathNotFound:
            return []

    @translate_storage_errors
    async def tags(self):
        """All tags, sorted; NAME_UNKNOWN if the repository has no manifests dir."""
        try:
            await self.driver.stat(paths.manifests(self.name))
        except PathNotFound:
            raise errors.NameUnknown(detail={"name": self.name}) from None
        names = await self._tags_or_empty()
        return valid_tags(names)  # drivers list names sorted

    @translate_storage_errors
    async def referrers(self, subject, artifact_type=None):
        """Descriptors of the manifests whose subject is C{subject}."""
        base = paths.referrers(self.name, subject)
        found = []
        try:
            algorithms = await self.driver.list(base)
        except PathNotFound:
            return []
        for algorithm in algorithms:
            try:
                hexes = await self.driver.list(f"{base}/{algorithm}")
            except PathNotFound:
                continue
            for hex_digest in hexes:
                found.append(f"{algorithm}:{hex_digest}")

        async def describe(text):
            try:
                digest = Digest.parse(text)
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
            [defer.ensureDeferred(describe(text)) for text in sorted(found)], consumeErrors=True
        )
        descriptors = [d for d in descriptors if d is not None]
        if artifact_type is not None:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
        return descriptors

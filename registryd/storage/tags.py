"""Tags of one repository (Distribution's ``tagstore.go``).

A tag is ``_manifests/tags/<tag>/current/link`` (the digest it names now)
plus one entry per digest it ever named under ``index/`` (its history,
which garbage collection with ``--delete-untagged`` cleans up).
"""

from zope.interface import implementer

from registryd import errors
from registryd.interfaces import ITagStore
from registryd.names import is_valid_tag, valid_tags
from registryd.storage import _paths as paths
from registryd.storage.errors import PathNotFound, translate_storage_errors
from registryd.storage.shared_cache import tag_entry
from registryd.storage.walking import (
    digest_tree,
    list_or_empty,
    modified_or_none,
    read_link,
    stat_path,
)


def check_tag(tag):
    if not is_valid_tag(tag):
        raise errors.TagInvalid(
            "tags are up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
            detail={"tag": tag[:200]},
        )
    return tag


@implementer(ITagStore)
class TagStore:
    """The tags of repository ``name``.

    :param cache: the registry's tag :class:`registryd.storage.cache.LinkCache`:
        the tags this store re-points or removes are forgotten there (other
        processes' changes are caught by its validators).
    :param shared_cache: the nodes' :class:`registryd.storage.shared_cache.SharedMetadataCache`,
        or None: a tag this store re-points is forgotten on every node
        (removals are the vacuum's).
    """

    def __init__(self, name, driver, vacuum, cache=None, shared_cache=None):
        self.name = name
        self._driver = driver
        self._vacuum = vacuum
        self._cache = cache
        self._shared_cache = shared_cache

    async def get(self, tag):
        """The digest ``tag`` names now, or None (no such tag, or a link
        that is not a digest).  Whether that manifest is still there is
        the manifest store's question."""
        return await read_link(self._driver, paths.tag_current_link(self.name, tag))

    async def modified(self, tag):
        """When ``tag`` was last pointed at a digest, or None."""
        return await modified_or_none(self._driver, paths.tag_current_link(self.name, tag))

    async def validator(self, tag):
        """(size, modification time) of ``tag``'s link, from one stat: what
        changes whenever the tag is re-pointed; None if there is no tag."""
        try:
            info = await stat_path(self._driver, paths.tag_current_link(self.name, tag))
        except PathNotFound:
            return None
        return (info.size, info.modified)

    def _forget(self, tag):
        if self._cache is not None:
            self._cache.invalidate(self.name, tag)

    @translate_storage_errors
    async def tag(self, tag, digest):
        """Point ``tag`` at ``digest``, recording it in the tag's history."""
        link = str(digest).encode("ascii")
        await self._driver.put_content(paths.tag_index_link(self.name, tag, digest), link)
        self._forget(tag)
        await self._driver.put_content(paths.tag_current_link(self.name, tag), link)
        self._forget(tag)
        if self._shared_cache is not None:
            await self._shared_cache.forget(tag_entry(self.name, tag))

    async def untag(self, tag):
        """Remove ``tag`` and its history; whether it was there."""
        self._forget(tag)
        try:
            return await self._vacuum.remove_tag(self.name, tag)
        finally:
            self._forget(tag)

    @translate_storage_errors
    async def all(self):
        """All tags, sorted, as the tags list shows them; NAME_UNKNOWN if
        the repository has no manifests (never had any, or all were
        deleted: a repository emptied by deletes is gone for clients)."""
        tags = valid_tags(await list_or_empty(self._driver, paths.tags(self.name)))
        if tags:
            return tags  # listed under _manifests: the repository has it
        try:
            await self._driver.stat(paths.manifests(self.name))
        except PathNotFound:
            raise errors.NameUnknown(detail={"name": self.name}) from None
        if not await digest_tree(self._driver, paths.manifest_revisions(self.name)):
            raise errors.NameUnknown(detail={"name": self.name})
        return tags

    async def enumerate(self):
        """Every tag in storage, sorted: what garbage collection must treat
        as a tag.  Only names that can be tags (the driver refuses paths
        through any other, such as a tag an older registryd let in with a
        newline), never a driver's ``.tmp`` file."""
        names = await list_or_empty(self._driver, paths.tags(self.name))
        return [tag for tag in valid_tags(names) if not tag.endswith(".tmp")]

    async def history(self, tag):
        """Every digest ``tag`` has named (its ``index``)."""
        return await digest_tree(self._driver, paths.tag_index(self.name, tag))

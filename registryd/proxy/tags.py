"""Tags through the cache: the tags list is upstream's.

As Distribution's proxy tag service: the list shows every tag upstream
has (not only the cached ones), all of its pages; when upstream cannot be
reached, the cached tags.  Everything else about tags is the local store's
(a tag is cached with its manifest, ``registryd.proxy.manifests``).
"""

from zope.interface import implementer

from registryd import errors
from registryd.interfaces import ITagStore


@implementer(ITagStore)
class ProxyTagStore:
    def __init__(self, local, upstream):
        self._local = local
        self._upstream = upstream
        self.name = local.name

    async def all(self):
        try:
            tags = await self._upstream.tags(self.name)
        except errors.UpstreamUnavailable:
            return await self._local.all()
        if tags is None:
            raise errors.NameUnknown(detail={"name": self.name})
        return tags

    def get(self, tag):
        return self._local.get(tag)

    def tag(self, tag, digest):
        return self._local.tag(tag, digest)

    def untag(self, tag):
        return self._local.untag(tag)

    def enumerate(self):
        return self._local.enumerate()

    def history(self, tag):
        return self._local.history(tag)

    def modified(self, tag):
        """When the cache last pointed ``tag`` at a digest (the tag details' push time)."""
        return self._local.modified(tag)

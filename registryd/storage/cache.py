"""In-process caches of immutable content.

Only what a digest fully determines is cached: the bytes stored under a
digest never change, so no other node and no restart can make an entry
wrong.  What can change (tags, links, whether a repository has a blob or a
manifest) is always read from storage; a cache hit only saves reading and
parsing the content once storage has confirmed it is reachable.
"""

from collections import OrderedDict


class ContentCache:
    """A least-recently-used map of digest -> value, bounded by the total
    size its entries declare."""

    def __init__(self, max_bytes=16 * 1024 * 1024, max_entry=1024 * 1024):
        self.max_bytes = max_bytes
        #: larger entries are not kept (one would evict many small ones)
        self.max_entry = max_entry
        self._entries = OrderedDict()
        self._bytes = 0

    def get(self, digest):
        entry = self._entries.get(digest)
        if entry is None:
            return None
        self._entries.move_to_end(digest)
        return entry[0]

    def put(self, digest, value, size):
        if size > self.max_entry or size > self.max_bytes:
            return
        old = self._entries.pop(digest, None)
        if old is not None:
            self._bytes -= old[1]
        self._entries[digest] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted

    def __len__(self):
        return len(self._entries)

    @property
    def size(self):
        return self._bytes

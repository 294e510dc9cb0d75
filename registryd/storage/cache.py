"""In-process caches: of immutable content, and of links revalidated by stat.

:class:`ContentCache` keeps only what a digest fully determines: the bytes
stored under a digest never change, so no other node and no restart can
make an entry wrong.  What can change (tags, blob links, whether a
repository has a manifest) is read from storage, or (:class:`LinkCache`,
for tags and blob links) revalidated against it on every use: a cache hit
only saves reading once storage has confirmed nothing changed.  Nodes that
share a Redis trust a cache held there instead
(:mod:`registryd.storage.shared_cache`).
"""

import time
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


class LinkCache:
    """What a link of a repository resolved to (a tag: the digest whose
    revision is linked; a blob link: where its data is), kept
    with the validator of the link file it was read under: its size and
    modification time from one stat.

    A lookup is only a hit when a stat made for this request shows the
    same validator, so a link rewritten or deleted through another process
    or node is never served stale: rewriting the link (a new file renamed
    over the old) changes its time, deleting it fails the stat.  Link
    files of one algorithm have equal sizes, and file times come from a
    coarse clock, so two writes within one tick could leave the validator
    as it was; a link written less than ``settled`` seconds before it was
    read is therefore not kept (git's "racy" rule), which also bounds the
    clock difference between nodes sharing storage that this tolerates.

    ``get``/``put``/``invalidate`` by (repository, name: a tag or a digest),
    least recently used out beyond ``max_entries``.
    """

    settled = 2.0

    def __init__(self, max_entries=16384, clock=time.time):
        self.max_entries = max_entries
        self._clock = clock
        self._entries = OrderedDict()

    def get(self, repository, name, validator):
        """The value cached for link ``name`` of ``repository`` if it was
        read under ``validator``, else None."""
        key = (repository, name)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] != validator:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, repository, name, validator, value):
        """Keep ``value`` for the link, read under ``validator``
        ((size, modification time) of it), unless the link is too new to
        tell a later rewrite from it."""
        key = (repository, name)
        if self._clock() - validator[1] < self.settled:
            self._entries.pop(key, None)
            return
        self._entries[key] = (validator, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def seen(self, repository, name):
        """Whether the link was asked for before (it has an entry, or a
        :meth:`note`)."""
        return (repository, name) in self._entries

    def note(self, repository, name):
        """Remember that the link was asked for, with nothing to serve:
        a link asked for once (a blob a push has just linked, checked by
        its manifest) is not worth the stat that validates an entry; one
        asked for again is validated and kept."""
        key = (repository, name)
        if key not in self._entries:
            self._entries[key] = (None, None)  # no validator matches it
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, repository, name):
        """Forget the link (this process rewrote or removed it)."""
        self._entries.pop((repository, name), None)

    def __len__(self):
        return len(self._entries)

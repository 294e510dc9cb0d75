"""What the ``s3`` driver knows about its tree, to spare requests.

S3 has no directories: a key ``a/b/c`` makes ``a`` and ``a/b`` directories
only by existing.  The driver keeps the store a tree anyway (no file below
a file, no file where a directory is), which costs requests before every
new file: asking whether the parent exists and is not a file, and so on up.
Requests are what a store (and its bill) feels, so this module keeps them
few:

- :class:`KnownDirectories` remembers which keys are directories, and which
  of them this driver found *fresh* (absent, so it created them): nothing
  is in a fresh directory but what was written since, and the registry's
  layout never writes a directory where another writer puts a file, so a
  new file directly in a fresh directory needs no check at all.
- :class:`RecentSizes` remembers the sizes of small files this driver
  just wrote, so that moving one (an upload becoming a blob) needs no
  HEAD to choose between a single copy and a multipart copy.
- :func:`probe_state` reads one listing (``Prefix=<key>``, ``Delimiter=/``)
  that tells at once whether ``key`` is a file, a directory or absent:
  one request where a HEAD and a LIST were two.  An absent directory
  answers for everything below it too.
"""

import collections

#: :func:`probe_state`'s answers.
FILE, DIRECTORY, ABSENT, UNDECIDED = "file", "directory", "absent", "undecided"


class _BoundedKeys:
    """Keys with a value each, most recent last, at most ``limit`` of them."""

    def __init__(self, limit):
        self.limit = limit
        self._entries = collections.OrderedDict()

    def _set(self, key, value):
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def forget(self, key):
        """Forget ``key`` and every key below it."""
        self._entries.pop(key, None)
        below = key + "/"
        for known in [k for k in self._entries if k.startswith(below)]:
            del self._entries[known]

    def __len__(self):
        return len(self._entries)


class KnownDirectories(_BoundedKeys):
    """Keys this driver has seen to be directories, most recent last, at
    most ``limit`` of them, each marked fresh or not.

    Used only by the tree checks before a write (is an ancestor a file?):
    a directory seen once stays one, unless this driver deletes it or
    creates a file in its place, both of which forget it.  An entry can go
    stale only if another node empties a directory and then creates a
    *file* under its name, which the registry's layout never does; the
    worst outcome would be an object below an object, never wrong data.

    A *fresh* directory is one this driver found absent and then created:
    what is in it is what writers put there since, and the registry's
    layout never makes one of them a directory while another makes it a
    file, so a file directly in it needs no "is it a directory?" request
    unless this driver itself created something below that name (then it
    is known here as a directory, and checked).
    """

    def __init__(self, limit=16384):
        super().__init__(limit)

    def __contains__(self, key):
        if key in self._entries:
            self._entries.move_to_end(key)
            return True
        return False

    def is_fresh(self, key):
        return self._entries.get(key, False) is True

    def add(self, key, fresh=False):
        """Remember ``key`` as a directory; ``fresh`` when this driver found
        it absent.  A directory already known keeps what it was known as."""
        self._set(key, self._entries.get(key, fresh))


class RecentSizes(_BoundedKeys):
    """Sizes of the files this driver wrote last, at most ``limit``.

    Only ever used to skip the HEAD before a server-side copy of a file
    not larger than ``copy_threshold``: such a copy is one CopyObject
    whatever the size turns out to be, so a size gone stale (another node
    rewrote the file) cannot make a wrong copy; a file gone meanwhile
    fails the copy, which the caller then retries the long way.
    """

    def __init__(self, limit=4096):
        super().__init__(limit)

    def remember(self, key, size):
        self._set(key, size)

    def get(self, key):
        return self._entries.get(key)


def probe_state(key, response):
    """What one ``ListObjectsV2(Prefix=key, Delimiter="/")`` page says about
    ``key``: :data:`FILE`, :data:`DIRECTORY`, :data:`ABSENT`, or
    :data:`UNDECIDED` when the page was cut off before the place where
    ``key/`` would be listed (many siblings whose names extend ``key``
    with a character sorting before ``/``).

    A directory is listed as the common prefix ``key/``; a file as the key
    itself, which sorts before anything else with that prefix.  Listings
    are in byte order, so once the page reaches past ``key/`` without it,
    there is no such directory.
    """
    contents = response.get("Contents") or ()
    prefixes = response.get("CommonPrefixes") or ()
    if any(item.get("Key") == key for item in contents):
        return FILE
    below = key + "/"
    if any(item.get("Prefix") == below for item in prefixes):
        return DIRECTORY
    if not response.get("IsTruncated"):
        return ABSENT
    names = [item.get("Key", "") for item in contents] + [
        item.get("Prefix", "") for item in prefixes
    ]
    if any(name > below for name in names):
        return ABSENT
    return UNDECIDED

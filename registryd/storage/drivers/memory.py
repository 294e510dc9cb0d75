"""The ``inmemory`` storage driver: a tree of files in memory.

For tests and throw-away registries.  It follows the filesystem driver's
semantics closely enough to pass the same driver test suite, so tests that
use it say something about production:

- Directories are implicit, as in an object store: a directory exists
  while something is stored under it, and disappears with its last file.
  (The filesystem driver keeps empty directories; the registry model must
  cope with both.)
- A file is an object holding a ``bytearray``.  ``put_content`` swaps in a
  new object, so it is atomic; an open reader or writer keeps the object it
  opened, like an open file descriptor keeps its inode after a rename or
  unlink.
- Reads return copies, so callers never see (or cause) later mutation.

Everything happens synchronously; methods still return Deferreds.
"""

import time

from twisted.internet import defer
from zope.interface import implementer

from registryd.interfaces import (
    IImmediateMetadata,
    ILocalMetadata,
    IStorageDriver,
    IStorageReader,
    IStorageWriter,
)
from registryd.storage.base import FileInfo, ReaderBase, WriterBase, as_bytes, check_path
from registryd.storage.drivers import check_parameters
from registryd.storage.errors import InvalidOffset, PathNotFound, StorageError


def from_parameters(parameters):
    """Make a driver from the ``storage.inmemory`` section, which must be empty."""
    check_parameters("inmemory", parameters, ())
    return InMemoryDriver()


class _File:
    __slots__ = ("data", "modified")

    def __init__(self, data=b""):
        self.data = bytearray(data)
        self.modified = time.time()


class _Directory:
    __slots__ = ("children", "modified")

    def __init__(self):
        self.children = {}
        self.modified = time.time()


def _is_a_directory(path):
    return StorageError(f"{path}: is a directory")


@implementer(IStorageDriver, ILocalMetadata, IImmediateMetadata)
class InMemoryDriver:
    """Files in a dict tree, gone when the process ends."""

    name = "inmemory"

    def __init__(self):
        self._root = _Directory()

    # The tree

    def _find(self, parts):
        """The node at ``parts``, or None."""
        node = self._root
        for part in parts:
            if not isinstance(node, _Directory):
                return None
            node = node.children.get(part)
            if node is None:
                return None
        return node

    def _file(self, path):
        """The file at ``path``, or PathNotFound."""
        node = self._find(check_path(path))
        if not isinstance(node, _File):
            raise PathNotFound(path)
        return node

    def _make_parent(self, path, parts):
        """The directory that will hold ``parts``, created as needed.

        Raises before changing anything if a file is in the way.
        """
        if not parts:
            raise _is_a_directory(path)
        node = self._root
        for part in parts[:-1]:
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Directory()
                node.modified = time.time()
            elif not isinstance(child, _Directory):
                raise StorageError(f"{path}: not a directory: {part!r}")
            node = child
        return node

    def _attach(self, path, parts, node):
        parent = self._make_parent(path, parts)
        if isinstance(parent.children.get(parts[-1]), _Directory):
            raise _is_a_directory(path)
        parent.children[parts[-1]] = node
        parent.modified = time.time()

    def _detach(self, parts):
        """Remove the node at ``parts`` (which exists) and any directories
        left empty above it."""
        chain = [self._root]
        for part in parts[:-1]:
            chain.append(chain[-1].children[part])
        del chain[-1].children[parts[-1]]
        now = time.time()
        chain[-1].modified = now
        for depth in range(len(chain) - 1, 0, -1):
            if chain[depth].children:
                break
            del chain[depth - 1].children[parts[depth - 1]]
            chain[depth - 1].modified = now

    def _discard(self, parts, node):
        """Cancel a writer: remove its file if it is still the one at ``parts``."""
        if self._find(parts) is node:
            self._detach(parts)

    # IStorageDriver

    def get_content(self, path):
        return defer.maybeDeferred(lambda: bytes(self._file(path).data))

    def put_content(self, path, content):
        return defer.maybeDeferred(self._put_content, path, content)

    def _put_content(self, path, content):
        parts = check_path(path)
        self._attach(path, parts, _File(as_bytes(content)))

    def reader(self, path, offset=0):
        return defer.maybeDeferred(self._reader, path, offset)

    def _reader(self, path, offset):
        file = self._file(path)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, got {offset!r}")
        if not 0 <= offset <= len(file.data):
            raise InvalidOffset(path, offset)
        return MemoryReader(file, path, offset)

    def writer(self, path, append=False):
        return defer.maybeDeferred(self._writer, path, append)

    def _writer(self, path, append):
        parts = check_path(path)
        existing = self._find(parts)
        if append and isinstance(existing, _File):
            file = existing
        else:
            file = _File()
            self._attach(path, parts, file)
        return MemoryWriter(self, path, parts, file)

    def stat(self, path):
        return defer.maybeDeferred(self._stat, path)

    def _stat(self, path):
        node = self._find(check_path(path))
        if node is None:
            raise PathNotFound(path)
        if isinstance(node, _Directory):
            return FileInfo(path=path, size=0, modified=node.modified, is_dir=True)
        return FileInfo(path=path, size=len(node.data), modified=node.modified)

    def stat_now(self, path):
        return self._stat(path)

    def list(self, path):
        return defer.maybeDeferred(self._list, path)

    def list_now(self, path):
        return self._list(path)

    def _list(self, path):
        node = self._find(check_path(path))
        if not isinstance(node, _Directory):
            raise PathNotFound(path)
        return sorted(node.children)

    def list_many(self, paths):
        return defer.maybeDeferred(self._list_many, paths)

    def _list_many(self, paths):
        listings = []
        for path in paths:
            try:
                listings.append(self._list(path))
            except PathNotFound:
                listings.append(None)
        return listings

    def move(self, source, destination):
        return defer.maybeDeferred(self._move, source, destination)

    def _move(self, source, destination):
        source_parts = check_path(source)
        destination_parts = check_path(destination)
        if not source_parts:
            raise _is_a_directory(source)
        node = self._find(source_parts)
        if node is None:
            raise PathNotFound(source)
        if source_parts == destination_parts:
            return
        if isinstance(node, _Directory):
            # rename(2) rules, given that empty directories do not exist here
            if destination_parts[: len(source_parts)] == source_parts:
                raise StorageError(f"{source} -> {destination}: destination inside source")
            if self._find(destination_parts) is not None:
                raise StorageError(f"{source} -> {destination}: destination exists")
        self._attach(destination, destination_parts, node)
        self._detach(source_parts)

    def delete(self, path):
        return defer.maybeDeferred(self._delete, path)

    def _delete(self, path):
        parts = check_path(path)
        if self._find(parts) is None:
            raise PathNotFound(path)
        if parts:
            self._detach(parts)
        else:
            self._root = _Directory()

    def redirect_url(self, path, method):
        return defer.maybeDeferred(self._redirect_url, path)

    def _redirect_url(self, path):
        check_path(path)
        return None


@implementer(IStorageReader)
class MemoryReader(ReaderBase):
    """Reads a file object from an offset; sees bytes appended meanwhile."""

    def __init__(self, file, path, offset):
        self.path = path
        self.size = len(file.data)
        self.offset = offset
        self._file = file
        self._closed = False

    def _read_checked(self, length):
        data = bytes(self._file.data[self.offset : self.offset + length])
        self.offset += len(data)
        return defer.succeed(data)

    def close(self):
        self._closed = True
        return defer.succeed(None)


@implementer(IStorageWriter)
class MemoryWriter(WriterBase):
    """Appends to a file object; the bytes are visible at once, as on disk."""

    def __init__(self, driver, path, parts, file):
        self.path = path
        self.size = len(file.data)
        self._driver = driver
        self._parts = parts
        self._file = file
        self._closed = False

    def _accept(self, data):
        self._file.data += data
        self._file.modified = time.time()
        return defer.succeed(None)

    def close(self):
        self._closed = True
        return defer.succeed(None)

    def commit(self):
        if self._closed:
            return self._closed_error()
        self._closed = True
        return defer.succeed(None)

    def cancel(self):
        if self._closed:
            return self._closed_error()
        self._closed = True
        self._driver._discard(self._parts, self._file)
        return defer.succeed(None)

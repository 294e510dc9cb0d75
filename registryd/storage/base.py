"""What every storage driver shares: file descriptions and path checking."""

import re

import attr
from twisted.internet import defer

from registryd.storage.errors import InvalidPath, StorageError


@attr.s(frozen=True, slots=True)
class FileInfo:
    """What ``IStorageDriver.stat`` tells about a path."""

    path = attr.ib()
    size = attr.ib()  # bytes; 0 for a directory
    modified = attr.ib()  # POSIX timestamp (float)
    is_dir = attr.ib(default=False)


# NUL, newline and every other control character (C0, DEL, C1), and the
# backslash: none is in any name the registry validates.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def check_path(path):
    """Return the components of a driver path, refusing anything unsafe.

    A path is absolute, ``/``-separated, and no component is empty, ``.``,
    ``..`` or contains a control character (NUL, newline...) or a
    backslash.  The registry model only builds paths from validated names
    and digests, so this is the last line of defence against escaping a
    driver's root or writing a name no listing shows, kept in one place so
    every driver applies it identically.  ``"/"`` is the root (no components).
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidPath(path, "path must be an absolute str")
    if path == "/":
        return []
    parts = path[1:].split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidPath(path, "empty, '.' or '..' component")
    if _FORBIDDEN.search(path):
        raise InvalidPath(path, "control character or backslash in path")
    return parts


def as_bytes(data):
    """``data`` as immutable ``bytes``, copied when it is mutable or a view
    (the caller may reuse its buffer after a write returns); anything that
    is not bytes-like is a TypeError.  Every driver accepts data this way."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    return bytes(data)


class WriterBase:
    """What every driver's writer does before taking bytes: refuse them
    once closed, take any bytes-like data as ``bytes`` (:func:`as_bytes`), count
    them in ``size``; then ``_accept`` stores them (a Deferred).  Subclasses
    set ``path``, ``size`` and ``_closed``."""

    _closed = False

    def _closed_error(self):
        return defer.fail(StorageError(f"{self.path}: writer is closed"))

    def write(self, data):
        return self._take(data, self._accept)

    def _take(self, data, accept, *args):
        """The checks of :meth:`write`, then ``accept(data, *args)`` (a
        Deferred): what a subclass's other ways of writing share."""
        if self._closed:
            return self._closed_error()
        try:
            data = as_bytes(data)
        except TypeError:
            return defer.fail()
        self.size += len(data)
        return accept(data, *args)

    def _accept(self, data):
        raise NotImplementedError


class ReaderBase:
    """What every driver's reader does before reading: refuse once closed,
    and take only a length that is an int >= 0; then ``_read_checked``
    reads (a Deferred).  Subclasses set ``path`` and ``_closed``."""

    _closed = False

    def read(self, length):
        if self._closed:
            return defer.fail(StorageError(f"{self.path}: reader is closed"))
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            return defer.fail(ValueError(f"length must be an int >= 0, got {length!r}"))
        return self._read_checked(length)

    def _read_checked(self, length):
        raise NotImplementedError

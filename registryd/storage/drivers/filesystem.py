"""The ``filesystem`` storage driver: files under a root directory.

It is the embedded default, so it has to be safe on a busy registry:

- The reactor never waits for the disk.  One-shot calls run in the
  driver's own threads (:class:`~registryd.runtime.threads.BlockingExecutor`,
  ``maxthreads`` of them at most); each open reader and writer has its own
  :class:`~registryd.runtime.threads.SerialWorker` in those same threads,
  so its reads or writes happen in order without holding a thread between
  them, and a client that disconnects mid-upload (klein cancels the
  handler) still gets every queued write applied before the file is
  closed.  A reader also offers its descriptor for ``sendfile``.
  Small reads and stats that the kernel can answer from its caches are
  done on the reactor thread (:mod:`~registryd.storage.drivers.nowait`
  asks it to refuse rather than wait for the disk); the rest go to threads.
- ``put_content`` writes ``<name>.<random>.tmp`` next to the target and
  renames it into place, so readers see the old or the new content, never
  a mix.  The model ignores ``*.tmp`` files, as Distribution does.
- Paths go through :func:`~registryd.storage.base.check_path` on the
  reactor thread before any I/O, so nothing outside the root is touched.

Errors: a missing file (or a directory where a file is wanted, or a file in
the middle of a path) is :class:`PathNotFound` when reading, stat-ing or
listing; a root that is full, read-only or not accessible (``ENOSPC``,
``EDQUOT``, ``EROFS``, ``EACCES``, ``EPERM``) is
:class:`~registryd.storage.errors.StorageRefused` naming the condition
(clients get a retryable 503); any other ``OSError`` becomes
:class:`StorageError` naming the driver path (never the host path, which
callers do not know).  :meth:`FilesystemDriver.check_root` is the start-up
check that the root can be written at all.
"""

import contextlib
import errno
import os
import secrets
import shutil
import stat as stat_module
import struct
import sys
import time
from collections import OrderedDict

from twisted.internet import defer
from zope.interface import implementer

from registryd.interfaces import (
    IImmediateMetadata,
    ILocalMetadata,
    IObservedWriter,
    IStorageDriver,
    IStorageReader,
    IStorageWriter,
)
from registryd.runtime.threads import BlockingExecutor, SerialWorker
from registryd.storage.base import FileInfo, ReaderBase, WriterBase, as_bytes, check_path
from registryd.storage.drivers import InvalidParameter, check_parameters, nowait
from registryd.storage.errors import InvalidOffset, PathNotFound, StorageError, StorageRefused

DEFAULT_ROOT = "./registry-data"
#: Bytes a writer writes before it asks the kernel to start writing them
#: out (FileWriter._start_writeback).
WRITEBACK_EVERY = 8 * 1024 * 1024
DEFAULT_MAX_THREADS = 100  # Distribution's default


def from_parameters(parameters):
    """Make a driver from the ``storage.filesystem`` configuration section.

    ``rootdirectory`` is made absolute now, against the working directory at
    start-up, so a later ``chdir`` (twistd daemonising) cannot move it.
    ``maxthreads`` is accepted as Distribution accepts it (an integer or a
    decimal string) so existing configs work; as there, it bounds how many
    blocking calls (stat, small reads and writes, listings, and the reads
    and writes of streaming readers and writers) run at once
    (:class:`registryd.runtime.threads.WorkerThreads`).
    """
    section = check_parameters("filesystem", parameters, {"rootdirectory", "maxthreads"})
    root = section.get("rootdirectory", DEFAULT_ROOT)
    if not isinstance(root, str) or not root or "\x00" in root:
        raise InvalidParameter(
            "storage.filesystem.rootdirectory", f"expected a directory path, got {root!r}"
        )
    max_threads = _parse_max_threads(section.get("maxthreads", DEFAULT_MAX_THREADS))
    return FilesystemDriver(os.path.abspath(root), max_threads=max_threads)


#: Host paths remembered by a driver (about 200 bytes each); all are
#: forgotten when there would be more.
_MAX_HOST_PATHS = 4096


def _parse_max_threads(value):
    key = "storage.filesystem.maxthreads"
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise InvalidParameter(key, f"expected an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(key, f"expected an integer, got {value!r}")
    if value < 1:
        raise InvalidParameter(key, f"must be at least 1, got {value}")
    return value


def _failure(path, error, doing):
    """The storage error for an OSError of ``doing`` ``path``: a full,
    read-only or inaccessible root is named as such (StorageRefused, a
    retryable 503 for clients); anything else is a plain StorageError."""
    refused = StorageRefused.from_os_error(error, doing, path)
    if refused is not None:
        return refused
    return StorageError(f"{path}: {error.strerror or error}")


class _Translating:
    """A context translating the OSErrors of a call on ``path`` into storage
    errors.  A class rather than a generator context: every stat and small
    read on the reactor thread enters one, and a generator's costs several
    times more."""

    __slots__ = ("_driver_path", "_doing", "_absent")

    def __init__(self, path, doing, absent):
        self._driver_path = path
        self._doing = doing
        #: whether "nothing there" is PathNotFound (reads) or a failure
        self._absent = absent

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None or not issubclass(kind, OSError):
            return False
        _raise_translated(error, self._driver_path, self._doing, self._absent)


def _raise_translated(error, path, doing, absent):
    """Raise the storage error for OSError ``error`` of ``doing`` ``path``:
    with ``absent``, "nothing there" is PathNotFound."""
    if absent and isinstance(error, _ABSENT):
        raise PathNotFound(path) from None
    raise _failure(path, error, doing) from error


_ABSENT = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _reading(path, doing="reading"):
    """Translate OSErrors of read-side calls; "nothing there" is PathNotFound."""
    return _Translating(path, doing, True)


def _writing(path):
    """Translate OSErrors of write-side calls: all are StorageError."""
    return _Translating(path, "writing", False)


# The functions below run in threads.


def _read_file(full, path):
    with _reading(path), open(full, "rb") as file:
        return file.read()


def _write_file(full, path, content):
    directory, name = os.path.split(full)
    temporary = os.path.join(directory, f"{name}.{secrets.token_hex(8)}.tmp")
    with _writing(path):
        os.makedirs(directory, exist_ok=True)
        try:
            # "x": never share a temporary file; mode 0666 & ~umask, like Distribution.
            with open(temporary, "xb") as file:
                file.write(content)
                file.flush()
            os.replace(temporary, full)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _open_for_reading(full, path, offset, opened):
    with _reading(path):
        file = open(full, "rb")
    try:
        size = os.fstat(file.fileno()).st_size
        if offset > size:
            raise InvalidOffset(path, offset)
        file.seek(offset)
    except BaseException:
        file.close()
        raise
    opened.append(file)
    return file, size


def _open_for_writing(full, path, append, opened):
    with _writing(path):
        os.makedirs(os.path.dirname(full), exist_ok=True)
        file = open(full, "ab" if append else "wb")
        try:
            size = os.fstat(file.fileno()).st_size
        except BaseException:
            file.close()
            raise
    opened.append(file)
    return file, size


def _close_all(files):
    """Close files whose opening was cancelled by the caller."""
    for file in files:
        with contextlib.suppress(OSError):
            file.close()


def _stat(full, path):
    with _reading(path):
        result = os.stat(full)
    return _file_info(path, result)


def _file_info(path, result):
    is_dir = stat_module.S_ISDIR(result.st_mode)
    return FileInfo(
        path=path,
        size=0 if is_dir else result.st_size,
        modified=result.st_mtime,
        is_dir=is_dir,
    )


def _list(full, path):
    with _reading(path):
        return sorted(os.listdir(full))


#: A listing's key packed: 40 bytes where a tuple of four ints took about
#: 200 (a catalog walk keeps two keys per repository).
_KEY = struct.Struct("QQqq")


def _listing_key(info):
    """What changes whenever a directory's entries change."""
    return _KEY.pack(info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)


def _list_with_key(full, path):
    """(key or None, sorted names): the key when the listing may be reused
    while the directory keeps that key (see _ListingCache)."""
    with _reading(path):
        info = os.stat(full)
        names = sorted(os.listdir(full))
    if not _settled(info, time.time()):
        return None, names
    return _listing_key(info), names


def _settled(info, now):
    """Whether a listing taken after the stat ``info`` (of a directory, at
    ``now``) may be kept: whether a later change of the directory is
    certain to show in its times.

    File times come from a coarse clock, so two changes within one of its
    ticks can leave a directory's times as the first one set them: a
    listing taken between the two would look current.  A time with
    digits below the millisecond comes from a filesystem keeping
    nanoseconds, whose clock ticks every few milliseconds (the kernel's
    tick: 10 ms at most); once ``settled_fine`` has passed, that tick is
    over.  Any other time may come from a filesystem counting whole
    seconds (ext4's small inodes, FAT's two seconds, some NFS servers):
    those wait ``settled``.  (A nanosecond time that happens to fall on
    a whole millisecond only waits longer.)"""
    if info.st_mtime_ns % 1_000_000:
        return now - info.st_mtime >= _ListingCache.settled_fine
    return now - info.st_mtime >= _ListingCache.settled


class _ListingCache:
    """Directory listings (a repository's tags, 10 or 10,000 of them), kept
    while the directory is unchanged.

    Adding or removing an entry updates a directory's modification time,
    so a listing taken after a stat is still right while a new stat shows
    the same inode and times; checking costs a stat from the dentry cache
    (on the reactor thread, :mod:`nowait`) instead of reading and sorting
    the directory in a thread (for a small one, the thread's round trip
    is most of a tags list's cost).  File times are taken from a coarse
    clock (a few ms), so two changes within one tick could leave the time
    as it was: a directory changed less than ``settled_fine`` seconds
    before it was listed (``settled`` on a filesystem whose times may count
    whole seconds or milliseconds: :func:`_settled`) is not cached.
    Another process or node changing the directory changes its times the
    same way.

    Bounded by directories (``max_directories``) and by the names kept in
    all (``max_names``), least recently used first out.
    """

    settled = 2.0
    settled_fine = 0.1
    max_directories = 4096
    max_names = 256 * 1024

    def __init__(self, max_directories=None, max_names=None):
        self._entries = OrderedDict()
        self._names = 0
        if max_directories is not None:
            self.max_directories = max_directories
        if max_names is not None:
            self.max_names = max_names

    def get(self, full):
        entry = self._entries.get(full)
        if entry is None:
            return None
        try:
            info = nowait.stat_cached(full)
        except OSError:
            self._drop(full)
            raise
        if info is nowait.WOULD_BLOCK or _listing_key(info) != entry[0]:
            self._drop(full)
            return None
        self._entries.move_to_end(full)
        return list(entry[1])

    def kept(self, full):
        """``(key, names)`` as kept for ``full``, unchecked, or None: a
        walk's thread compares the key with a fresh stat
        (:func:`_list_many`), then :meth:`touch` marks the listing used."""
        return self._entries.get(full)

    def touch(self, full):
        if full in self._entries:
            self._entries.move_to_end(full)

    def forget(self, full):
        self._drop(full)

    def put(self, full, key, names):
        self._drop(full)
        if key is None or len(names) > self.max_names:
            return
        self._entries[full] = (key, tuple(names))
        self._names += len(names)
        while len(self._entries) > self.max_directories or self._names > self.max_names:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._names -= len(evicted)

    def _drop(self, full):
        entry = self._entries.pop(full, None)
        if entry is not None:
            self._names -= len(entry[1])


#: What :func:`_list_many` answers for a directory whose stat shows the key
#: its kept listing was taken under: the caller reuses that listing.
_UNCHANGED = object()


def _list_many(wanted):
    """For each ``(full, path, known_key)``: None when ``full`` is not a
    directory, :data:`_UNCHANGED` when a stat shows ``known_key`` again (the
    kept listing holds), else ``(key or None, sorted names)`` as in
    :func:`_list_with_key`.

    A walk (the catalog) asks for thousands of small directories at a
    time, most of them unchanged since the last walk: one stat per
    directory (one system call) replaces opening, reading and closing it
    and sorting its names, and the loop is kept tight (no context manager
    per directory) since it runs once per directory of the page."""
    answers = []
    append = answers.append
    now = time.time()
    is_dir = stat_module.S_ISDIR
    for full, path, known_key in wanted:
        try:
            info = os.stat(full)
            if not is_dir(info.st_mode):
                append(None)
                continue
            key = _listing_key(info)
            if key == known_key:
                append(_UNCHANGED)
                continue
            # Interned: every repository's directory holds the same few
            # names (_layers, _manifests), kept once instead of each time.
            names = sorted(map(sys.intern, os.listdir(full)))
        except (FileNotFoundError, NotADirectoryError):
            append(None)
            continue
        except OSError as error:
            raise _failure(path, error, "reading") from error
        append((key if _settled(info, now) else None, names))
    return answers


def _move(full_source, source, full_destination, destination):
    with _reading(source):
        os.lstat(full_source)
    with _writing(destination):
        os.makedirs(os.path.dirname(full_destination), exist_ok=True)
    try:
        os.replace(full_source, full_destination)
    except FileNotFoundError:  # removed since the lstat above
        raise PathNotFound(source) from None
    except OSError as error:
        raise _failure(f"{source} -> {destination}", error, "moving") from error


def _delete(full, path):
    def ignore_vanished(function, name, exc_info):
        # Something else deleting part of the tree at the same time is fine.
        if not (issubclass(exc_info[0], FileNotFoundError) and name != full):
            raise exc_info[1]

    with _reading(path, "deleting"):
        if stat_module.S_ISDIR(os.lstat(full).st_mode):
            shutil.rmtree(full, onerror=ignore_vanished)
        else:
            os.unlink(full)


@implementer(IStorageDriver, ILocalMetadata, IImmediateMetadata)
class FilesystemDriver:
    """Files under ``root``, one host file per driver path."""

    name = "filesystem"

    def __init__(self, root, max_threads=DEFAULT_MAX_THREADS, reactor=None):
        """
        :param root: the directory holding everything; created on first write.
        :param reactor: an IReactorThreads provider; the global reactor,
            looked up only when first needed, by default.
        """
        self.root = os.path.abspath(os.fspath(root))
        self.max_threads = max_threads
        self._reactor = reactor
        self._executor = BlockingExecutor(reactor, max_threads, name="registryd-filesystem")
        self._listings = _ListingCache()
        #: the listings walks (list_many: the catalog) reuse, apart from
        #: tags lists' so a walk of many repositories does not push those
        #: out; sized for a catalog of about 10,000 repositories (a
        #: repository's directory and its revisions' directory each; at
        #: most about 15 MiB of names, revision digests being the longest)
        self._walk_listings = _ListingCache(max_directories=32 * 1024, max_names=128 * 1024)
        #: driver path -> host path, for :meth:`_host_path`
        self._host_paths = {}
        # _joined's prefix: os.path.join of many parts costs more than the
        # stat a walk's kept listing needs
        self._root_prefix = self.root.rstrip("/")

    def __repr__(self):
        return f"<FilesystemDriver at {self.root!r}>"

    def check_root(self):
        """Make sure the root is a directory registryd can write, creating
        it if missing; blocking, for start-up, before the reactor runs.

        A root that cannot be written would otherwise be found by the first
        push, as a 503 after the daemon claimed to be up.

        :raises StorageError: one line naming the root and what is wrong.
        """
        import tempfile

        def refused(what, error):
            name = errno.errorcode.get(error.errno, "")
            reason = f"{error.strerror or error}" + (f" ({name})" if name else "")
            return StorageError(f"storage root {self.root}: {what}: {reason}")

        try:
            os.makedirs(self.root, exist_ok=True)
        except FileExistsError:
            raise StorageError(f"storage root {self.root}: exists and is not a directory") from None
        except OSError as error:
            raise refused("cannot create it", error) from None
        try:
            descriptor, probe = tempfile.mkstemp(prefix=".registryd-start-", dir=self.root)
        except OSError as error:
            raise refused("cannot write in it", error) from None
        os.close(descriptor)
        os.unlink(probe)

    # Paths

    def _host_path(self, path):
        """The host path of driver path ``path``, once :func:`check_path` let it
        through.  Remembered: a registry asks the same few link paths over
        and over, and checking and joining one costs more than its stat."""
        full = self._host_paths.get(path) if type(path) is str else None
        if full is None:
            full = self._joined(path)
            if len(self._host_paths) >= _MAX_HOST_PATHS:
                self._host_paths.clear()
            self._host_paths[path] = full
        return full

    def _joined(self, path):
        """The host path of driver path ``path``, checked and not remembered:
        a walk's thousands of directories (:meth:`list_many`) would push
        the hot link paths out of :meth:`_host_path`'s memory."""
        # check_path refuses empty, "." and ".." parts: the driver path
        # appended to the root is the host path
        return self._root_prefix + path if check_path(path) else self.root

    def _host_file_path(self, path, error):
        """A host path for an operation on a file: the root is a directory."""
        if path == "/":
            raise error(path)
        return self._host_path(path)

    # Threads

    def _get_reactor(self):
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _in_thread(self, function, *args):
        return self._executor.run(function, *args)

    def _serial_worker(self):
        # In the driver's own threads, not Twisted's pool: a hand-off there
        # costs several times more (registryd.runtime.threads.WorkerThreads).
        return SerialWorker(self._get_reactor(), self._executor.worker_threads)

    async def _open(self, worker, function, *args):
        """Run an opening function on ``worker``; if the caller gives up
        waiting, close what it opens once it has."""
        opened = []
        try:
            return await worker.submit(function, *args, opened)
        except defer.CancelledError:
            worker.submit(_close_all, opened)
            raise

    # IStorageDriver

    def get_content(self, path):
        return defer.maybeDeferred(self._get_content, path)

    def _get_content(self, path):
        full = self._host_file_path(path, PathNotFound)
        with _reading(path):
            content = nowait.read_small_file(full)
        if content is not nowait.WOULD_BLOCK:
            return content  # from the caches, without waiting for the disk
        return self._in_thread(_read_file, full, path)

    def put_content(self, path, content):
        return defer.maybeDeferred(self._put_content, path, content)

    def _put_content(self, path, content):
        full = self._host_file_path(path, _is_a_directory)
        return self._in_thread(_write_file, full, path, as_bytes(content))

    def reader(self, path, offset=0):
        return defer.maybeDeferred(self._reader, path, offset)

    async def _reader(self, path, offset):
        full = self._host_file_path(path, PathNotFound)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, got {offset!r}")
        if offset < 0:
            raise InvalidOffset(path, offset)
        worker = self._serial_worker()
        file, size = await self._open(worker, _open_for_reading, full, path, offset)
        return FileReader(file, path, size, offset, worker)

    def writer(self, path, append=False):
        return defer.maybeDeferred(self._writer, path, append)

    async def _writer(self, path, append):
        full = self._host_file_path(path, _is_a_directory)
        worker = self._serial_worker()
        file, size = await self._open(worker, _open_for_writing, full, path, bool(append))
        return FileWriter(file, full, path, size, worker)

    def stat(self, path):
        return defer.maybeDeferred(self._stat, path)

    def _stat(self, path):
        info = self.stat_now(path)
        if info is not None:
            return info
        return self._in_thread(_stat, self._host_path(path), path)

    def stat_now(self, path):
        full = self._host_path(path)
        try:
            result = nowait.stat_cached(full)
        except OSError as error:
            _raise_translated(error, path, "reading", absent=True)
        return None if result is nowait.WOULD_BLOCK else _file_info(path, result)

    def list(self, path):
        return defer.maybeDeferred(self._list, path)

    def list_now(self, path):
        try:
            return self._listings.get(self._host_path(path))
        except OSError:
            return None  # gone or unreadable: list's thread reports it

    def _list(self, path):
        names = self.list_now(path)
        if names is not None:
            return names
        full = self._host_path(path)

        def keep(result):
            key, names = result
            self._listings.put(full, key, names)
            return names

        return self._in_thread(_list_with_key, full, path).addCallback(keep)

    def list_many(self, paths):
        return defer.maybeDeferred(self._list_many, paths)

    def _list_many(self, paths):
        """One thread hop for all ``paths``; directories unchanged since a
        walk listed them are only stat-ed there (:func:`_list_many`)."""
        kept = self._walk_listings
        wanted = []
        entries = []
        for path in paths:
            full = self._joined(path)
            entry = kept.kept(full)
            entries.append(entry)
            wanted.append((full, path, None if entry is None else entry[0]))

        def keep(answers):
            listings = []
            for (full, _, _), entry, answer in zip(wanted, entries, answers):
                if answer is _UNCHANGED:
                    kept.touch(full)
                    listings.append(list(entry[1]))
                elif answer is None:
                    kept.forget(full)
                    listings.append(None)
                else:
                    key, names = answer
                    kept.put(full, key, names)
                    listings.append(names)
            return listings

        return self._in_thread(_list_many, wanted).addCallback(keep)

    def move(self, source, destination):
        return defer.maybeDeferred(self._move, source, destination)

    def _move(self, source, destination):
        full_source = self._host_file_path(source, _is_a_directory)
        full_destination = self._host_file_path(destination, _is_a_directory)
        return self._in_thread(_move, full_source, source, full_destination, destination)

    def delete(self, path):
        return defer.maybeDeferred(lambda: self._in_thread(_delete, self._host_path(path), path))

    def redirect_url(self, path, method):
        return defer.maybeDeferred(self._redirect_url, path)

    def _redirect_url(self, path):
        check_path(path)
        return None  # clients are best served by registryd itself


def _is_a_directory(path):
    return StorageError(f"{path}: is a directory")


@implementer(IStorageReader)
class FileReader(ReaderBase):
    """An open file, read in a thread one request at a time.

    ``offset`` is advanced by the worker thread as each read completes (reads
    are serialised, so it is always consistent); it can be ahead of the
    Deferreds that have fired.
    """

    def __init__(self, file, path, size, offset, worker):
        self.path = path
        self.size = size
        self.offset = offset
        self._file = file
        self._worker = worker
        self._closed = False

    def _read_checked(self, length):
        return self._worker.submit(self._read, length)

    def _read(self, length):
        with _reading(self.path):
            data = self._file.read(length)
        self.offset += len(data)
        return data

    def fileno(self):
        """The open file's descriptor, valid until :meth:`close`: lets
        :class:`registryd.http.web.BlobSender` send the bytes from ``offset`` with
        ``sendfile`` instead of reading them (reads move ``offset``; the
        sender does not)."""
        if self._closed:
            raise ValueError(f"{self.path}: reader is closed")
        return self._file.fileno()

    def close(self):
        if self._closed:
            return self._worker.drain()
        self._closed = True
        return self._worker.submit(self._file.close)


@implementer(IStorageWriter, IObservedWriter)
class FileWriter(WriterBase):
    """An open file, written in a thread in the order writes were made.

    After a write fails, later writes and ``commit`` fail too: appending
    after a gap would corrupt the file silently.  ``write_observed`` also
    hands each written piece to an observer in the same thread job (an
    upload's hasher: one hand-off per piece instead of two).
    """

    def __init__(self, file, full, path, size, worker):
        self.path = path
        self.size = size
        self._file = file
        self._full = full
        self._worker = worker
        self._closed = False
        self._failed = False
        # In the worker thread: the offset written up to, and up to which
        # the kernel was asked to start writing back (_start_writeback).
        self._written = size
        self._writeback_from = size

    def _accept(self, data):
        return self._worker.submit(self._write, data)

    def write_observed(self, data, observer):
        return self._take(data, self._accept_observed, observer)

    def _accept_observed(self, data, observer):
        return self._worker.submit(self._write_observed, data, observer)

    def _write_observed(self, data, observer):
        self._write(data)
        observer(data)

    def drain(self):
        return self._worker.drain()

    def _write(self, data):
        if self._failed:
            raise StorageError(f"{self.path}: an earlier write failed")
        try:
            with _writing(self.path):
                self._file.write(data)
        except StorageError:
            self._failed = True
            raise
        self._written += len(data)
        if self._written - self._writeback_from >= WRITEBACK_EVERY:
            self._start_writeback()

    def _start_writeback(self):
        """Ask the kernel to start writing what was written so far to the
        disk, without waiting (``sync_file_range``): commit's ``fsync``
        then waits for the last few MiB instead of the whole blob, whose
        writing-out overlapped with receiving it (measured: the ``fsync``
        of a 256 MiB upload took 150-250 ms, a third of the push).  Only an
        optimisation: where it is missing or refused, nothing changes."""
        try:
            self._file.flush()
            nowait.start_writeback(
                self._file.fileno(), self._writeback_from, self._written - self._writeback_from
            )
        except (OSError, ValueError):
            return
        self._writeback_from = self._written

    def close(self):
        if self._closed:
            return self._worker.drain()
        self._closed = True
        return self._worker.submit(self._finish, durable=False)

    def commit(self):
        if self._closed:
            return self._closed_error()
        self._closed = True
        return self._worker.submit(self._finish, durable=True)

    def cancel(self):
        if self._closed:
            return self._closed_error()
        self._closed = True
        return self._worker.submit(self._discard)

    def _finish(self, durable):
        try:
            with _writing(self.path):
                if durable:
                    if self._failed:
                        raise StorageError(f"{self.path}: an earlier write failed")
                    self._file.flush()
                    os.fsync(self._file.fileno())
                elif self._written > self._writeback_from and not self._failed:
                    # An upload chunk ends: its tail starts for the disk too,
                    # so the final commit has little left to wait for.
                    self._start_writeback()
                self._file.close()
        finally:
            if not self._file.closed:
                _close_all([self._file])

    def _discard(self):
        _close_all([self._file])
        with _writing(self.path), contextlib.suppress(FileNotFoundError):
            os.unlink(self._full)

"""Small file reads and stats on the reactor thread, when they cannot block.

A manifest GET reads two link files and a blob HEAD reads a link and stats
the data: tiny operations that the page and dentry caches usually answer in
microseconds.  Handing each to a thread costs far more than that (a thread
wake-up, two GIL hand-offs, a reactor wake-up: measured, it doubled the CPU
time of a manifest GET).  Doing them on the reactor thread unconditionally
would stall every connection whenever the disk has to be read, so these
helpers ask the kernel to refuse instead of waiting:

* ``openat2(..., RESOLVE_CACHED)`` (Linux 5.12) resolves the path only from
  the dentry cache and fails with ``EAGAIN`` if that would need I/O;
* ``preadv2(..., RWF_NOWAIT)`` reads only what is in the page cache;
* ``fstat`` of an open descriptor needs no I/O.

Each helper returns :data:`WOULD_BLOCK` when the kernel cannot answer
without waiting (or is too old to promise that, or the file is not a small
regular file); the caller then does the operation in a thread as before,
which also produces the canonical errors.  A missing file is answered on
the spot: the dentry cache knows it is absent.
"""

import ctypes
import errno
import os
import stat as stat_module
import sys

WOULD_BLOCK = object()

#: Largest file read on the reactor thread (link files are ~71 bytes;
#: manifests are usually a few KiB).
MAX_SIZE = 64 * 1024

_SYS_OPENAT2 = 437  # the same number on every Linux architecture
_AT_FDCWD = -100
_RESOLVE_CACHED = 0x20


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def _load_syscall():
    if not sys.platform.startswith("linux") or not hasattr(os, "RWF_NOWAIT"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    return syscall


_syscall = _load_syscall()
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
_PATH_FLAGS = getattr(os, "O_PATH", 0) | os.O_CLOEXEC

# The call's arguments, made once: building the ctypes objects on each call
# cost three times the system call (a blob HEAD makes two of them).  The
# kernel only reads the open_how structures, so threads may share them.
_OPENAT2 = ctypes.c_long(_SYS_OPENAT2)
_CWD = ctypes.c_long(_AT_FDCWD)
_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))
_HOWS = {
    flags: (how, ctypes.byref(how))
    for flags in (_READ_FLAGS, _PATH_FLAGS)
    for how in [_OpenHow(flags, 0, _RESOLVE_CACHED)]
}


def available():
    """Whether this kernel and platform offer the non-blocking paths."""
    return _syscall is not None


def _disable():
    global _syscall
    _syscall = None


def _open_cached(full, flags):
    """A descriptor for ``full`` if its path resolves from the dentry cache;
    WOULD_BLOCK if it does not; raise FileNotFoundError/NotADirectoryError
    when the cache knows it is missing."""
    syscall = _syscall
    if syscall is None:
        return WOULD_BLOCK
    fd = syscall(_OPENAT2, _CWD, os.fsencode(full), _HOWS[flags][1], _HOW_SIZE)
    if fd >= 0:
        return fd
    code = ctypes.get_errno()
    if code == errno.ENOENT:
        raise FileNotFoundError(code, os.strerror(code), full)
    if code == errno.ENOTDIR:
        raise NotADirectoryError(code, os.strerror(code), full)
    if code in (errno.ENOSYS, errno.EINVAL, errno.E2BIG, errno.EPERM):
        # No openat2, no RESOLVE_CACHED (before Linux 5.12), or a sandbox
        # refusing the call: stop trying.
        _disable()
    return WOULD_BLOCK


def read_small_file(full):
    """The content of regular file ``full`` if it is at most MAX_SIZE bytes
    and fully cached; else WOULD_BLOCK."""
    fd = _open_cached(full, _READ_FLAGS)
    if fd is WOULD_BLOCK:
        return WOULD_BLOCK
    try:
        info = os.fstat(fd)
        if not stat_module.S_ISREG(info.st_mode) or info.st_size > MAX_SIZE:
            return WOULD_BLOCK
        size = info.st_size
        if size == 0:
            return b""
        buffer = bytearray(size + 1)  # one more: notice a file that grew
        try:
            count = os.preadv(fd, [buffer], 0, os.RWF_NOWAIT)
        except (BlockingIOError, InterruptedError):
            return WOULD_BLOCK
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return WOULD_BLOCK  # a filesystem without RWF_NOWAIT
            raise
        if count != size:
            return WOULD_BLOCK  # partly cached, or changed meanwhile
        return bytes(buffer[:size])
    finally:
        os.close(fd)


def stat_cached(full):
    """``os.stat_result`` of ``full`` if its path resolves from the dentry
    cache; else WOULD_BLOCK."""
    fd = _open_cached(full, _PATH_FLAGS)
    if fd is WOULD_BLOCK:
        return WOULD_BLOCK
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _load_sync_file_range():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd, offset, length):
    """Ask the kernel to start writing a range of a file to the disk, and
    return without waiting for it (Linux ``sync_file_range`` with
    ``SYNC_FILE_RANGE_WRITE``; Python's os module lacks it).  False where
    that is not available."""
    if _sync_file_range is None:
        return False
    return _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0

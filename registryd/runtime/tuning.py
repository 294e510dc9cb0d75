"""Process-wide tuning for moving blobs: the C allocator.

A streaming upload reads the socket in pieces of up to 1 MiB
(``registryd.http.web.RequestBody.read_size``), so CPython allocates a bytes
object of that size per read and frees it once the piece is hashed and
written.  glibc's malloc serves allocations above its mmap threshold
(128 KiB, raised dynamically only up to the size of the last freed mmapped
block, which for a shrunk read buffer is smaller than the next request)
with a fresh ``mmap`` each time: every read then faults in 256 new pages
and ``munmap``s them again.  Measured on a bare Twisted receiver, that is
a third of the reactor thread's CPU at 1 GiB/s.  Raising the threshold
(and the trim threshold with it, so the heap keeps the freed space) makes
those buffers come from memory the process already has.  What the heap
keeps is bounded by what is in flight: a few MiB per upload.

The price is memory kept after a large upload: the freed buffers stay in
the heap.  :func:`release_memory` (``malloc_trim``) hands them back to the
system; uploads ask for it when they end (:func:`release_memory_later`,
once uploads pause), so a process at rest is as small as before (measured:
79 MiB after a 2 GiB push without it, back to 60 with it).

The hasher and writer threads free those buffers too, and glibc gives
each thread that contends for the allocator an arena of its own (up to
eight per core), each keeping its freed space: measured over docker,
podman and skopeo pushes (three layers at a time) on two processes, the
peak RSS was 188-209 MiB with glibc's default, 155 MiB with two arenas
per process and 148 MiB with one (:data:`ARENA_MAX`), pushes as fast.
CPython allocates its objects with the GIL held, so threads hardly ever
contend for the allocator's lock: one arena costs no speed.

Only glibc has ``mallopt`` and ``malloc_trim``; elsewhere these do nothing.
"""

import ctypes
import ctypes.util

# mallopt parameters from <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Allocations below this come from the heap (glibc's maximum for the
#: dynamic threshold is 32 MiB; 4 MiB covers every read and chunk).
MMAP_THRESHOLD = 4 * 1024 * 1024
#: Arenas per process: one, shared by the reactor and the worker threads.
ARENA_MAX = 1

#: Free memory the heap keeps at its top instead of returning it at once.
TRIM_THRESHOLD = 16 * 1024 * 1024

_done = False
_malloc_trim = None


def tune_allocator():
    """Set glibc's malloc thresholds for large buffers; True if applied."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return False
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    mallopt(_M_ARENA_MAX, ARENA_MAX)
    global _malloc_trim
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        _malloc_trim = trim
    _done = True
    return True


def release_memory():
    """Return free heap memory to the system (after a large transfer).
    Does nothing unless :func:`tune_allocator` changed the thresholds."""
    if _malloc_trim is not None:
        _malloc_trim(0)


#: Seconds without a large upload ending before memory is released: a
#: client pushing in chunks (a PATCH every few ms) would otherwise have the
#: heap given back and faulted in again for every chunk.
RELEASE_DELAY = 2.0
_pending_release = None


def release_memory_later(reactor=None):
    """:func:`release_memory` once no large upload has ended for a while."""
    global _pending_release
    if _malloc_trim is None:
        return
    if _pending_release is not None and _pending_release.active():
        _pending_release.reset(RELEASE_DELAY)
        return
    if reactor is None:
        from twisted.internet import reactor
    _pending_release = reactor.callLater(RELEASE_DELAY, release_memory)

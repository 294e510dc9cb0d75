"""Process-wide tuning for moving blobs: the C allocator.

A streaming upload reads the socket in pieces of up to 1 MiB
(``registryd.web.RequestBody.read_size``), so CPython allocates a bytes
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

Only glibc has ``mallopt``; elsewhere this does nothing.
"""

import ctypes
import ctypes.util

# mallopt parameters from <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Allocations below this come from the heap (glibc's maximum for the
#: dynamic threshold is 32 MiB; 4 MiB covers every read and chunk).
MMAP_THRESHOLD = 4 * 1024 * 1024
#: Free memory the heap keeps at its top instead of returning it at once.
TRIM_THRESHOLD = 16 * 1024 * 1024

_done = False


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
    _done = True
    return True

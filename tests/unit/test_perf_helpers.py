"""Small helpers of the fast paths: allocator tuning, tag filtering."""

import sys

import pytest
from twisted.internet.task import Clock

from registryd.names import is_valid_tag, valid_tags
from registryd.runtime import tuning


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_allocator_tuning_and_delayed_release(monkeypatch):
    assert tuning.tune_allocator() is True
    assert tuning.tune_allocator() is True  # once is enough
    tuning.release_memory()  # returns memory; must not fail
    released = []
    monkeypatch.setattr(tuning, "release_memory", lambda: released.append(True))
    monkeypatch.setattr(tuning, "_pending_release", None)
    clock = Clock()
    tuning.release_memory_later(clock)
    clock.advance(tuning.RELEASE_DELAY - 0.5)
    tuning.release_memory_later(clock)  # another upload ended: wait again
    clock.advance(1.0)
    assert released == []
    clock.advance(tuning.RELEASE_DELAY)
    assert released == [True]


ARENAS_AFTER_THREADS = r"""
import ctypes, sys, threading
from registryd.runtime import tuning
if sys.argv[1] == "tuned":
    assert tuning.tune_allocator()
start = threading.Barrier(8)
def churn():
    start.wait()
    for _ in range(200):
        pieces = [bytearray(1024 * 1024) for _ in range(4)]
        del pieces
threads = [threading.Thread(target=churn) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.open_memstream.restype = ctypes.c_void_p
libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
text, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(text), ctypes.byref(size))
libc.malloc_info(0, stream)
libc.fclose(stream)
print(text.value.decode().count("<heap nr="))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_threads_freeing_buffers_share_a_bounded_number_of_arenas():
    """Each arena keeps its freed space: without the cap, eight threads
    churning 1 MiB buffers get arenas of their own (a process after a
    docker push of three layers at a time kept ~100 MiB)."""
    import subprocess

    def arenas(mode):
        done = subprocess.run(
            [sys.executable, "-c", ARENAS_AFTER_THREADS, mode],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return int(done.stdout)

    assert arenas("tuned") <= tuning.ARENA_MAX
    assert arenas("default") > tuning.ARENA_MAX


def test_valid_tags_agrees_with_is_valid_tag():
    names = sorted(
        [f"v{i}" for i in range(50)]
        + ["latest", "bad tag", ".hidden", "-dash", "_ok", "a" * 128, "b" * 129, "", "x/y", "é"]
    )
    assert valid_tags(names) == [name for name in names if is_valid_tag(name)]
    assert valid_tags([]) == []


def test_valid_tags_with_line_breaks_in_names():
    # A file name may hold a line break; it must not split into valid tags.
    names = ["good", "evil\nlatest", "ok\n"]
    assert valid_tags(names) == ["good"]

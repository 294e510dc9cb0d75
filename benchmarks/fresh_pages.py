"""What writing into fresh page-cache pages costs on this machine, with no
registry at all.

Why this exists: registryd's push rates (chunked ones most) moved between
about 400 and 760 MiB/s from run to run, with user CPU steady and the
kernel's time moving (``perf``: the extra time is in
``copy_folio_from_iter_atomic``, the copy of ``write``'s bytes into the page
cache).  This script shows the same swing in a plain ``write`` loop: on a
virtual machine whose free memory goes back to the host (free page
reporting, DAMON), the first touch of such a page costs a trip to the host,
so a push whose blob needs pages nobody freed just before runs several
times slower than one that reuses pages a deleted file left.  Every server
pays it alike; ``compare.py`` rotates the servers' order so none is always
the one that gets the cheap pages.

Usage: ``python benchmarks/fresh_pages.py [--size 256M] [--runs 8]
[--directory DIR]``.  Each run writes and ``fsync``\\ s a file of ``--size``
in 1 MiB writes, first deleting each file after its run (its pages come
back for the next: the cheap case), then keeping them all (every run needs
new pages: the costly case), and prints MiB/s and system CPU per MiB.
"""

import argparse
import os
import resource
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.compare import MIB, parse_size  # noqa: E402


def write_file(path, size, block):
    """Write and ``fsync`` ``size`` bytes at ``path``; return (seconds,
    system CPU seconds) of this process."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    started = time.perf_counter()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    view = memoryview(block)  # slices without copying: the copy measured is the kernel's
    try:
        written = 0
        while written < size:
            written += os.write(descriptor, view[: size - written])
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    elapsed = time.perf_counter() - started
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_stime - before


def page_reporting():
    """The kernel's free page reporting setting, if any (why fresh pages
    cost more on this kind of machine)."""
    try:
        with open("/proc/cmdline") as file:
            words = file.read().split()
    except OSError:
        return None
    return next((word for word in words if "page_reporting" in word), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=256 * MIB)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--directory", default=None, help="where the files go (a temp dir)")
    args = parser.parse_args()
    block = os.urandom(MIB)
    size_mib = args.size / MIB
    print(f"# {os.cpu_count()} CPUs, {page_reporting() or 'no page_reporting on the command line'}")
    with tempfile.TemporaryDirectory(dir=args.directory, prefix="fresh-pages-") as directory:
        for label, keep in [
            ("pages reused (file deleted after each run)", False),
            ("fresh pages (files kept)", True),
        ]:
            print(label)
            for run in range(args.runs):
                path = os.path.join(directory, f"{int(keep)}-{run}")
                elapsed, system = write_file(path, args.size, block)
                print(
                    f"  run {run}: {size_mib / elapsed:6.0f} MiB/s, "
                    f"system CPU {1000 * system / size_mib:.2f} ms per MiB",
                    flush=True,
                )
                if not keep:
                    os.unlink(path)


if __name__ == "__main__":
    main()

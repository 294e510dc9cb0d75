#!/usr/bin/env python3
"""The fastest a push can go on this machine, beside registryd and Distribution 3, in one run.

    python benchmarks/push_floor.py                      # 256 MiB, 3 rounds
    python benchmarks/push_floor.py --distribution3 /work/dist3/registry
    python benchmarks/push_floor.py --size 64M --runs 5

Issue 15 asks pushes at 80% of the one-core sha256 rate.  Whether that is
reachable is a property of the machine, not only of the server: a push has
to take its bytes out of the socket, hash them, write them to a file and
``fsync`` it, while the client sends them on the same cores.  This
benchmark measures what a receiver that does only that reaches, with no
HTTP, no framework and no checks, stage by stage:

``recv``
    ``recv_into`` a 1 MiB buffer until the blob has arrived: the socket's
    copy alone.
``recv+sha256``
    each piece also hashed, in the same thread.
``recv+write``
    each piece written to a new file (``fsync``ed and renamed at the end),
    not hashed: what the disk and the page cache cost.
``recv+sha256+write``
    each piece hashed and written to a new file, ``fsync``ed and renamed at the
    end (what a durable push must do), in one thread.
``pipelined``
    the same work in three threads (receive, hash, write), pieces handed
    over through bounded queues and their buffers reused: the best a
    Python server can do with the two cores, hashlib and ``os.write``
    releasing the GIL.

Each receiver runs in its own process (``--receive``, started by this
script) and reports its CPU time; the sender is this process, sending the
blob from a file with ``sendfile`` exactly as ``compare.py``'s push client
does, so the registries' rows (a monolithic ``POST`` + ``PUT ?digest=``,
registryd with ``--workers auto``) compare with the floors directly.
Rounds rotate the order.  The table gives MiB/s, the share of the
one-core sha256 rate measured in the same run, and CPU milliseconds per MiB
of the receiver (all its threads) or the server (all its processes).
"""

import argparse
import hashlib
import os
import queue
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.compare import (  # noqa: E402
    MIB,
    Blob,
    Distribution3,
    Registryd,
    find_distribution3,
    make_blob,
    parse_size,
    push_monolithic,
    rotated,
    sha256_rate,
)
from registryd.storage.drivers.filesystem import WRITEBACK_EVERY  # noqa: E402
from registryd.storage.drivers.nowait import start_writeback  # noqa: E402

RECEIVERS = ("recv", "recv+sha256", "recv+write", "recv+sha256+write", "pipelined")

#: Bytes asked of each ``recv_into``, as registryd's uploads read.
PIECE = MIB


# ------------------------------------------------------------- receivers


def receive_pieces(connection, size, take):
    """Read ``size`` bytes from ``connection`` into reused 1 MiB buffers,
    calling ``take(view)`` with each filled piece; ``take`` returns the
    buffer to read into next (so a pipeline can hand buffers around)."""
    buffer = bytearray(PIECE)
    left = size
    while left:
        view = memoryview(buffer)
        filled = 0
        while filled < PIECE and left:
            n = connection.recv_into(view[filled:], min(PIECE - filled, left))
            if n == 0:
                raise SystemExit("sender closed early")
            filled += n
            left -= n
        buffer = take(view[:filled], buffer)


def durable_file(directory):
    """A new file to write the blob into: ``write(view)`` and ``finish()``
    (``fsync`` then rename into place, as a committed blob is).  Like
    registryd's filesystem driver, writing starts the disk's writeback
    every few MiB (``sync_file_range``), so the ``fsync`` waits for the
    last few MiB, not the whole blob: the floor gets every trick the
    server has."""
    path = os.path.join(directory, f"blob-{os.getpid()}.partial")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    offsets = [0, 0]  # written, writeback started up to

    def write(view):
        written = 0
        while written < len(view):
            written += os.write(fd, view[written:])
        offsets[0] += written
        if offsets[0] - offsets[1] >= WRITEBACK_EVERY:
            start_writeback(fd, offsets[1], offsets[0] - offsets[1])
            offsets[1] = offsets[0]

    def finish():
        os.fsync(fd)
        os.close(fd)
        os.replace(path, path[: -len(".partial")])

    return write, finish


def serve_one(mode, listener, size, directory):
    """Accept one connection, receive ``size`` bytes the way ``mode`` says,
    answer with the hex digest (or ``-``): the sender's clock stops there."""
    connection, _ = listener.accept()
    hasher = hashlib.sha256()
    if mode == "recv":
        receive_pieces(connection, size, lambda view, buffer: buffer)
    elif mode == "recv+sha256":

        def take(view, buffer):
            hasher.update(view)
            return buffer

        receive_pieces(connection, size, take)
    elif mode == "recv+write":
        write, finish = durable_file(directory)

        def take(view, buffer):
            write(view)
            return buffer

        receive_pieces(connection, size, take)
        finish()
    elif mode == "recv+sha256+write":
        write, finish = durable_file(directory)

        def take(view, buffer):
            hasher.update(view)
            write(view)
            return buffer

        receive_pieces(connection, size, take)
        finish()
    else:
        pipelined(connection, size, hasher, directory)
    digest = hasher.hexdigest() if "sha256" in mode or mode == "pipelined" else "-"
    connection.sendall(digest.encode() + b"\n")
    connection.close()


def pipelined(connection, size, hasher, directory):
    """Receive, hash and write in three threads: each piece goes to the
    hasher, then to the writer, then its buffer back to the receiver (four
    buffers in flight, so memory stays bounded)."""
    write, finish = durable_file(directory)
    free = queue.Queue()
    for _ in range(4):
        free.put(bytearray(PIECE))
    to_hash = queue.Queue()
    to_write = queue.Queue()

    def hash_pieces():
        while (item := to_hash.get()) is not None:
            hasher.update(item[0])
            to_write.put(item)
        to_write.put(None)

    def write_pieces():
        while (item := to_write.get()) is not None:
            view, buffer = item
            write(view)
            free.put(buffer)

    threads = [threading.Thread(target=hash_pieces), threading.Thread(target=write_pieces)]
    for thread in threads:
        thread.start()

    def take(view, buffer):
        to_hash.put((view, buffer))
        return free.get()

    receive_pieces(connection, size, take)
    to_hash.put(None)
    for thread in threads:
        thread.join()
    finish()


def receiver_main(mode, size, directory):
    """``--receive``: listen on a free loopback port, print it, serve
    ``--rounds`` connections, then print this process's CPU seconds per
    round (all threads) on one line."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        before = resource.getrusage(resource.RUSAGE_SELF)
        serve_one(mode, listener, size, directory)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"{cpu:.6f}", flush=True)


class Receiver:
    """A ``--receive`` process of one mode, driven over its stdin/stdout."""

    def __init__(self, mode, size, directory):
        self.name = mode
        self.size = size
        self.process = subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--receive",
                mode,
                "--size",
                str(size),
                "--workdir",
                directory,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.process.stdout.readline())

    def push(self, blob):
        """Send the blob once; returns (seconds, receiver CPU seconds)."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", self.port)) as sock, open(blob.path, "rb") as f:
            sent = 0
            while sent < blob.size:
                sent += os.sendfile(sock.fileno(), f.fileno(), sent, blob.size - sent)
            answer = sock.makefile("rb").readline().strip().decode()
        seconds = time.perf_counter() - started
        if answer not in ("-", blob.digest.split(":", 1)[1]):
            raise SystemExit(f"{self.name}: wrong digest {answer}")
        cpu = float(self.process.stdout.readline())
        return seconds, cpu

    def stop(self):
        self.process.stdin.close()
        self.process.wait(30)


class RegistryPusher:
    """A registry server pushed to like compare.py's monolithic push."""

    def __init__(self, server):
        self.server = server
        self.name = server.name
        self.rounds = 0

    def push(self, blob):
        before = self.server.sampler.cpu_seconds()
        started = time.perf_counter()
        push_monolithic(self.server.port, f"floor/push{self.rounds}", blob)
        seconds = time.perf_counter() - started
        self.rounds += 1
        return seconds, self.server.sampler.cpu_seconds() - before

    def stop(self):
        self.server.stop()


# ---------------------------------------------------------------- driver


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256M", help="blob size (256M)")
    parser.add_argument("--runs", type=int, default=3, help="rounds, order rotated (median)")
    parser.add_argument("--workdir", default=None, help="where files go (a fresh temp dir)")
    parser.add_argument(
        "--registryd-args",
        default="--workers auto",
        help="twistd registryd arguments (default: '--workers auto')",
    )
    parser.add_argument(
        "--distribution3", default=None, metavar="PATH", help="a Distribution 3 binary"
    )
    parser.add_argument("--receive", choices=RECEIVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receiver_main(args.receive, int(args.size), args.workdir)
        return
    size = parse_size(args.size)
    workdir = tempfile.mkdtemp(prefix="registryd-floor-", dir=args.workdir)
    contenders = []
    try:
        print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; data in {workdir}")
        blob = Blob(os.path.join(workdir, "blob"), None, size)
        blob.digest = make_blob(blob.path, size)
        floors = os.path.join(workdir, "floors")
        os.makedirs(floors)
        contenders = [Receiver(mode, size, floors) for mode in RECEIVERS]
        registryd = Registryd("registryd", workdir, args.registryd_args.split())
        registryd.start()
        contenders.append(RegistryPusher(registryd))
        distribution3 = find_distribution3(args.distribution3)
        if distribution3 is not None:
            server = Distribution3("distribution3", workdir, distribution3)
            server.start()
            contenders.append(RegistryPusher(server))
        else:
            print("# Distribution 3 left out: pass --distribution3 PATH or set DISTRIBUTION3")
        rate, hash_cpu = sha256_rate()
        results = {c.name: [] for c in contenders}
        for run in range(args.runs):
            for contender in rotated(contenders, run):
                results[contender.name].append(contender.push(blob))
                for leftover in os.listdir(floors):
                    os.remove(os.path.join(floors, leftover))
        size_mib = size / MIB
        print(
            f"\n{size_mib:.0f} MiB, median of {args.runs}; sha256 on one core {rate:.0f} MiB/s "
            f"({hash_cpu:.2f} ms CPU per MiB); load now {os.getloadavg()[0]:.2f}\n"
        )
        print("| receiver | MiB/s | share of one-core sha256 | CPU per MiB |")
        print("|---|---|---|---|")
        for contender in contenders:
            seconds = statistics.median(s for s, _ in results[contender.name])
            cpu = statistics.median(c for _, c in results[contender.name])
            mib_s = size_mib / seconds
            print(
                f"| {contender.name} | {mib_s:.0f} | {100 * mib_s / rate:.0f}% "
                f"| {1000 * cpu / size_mib:.2f} ms |"
            )
    finally:
        for contender in contenders:
            contender.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

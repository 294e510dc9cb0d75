#!/usr/bin/env python3
"""Server CPU per image push as ``docker push`` sends it, without dockerd.

    python benchmarks/paced_push.py --distribution3 /work/dist3/registry
    python benchmarks/paced_push.py --tree /work/main --rounds 7
    python benchmarks/paced_push.py --rate 0 --registryd-args ''   # unpaced, one process

``docker push``, podman and skopeo gzip a layer while they send it, in
chunked ``PATCH``es of one 32 KiB chunk per ``write``, three layers at a
time; the server's CPU per push then depends on how many socket reads,
thread hand-offs and wake-ups the trickle costs it, and that CPU competes
with the client's gzip on the same cores.  ``compare.py --only images``
measures it with the real clients, but their gzip and the neighbours move
each round's figure by ±30%.  Here the client is a few Python threads that
send an image of ``--layers`` random layers exactly in that shape (POST,
one chunked PATCH of 32 KiB chunks paced at ``--rate`` MB/s per layer,
PUT with the digest; three layers at once) and spend almost no CPU, so
the server CPU per push (all its processes, psutil) is steady from round
to round.  Each server first gets an unpaced push it is not measured by
(the worker processes' start-up lands in it); then each
round pushes a new image to each server, in rotated order; the figure is
the median.
"""

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.compare import (  # noqa: E402
    MIB,
    Client,
    Distribution3,
    Registryd,
    find_distribution3,
    parse_size,
    rotated,
    target_of,
    with_query,
)

#: Bytes per chunk and per ``send``, as the Go clients write them.
CHUNK = 32 * 1024
#: Layers in flight at once, as ``docker push`` sends them.
AT_ONCE = 3


def push_layer(port, name, data, rate):
    """One layer as docker sends it: POST, a chunked PATCH written
    :data:`CHUNK` bytes at a time at ``rate`` MB/s (0: as fast as the
    socket takes them), PUT with the digest."""
    client = Client(port)
    try:
        headers, _ = client.expect(202, "POST", f"/v2/{name}/blobs/uploads/")
        headers, _ = client.expect_chunked(
            202,
            "PATCH",
            target_of(headers["location"]),
            paced(data, rate),
            {"Content-Type": "application/octet-stream"},
        )
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client.expect(201, "PUT", with_query(target_of(headers["location"]), f"digest={digest}"))
    finally:
        client.close()


def paced(data, rate):
    """``data`` in :data:`CHUNK` pieces, each given no earlier than
    ``rate`` MB/s allows (0: at once)."""
    started = time.perf_counter()
    for offset in range(0, len(data), CHUNK):
        if rate:
            delay = started + offset / (rate * 1e6) - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        yield data[offset : offset + CHUNK]


def push_image(server, name, layers, rate):
    with ThreadPoolExecutor(AT_ONCE) as pool:
        list(pool.map(lambda layer: push_layer(server.port, name, layer, rate), layers))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="pushes per server (median)")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--layer-size", default="20M")
    parser.add_argument(
        "--rate", type=float, default=10.0, help="MB/s per layer (10: docker's on 2 busy CPUs)"
    )
    parser.add_argument("--tree", default=REPO, help="registryd source tree to run")
    parser.add_argument(
        "--registryd-args",
        default="--workers auto",
        help="twistd registryd arguments ('' for a single process)",
    )
    parser.add_argument("--distribution3", metavar="PATH", help="a Distribution 3 binary")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="paced-push-")
    servers = [
        Registryd("registryd", workdir, args.registryd_args.split(), os.path.abspath(args.tree))
    ]
    distribution3 = find_distribution3(args.distribution3)
    if distribution3 is not None:
        servers.append(Distribution3("distribution3", workdir, distribution3))
    size = parse_size(args.layer_size)
    print(
        f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; registryd from {args.tree}; "
        f"{args.layers}x{size // MIB} MiB layers at {args.rate} MB/s each, {AT_ONCE} at once",
        flush=True,
    )
    cpu = {server.name: [] for server in servers}
    try:
        for server in servers:
            server.start()
            # The worker processes' start-up (about 0.15 s of imports) lands
            # in what they serve first after the main process answers /v2/,
            # and a new process's threads and caches are cold: not what a
            # push costs.
            push_image(server, "bench/warm-up", [os.urandom(size)] * AT_ONCE, 0)
        for round_ in range(args.rounds):
            layers = [os.urandom(size) for _ in range(args.layers)]
            for server in rotated(servers, round_):
                before = server.sampler.cpu_seconds()
                started = time.perf_counter()
                push_image(server, f"bench/paced{round_}", layers, args.rate)
                wall = time.perf_counter() - started
                cpu[server.name].append(server.sampler.cpu_seconds() - before)
                print(
                    f"  round {round_ + 1}: {server.name} {wall:.2f} s, "
                    f"server CPU {cpu[server.name][-1]:.3f} s",
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
    for name, seconds in cpu.items():
        print(
            f"{name}: server CPU per push, median {statistics.median(seconds):.3f} s "
            f"(min {min(seconds):.3f}, max {max(seconds):.3f})"
        )


if __name__ == "__main__":
    main()

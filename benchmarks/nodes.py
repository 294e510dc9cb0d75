#!/usr/bin/env python3
"""Throughput of 1, 2 and 3 registryd nodes on one S3 bucket and one Redis,
as a fleet behind a load balancer, on this machine.

    python benchmarks/nodes.py            # 32 MiB blobs, 10 s of wrk, 3 nodes at most
    python benchmarks/nodes.py --quick    # 16 MiB blobs, 5 s of wrk

Swift (s3api, ``tests/s3/swift.py``) and ``redis-server``
(``tests/redis_server.py``) are started on loopback in a temporary
directory and stopped at the end.  For each fleet size N, N ``twistd
registryd`` processes serve one fresh prefix of the bucket with the
``redis`` section on the one Redis (log level warn, no access log), and
the client spreads its work round-robin over them (a client-side load
balancer: a Python proxy in between would be the bottleneck):

* push: 6 concurrent pushers, each pushing fresh blobs with ``POST`` and
  one ``PUT ?digest=``, pusher i to node i mod N; MiB/s over all;
* manifest GET: ``wrk`` with 64 connections in all, one wrk per node
  with its share of them, requests/s summed;
* blob pull: 6 concurrent whole-blob ``GET``s, reader i from node i mod N.

After each workload the CPU seconds spent by every process (each node,
Swift's servers, redis-server, the client and wrk) are shown: on a small
machine the nodes, Swift, Redis and the client share the same cores, and
the sums say which of them bounds the figure.  Needs ``wrk``, psutil,
``redis-server`` and what ``swift-s3.sh`` installs.
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.compare import process_cpu_seconds, wrk  # noqa: E402
from benchmarks.s3_throughput import Blob, pull, push_monolithic, push_small_image  # noqa: E402
from tests.e2e import tools  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.s3.swift import SwiftS3  # noqa: E402

MIB = 1024 * 1024
#: concurrent pushers and pullers, whatever the number of nodes
CLIENTS = 6
#: wrk's connections, spread over the nodes
CONNECTIONS = 64


class Node(tools.S3Registryd):
    """A fleet node: the bucket prefix, the one Redis, quiet logs."""

    def __init__(self, storage, redis_addr, **kwargs):
        super().__init__(storage, log_level="warn", **kwargs)
        self.redis_addr = redis_addr

    def config(self):
        document = super().config()
        document["log"]["accesslog"] = {"disabled": True}
        document["redis"] = {"addr": self.redis_addr}
        return document


class CPUMeter:
    """CPU seconds of named process groups between two readings, and of
    the client: this process's own threads and the children it reaped
    meanwhile (the wrk runs; the nodes are reaped only after a reading)."""

    def __init__(self, groups, client):
        self.groups = groups  # name -> callable returning [psutil.Process]
        self.client = client

    def reading(self):
        times = self.client.cpu_times()
        found = {"client+wrk": sum(times[:4])}
        for name, processes in self.groups.items():
            total = 0.0
            for process in processes():
                total += sum(process_cpu_seconds(process).values())
            found[name] = total
        return found

    @staticmethod
    def spent(before, after):
        return {name: after[name] - before.get(name, 0.0) for name in after}


def swift_processes(swift):
    """Swift's server processes (their pids are under the state directory)."""
    found = []
    for pid_file in sorted((swift.state / "run").glob("*.pid")):
        try:
            found.append(psutil.Process(int(pid_file.read_text().strip())))
        except (ValueError, psutil.Error):
            continue
    return found


def spread(count, nodes, work):
    """``count`` threads, thread i running ``work(i, nodes[i % len(nodes)])``;
    the wall-clock seconds until all are done (the first error re-raised)."""
    errors = []

    def run(index):
        try:
            work(index, nodes[index % len(nodes)])
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def wrk_spread(nodes, target, seconds):
    """wrk on every node at once, CONNECTIONS in all: summed requests/s
    and the worst p99 (ms); any failure stops the run."""
    results = [None] * len(nodes)

    def run(index, node):
        results[index] = wrk(f"{node.url}{target}", seconds, CONNECTIONS // len(nodes))

    spread(len(nodes), nodes, run)
    failures = sum(result[2] for result in results)
    if failures:
        raise RuntimeError(f"wrk: {failures} failed requests on {target}")
    return sum(result[0] for result in results), max(result[1] for result in results)


def measure(fleet, base, size, seconds, counter):
    """The three workloads on one fleet: {workload: figure}."""
    figures = {}

    def fresh_blob():
        counter[0] += 1
        return Blob(base, size, counter[0].to_bytes(16, "big"))

    blobs = [[fresh_blob() for _ in range(2)] for _ in range(CLIENTS)]
    elapsed = spread(
        CLIENTS,
        fleet,
        lambda index, node: [push_monolithic(node.url, "bench/app", b) for b in blobs[index]],
    )
    figures["push"] = sum(b.length for row in blobs for b in row) / MIB / elapsed

    push_small_image(fleet[0].url, "bench/small", "latest", blobs=3, size=64 * 1024)
    figures["manifest GET"] = wrk_spread(fleet, "/v2/bench/small/manifests/latest", seconds)

    elapsed = spread(
        CLIENTS,
        fleet,
        lambda index, node: pull(node.url, "bench/app", blobs[index][0].digest, size + 16),
    )
    figures["blob pull"] = CLIENTS * (size + 16) / MIB / elapsed
    return figures


def run(args):
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install wrk)")
    redis_executable = shutil.which("redis-server") or shutil.which(
        "redis-server", path="/usr/sbin:/usr/local/sbin"
    )
    if redis_executable is None:
        raise SystemExit("needs redis-server (apt-get install redis-server)")
    work = Path(tempfile.mkdtemp(prefix="nodesbench-"))
    swift = SwiftS3(work / "swift")
    problem = swift.start()
    if problem:
        raise SystemExit(f"Swift did not start:\n{problem}")
    redis = RedisServer(redis_executable, work)
    fleet = []
    try:
        swift.make_bucket()
        redis.start()
        base = work / "blob.bin"
        with open(base, "wb") as file:
            for index in range(args.size // MIB):
                file.write(index.to_bytes(8, "big") + os.urandom(MIB - 8))
        size = (args.size // MIB) * MIB
        counter = [0]
        me = psutil.Process()
        rows = []
        for count in range(1, args.nodes + 1):
            prefix = swift.new_prefix(f"nodes{count}")
            storage = swift.parameters(prefix, chunksize=10 * MIB)
            fleet = [
                Node(storage, redis.addr, tmpdir=work / f"n{count}-{index}").start()
                for index in range(count)
            ]
            groups = {
                f"node {i + 1}": (lambda n=n: [psutil.Process(n.pid)]) for i, n in enumerate(fleet)
            }
            groups["swift"] = lambda: swift_processes(swift)
            groups["redis"] = lambda: [psutil.Process(redis.process.pid)]
            meter = CPUMeter(groups, me)
            before = meter.reading()
            started = time.monotonic()
            figures = measure(fleet, base, size, args.seconds, counter)
            wall = time.monotonic() - started
            cpu = CPUMeter.spent(before, meter.reading())
            rows.append((count, figures, cpu, wall, os.getloadavg()[0]))
            print(f"{count} node(s): {figures}; CPU s {cpu} in {wall:.0f} s", flush=True)
            for node in fleet:
                node.stop()
            fleet = []
            swift.purge(prefix)
        report(rows, size, args)
    finally:
        for node in fleet:
            node.stop()
        redis.stop()
        swift.stop()
        tools._remove_tree(str(work))


def report(rows, size, args):
    print()
    print(
        f"{os.cpu_count()} CPUs; Swift s3api and redis-server on loopback; {CLIENTS} pushers and"
        f" pullers of {size // MIB} MiB blobs, wrk {CONNECTIONS} connections for"
        f" {args.seconds} s, spread round-robin over the nodes; load average"
        f" {', '.join(f'{row[4]:.1f}' for row in rows)} after each fleet's run"
    )
    print()
    print(
        "| nodes | push MiB/s (per node) | manifest GET req/s (per node) | p99 ms "
        "| blob pull MiB/s (per node) | CPU s: nodes / Swift / Redis / client+wrk of available |"
    )
    print("|---|---|---|---|---|---|")
    for count, figures, cpu, wall, _ in rows:
        rate, p99 = figures["manifest GET"]
        nodes_cpu = sum(value for name, value in cpu.items() if name.startswith("node "))
        print(
            f"| {count} | {figures['push']:.0f} ({figures['push'] / count:.0f})"
            f" | {rate:.0f} ({rate / count:.0f}) | {p99:.0f}"
            f" | {figures['blob pull']:.0f} ({figures['blob pull'] / count:.0f})"
            f" | {nodes_cpu:.0f} / {cpu['swift']:.0f} / {cpu['redis']:.1f} / {cpu['client+wrk']:.0f}"
            f" of {wall * os.cpu_count():.0f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32, help="blob size in MiB (default 32)")
    parser.add_argument("--seconds", type=int, default=10, help="wrk's duration (default 10)")
    parser.add_argument("--nodes", type=int, default=3, help="largest fleet (default 3)")
    parser.add_argument("--quick", action="store_true", help="16 MiB blobs, 5 s of wrk")
    args = parser.parse_args()
    if args.quick:
        args.size, args.seconds = 16, 5
    args.size *= MIB
    run(args)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Push and pull throughput on S3: registryd's s3 driver and Debian's
docker-registry (CNCF Distribution 2.8) s3 driver, side by side, on the
same OpenStack Swift (s3api) on loopback; with ``--distribution3`` also
CNCF Distribution 3's.

    python benchmarks/s3_throughput.py             # 256 MiB blobs, 3 rounds
    python benchmarks/s3_throughput.py --quick     # 64 MiB blobs, 2 rounds
    python benchmarks/s3_throughput.py --size 16M --rounds 1 \
        --distribution3 /work/dist3/registry       # Distribution 3 too

Swift is started with the project's ``swift-s3.sh`` (tests/s3/swift.py)
into a temporary directory on free ports and stopped at the end.  Both
registries get the same storage section (bucket, region, endpoint, path
style, 10 MiB parts, each under its own rootdirectory), deletes enabled,
redirects off (so both serve the bytes themselves) and log level warn.
Every workload runs against one registry and then the other, round after
round, so a noisy neighbour hits both alike; the table gives the median
per workload and the ratio registryd / docker-registry.

Workloads:

* push: ``POST`` then one ``PUT ?digest=`` with the whole blob as body;
  and chunked: ``POST``, ``PATCH`` 16 MiB ``Content-Range`` chunks,
  ``PUT ?digest=``.  Bodies are streamed from a file.
* pull: one ``GET`` of the whole blob; and 4 concurrent ``GET``s.
* small image: 10 blobs of 256 KiB and a manifest (per-request overhead,
  where S3 round trips dominate).
* small blob: ``POST`` + ``PUT ?digest=`` of 3 KiB, and a two-blob image
  (config, layer, manifest, tag), in S3 requests, the figure that
  tests/s3/test_s3_push_requests.py keeps registryd's within.
* S3 requests per push of each workload, counted in Swift's proxy access
  log (every request a registry sends, retries and parts included; the
  registries take turns, so each window holds one registry's requests).
* peak RSS of the registry process over the run (bounded memory while
  streaming blobs of any size through multipart uploads).

Needs ``docker-registry`` (apt-get install docker-registry), psutil, and
what ``swift-s3.sh`` installs.
"""

import argparse
import hashlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e import tools  # noqa: E402
from tests.s3.swift import SwiftS3  # noqa: E402

MIB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# ------------------------------------------------------------------ servers


def storage_section(swift, prefix):
    return swift.parameters(prefix, chunksize=10 * MIB)


class S3Distribution(tools.DistributionRegistry):
    name = "distribution-s3"

    def __init__(self, storage, **kwargs):
        super().__init__(**kwargs)
        self.storage = storage

    def config(self):
        return {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}"},
            "storage": {
                "s3": dict(self.storage, v4auth=True),
                "delete": {"enabled": True},
                "redirect": {"disable": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
        }

    def environment(self):
        # aws-sdk-go v1 refuses to start with AWS_CA_BUNDLE set (it cannot
        # apply it to Distribution's HTTP transport); credentials come from
        # the configuration.
        return tools._clean_env(("REGISTRY_", "OTEL_", "AWS_"))


class S3Distribution3(S3Distribution):
    """CNCF Distribution 3 (``registry serve CONFIG``): the same
    configuration as Distribution 2.8's."""

    name = "distribution3-s3"

    def __init__(self, storage, executable, **kwargs):
        super().__init__(storage, **kwargs)
        self.executable = executable


class SwiftRequests:
    """The S3 requests Swift's proxy served, from its access log.

    s3api's requests arrive as ``/<bucket>...`` from a client address
    (the proxy's own Swift subrequests are ``/v1/...`` from ``-``).  A
    line is written once the response is done, which may be just after
    the registry has it: :meth:`settled` waits until the count stops
    changing.
    """

    def __init__(self, log_path, bucket):
        self.log_path = Path(log_path)
        self.marker = f" /{bucket}"

    def count(self):
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(
            1
            for line in text.splitlines()
            if line.startswith("proxy-server: 127.0.0.1 ") and self.marker in line
        )

    def settled(self, quiet=0.3, longest=10.0):
        """The count, once it held still for ``quiet`` seconds."""
        deadline = time.monotonic() + longest
        last = self.count()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.count()
            if now == last:
                return now
            last = now
        return last


class PeakRSS:
    """Samples a process tree's resident memory in a thread."""

    def __init__(self, pid):
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.wait(0.05):
            try:
                processes = [self.process] + self.process.children(recursive=True)
                rss = sum(p.memory_info().rss for p in processes)
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, rss)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


# ------------------------------------------------------------------ client


def connection(url):
    host, port = url.split("//", 1)[1].split(":")
    return http.client.HTTPConnection(host, int(port), timeout=600, blocksize=MIB)


def request(url, method, target, body=None, headers=None):
    conn = connection(url)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, response, data
    finally:
        conn.close()


def expect(status, wanted, what, data=b""):
    if status != wanted:
        raise RuntimeError(f"{what}: HTTP {status}, wanted {wanted}: {data[:300]!r}")


def path_of(location):
    """The path and query of a Location header (absolute or not)."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Blob:
    """A blob file: ``prefix`` (16 distinct bytes per push, so no push finds
    the blob already stored) then the shared random ``path``."""

    def __init__(self, path, size, prefix):
        self.path, self.size, self.prefix = path, size, prefix
        hasher = hashlib.sha256(prefix)
        with open(path, "rb") as file:
            while chunk := file.read(MIB):
                hasher.update(chunk)
        self.digest = "sha256:" + hasher.hexdigest()
        self.length = len(prefix) + size

    def pieces(self, start=0, end=None):
        """The bytes from ``start`` to ``end``, in 1 MiB pieces."""
        end = self.length if end is None else end
        whole = len(self.prefix)
        if start < whole:
            yield self.prefix[start : min(end, whole)]
            start = whole
        with open(self.path, "rb") as file:
            file.seek(start - whole)
            remaining = end - start
            while remaining > 0:
                chunk = file.read(min(MIB, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk


def push_monolithic(url, name, blob):
    status, response, data = request(
        url, "POST", f"/v2/{name}/blobs/uploads/", b"", {"Content-Length": "0"}
    )
    expect(status, 202, "POST", data)
    target = path_of(response.getheader("Location"))
    separator = "&" if "?" in target else "?"
    status, _, data = request(
        url,
        "PUT",
        f"{target}{separator}digest={blob.digest}",
        blob.pieces(),
        {"Content-Length": str(blob.length), "Content-Type": "application/octet-stream"},
    )
    expect(status, 201, "PUT", data)


def push_chunked(url, name, blob, chunk=16 * MIB):
    status, response, data = request(
        url, "POST", f"/v2/{name}/blobs/uploads/", b"", {"Content-Length": "0"}
    )
    expect(status, 202, "POST", data)
    target = path_of(response.getheader("Location"))
    offset = 0
    while offset < blob.length:
        end = min(offset + chunk, blob.length)
        status, response, data = request(
            url,
            "PATCH",
            target,
            blob.pieces(offset, end),
            {
                "Content-Length": str(end - offset),
                "Content-Range": f"{offset}-{end - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        expect(status, 202, "PATCH", data)
        target = path_of(response.getheader("Location"))
        offset = end
    separator = "&" if "?" in target else "?"
    status, _, data = request(
        url, "PUT", f"{target}{separator}digest={blob.digest}", b"", {"Content-Length": "0"}
    )
    expect(status, 201, "PUT", data)


def pull(url, name, digest, expected):
    conn = connection(url)
    try:
        conn.request("GET", f"/v2/{name}/blobs/{digest}")
        response = conn.getresponse()
        expect(response.status, 200, "GET", b"")
        received = 0
        while chunk := response.read(MIB):
            received += len(chunk)
        if received != expected:
            raise RuntimeError(f"GET {digest}: {received} bytes, wanted {expected}")
    finally:
        conn.close()


def push_whole_blob(url, name, data, what, content_type=None):
    """Push ``data`` in one request, as clients do for small blobs: a
    monolithic ``POST ?digest=``, or a ``PUT`` to the session a registry
    without monolithic POSTs opens instead; its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, response, body = request(
        url,
        "POST",
        f"/v2/{name}/blobs/uploads/?digest={digest}",
        data,
        {"Content-Length": str(len(data))}
        | ({"Content-Type": content_type} if content_type else {}),
    )
    if status == 202:  # no monolithic POST: PUT to the session
        target = path_of(response.getheader("Location"))
        separator = "&" if "?" in target else "?"
        status, _, body = request(
            url,
            "PUT",
            f"{target}{separator}digest={digest}",
            data,
            {"Content-Length": str(len(data))},
        )
    expect(status, 201, what, body)
    return digest


def push_small_image(url, name, tag, blobs=10, size=256 * 1024):
    layers = []
    for _ in range(blobs):
        data = os.urandom(size)
        digest = push_whole_blob(url, name, data, "blob", "application/octet-stream")
        layers.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest,
                "size": len(data),
            }
        )
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    digest = push_whole_blob(url, name, config, "config")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest,
                "size": len(config),
            },
            "layers": layers,
        }
    ).encode()
    status, _, body = request(
        url,
        "PUT",
        f"/v2/{name}/manifests/{tag}",
        manifest,
        {"Content-Type": OCI_MANIFEST, "Content-Length": str(len(manifest))},
    )
    expect(status, 201, "manifest", body)


# ------------------------------------------------------------------ runs


def push_small_blob(url, name, size=3000):
    """``POST`` then ``PUT ?digest=`` with a small body."""
    blob = os.urandom(size)
    status, response, data = request(
        url, "POST", f"/v2/{name}/blobs/uploads/", b"", {"Content-Length": "0"}
    )
    expect(status, 202, "POST", data)
    target = path_of(response.getheader("Location"))
    separator = "&" if "?" in target else "?"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    status, _, data = request(
        url, "PUT", f"{target}{separator}digest={digest}", blob, {"Content-Length": str(size)}
    )
    expect(status, 201, "PUT", data)


def timed(function, *args):
    started = time.monotonic()
    function(*args)
    return time.monotonic() - started


def measured(requests, function, *args):
    """(seconds, S3 requests) of ``function(*args)``."""
    before = requests.settled()
    seconds = timed(function, *args)
    return seconds, requests.settled() - before


def run(args):
    work = Path(tempfile.mkdtemp(prefix="s3bench-"))
    swift = SwiftS3(work / "swift")
    problem = swift.start()
    if problem:
        raise SystemExit(f"Swift did not start:\n{problem}")
    servers = {}
    try:
        swift.make_bucket()
        servers["registryd"] = tools.S3Registryd(
            storage_section(swift, "bench-registryd"),
            log_level="warn",
            tmpdir=work / "registryd",
        ).start()
        servers["docker-registry"] = S3Distribution(
            storage_section(swift, "bench-distribution"), tmpdir=work / "distribution"
        ).start()
        if args.distribution3:
            servers["distribution3"] = S3Distribution3(
                storage_section(swift, "bench-distribution3"),
                args.distribution3,
                tmpdir=work / "distribution3",
            ).start()
        swift_requests = SwiftRequests(swift.state / "log" / "proxy.log", swift.make_bucket())
        memory = {label: PeakRSS(server.pid) for label, server in servers.items()}

        base = work / "blob.bin"
        random_block = bytearray(os.urandom(MIB))
        with open(base, "wb") as file:
            for index in range(args.size // MIB):
                random_block[:8] = index.to_bytes(8, "big")
                file.write(random_block)
        size = (args.size // MIB) * MIB

        results = {label: {} for label in servers}
        requests = {label: {} for label in servers}
        counter = [0]

        def fresh_blob():
            counter[0] += 1
            return Blob(base, size, counter[0].to_bytes(16, "big"))

        for round_number in range(args.rounds):
            for label, server in servers.items():
                url, name = server.url, "bench/app"
                record = results[label]
                counted = requests[label]
                blob = fresh_blob()
                seconds, sent = measured(swift_requests, push_monolithic, url, name, blob)
                record.setdefault("push (one PUT)", []).append(blob.length / MIB / seconds)
                counted.setdefault("push (one PUT)", []).append(sent)
                chunked = fresh_blob()
                seconds, sent = measured(swift_requests, push_chunked, url, name, chunked)
                record.setdefault("push (16 MiB PATCHes)", []).append(
                    chunked.length / MIB / seconds
                )
                counted.setdefault("push (16 MiB PATCHes)", []).append(sent)
                seconds = timed(pull, url, name, blob.digest, blob.length)
                record.setdefault("pull (one GET)", []).append(blob.length / MIB / seconds)

                def concurrent_pulls(url=url, name=name, blob=blob):
                    threads = [
                        threading.Thread(target=pull, args=(url, name, blob.digest, blob.length))
                        for _ in range(4)
                    ]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()

                seconds = timed(concurrent_pulls)
                record.setdefault("pull (4 concurrent GETs)", []).append(
                    4 * blob.length / MIB / seconds
                )
                seconds, sent = measured(
                    swift_requests, push_small_image, url, "bench/small", f"r{round_number}"
                )
                record.setdefault("small image push (10 x 256 KiB), s", []).append(seconds)
                counted.setdefault("small image push (10 x 256 KiB)", []).append(sent)
                seconds, sent = measured(swift_requests, push_small_blob, url, "bench/small")
                record.setdefault("small blob push (3 KB, POST + PUT), s", []).append(seconds)
                counted.setdefault("small blob push (3 KB, POST + PUT)", []).append(sent)
                seconds, sent = measured(
                    swift_requests,
                    push_small_image,
                    url,
                    "bench/two",
                    f"r{round_number}",
                    1,
                    3000,
                )
                record.setdefault("two-blob image push (3 KB layer), s", []).append(seconds)
                counted.setdefault("two-blob image push (3 KB layer)", []).append(sent)
                print(
                    f"round {round_number + 1} {label}: "
                    + ", ".join(f"{key} {values[-1]:.1f}" for key, values in record.items()),
                    flush=True,
                )

        peaks = {label: sampler.stop() for label, sampler in memory.items()}
        print()
        print(
            f"Blob size {size // MIB} MiB, {args.rounds} rounds, medians; Swift s3api on loopback;"
            f" {os.cpu_count()} CPUs"
        )
        labels = list(servers)
        ratios = [f"/{label[:6]}" for label in labels[1:]]
        print(
            f"{'workload':<46}"
            + "".join(f"{label:>18}" for label in labels)
            + "".join(f"{ratio:>10}" for ratio in ratios)
        )

        def row(name, values, form):
            ratios = [values[0] / value if value else float("nan") for value in values[1:]]
            print(
                f"{name:<46}"
                + "".join(f"{value:>18{form}}" for value in values)
                + "".join(f"{ratio:>10.2f}" for ratio in ratios)
            )

        for workload in results[labels[0]]:
            unit = "" if workload.endswith(", s") else " MiB/s"
            values = [statistics.median(results[label][workload]) for label in labels]
            row(workload + unit, values, ".1f")
        for workload in requests[labels[0]]:
            values = [statistics.median(requests[label][workload]) for label in labels]
            row(f"S3 requests: {workload}", values, ".0f")
        row("peak RSS, MiB", [peaks[label] / MIB for label in labels], ".0f")
    finally:
        for server in servers.values():
            server.stop()
        swift.stop()
        tools._remove_tree(str(work))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256M", help="blob size (default 256M)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 MiB blobs, 2 rounds")
    parser.add_argument(
        "--distribution3",
        metavar="EXECUTABLE",
        help="also CNCF Distribution 3's registry binary (e.g. /work/dist3/registry)",
    )
    args = parser.parse_args()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = args.size
    args.size = (
        int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)
    )
    if args.quick:
        args.size, args.rounds = 64 * MIB, 2
    run(args)


if __name__ == "__main__":
    main()

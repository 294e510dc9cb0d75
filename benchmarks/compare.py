#!/usr/bin/env python3
"""registryd and Debian's docker-registry, side by side, in one run.

    python benchmarks/compare.py              # the whole table (a few minutes)
    python benchmarks/compare.py --quick      # smaller blobs, shorter loads

Both servers run on 127.0.0.1, each on a fresh filesystem root, with the
same configuration keys (Debian's packaged config.yml minus auth: delete
enabled, the in-memory blob descriptor cache Distribution ships with, the
nosniff header; log level ``warn`` and no access log for both, so what is
measured is the server, not its logging).  Every workload runs against one
server and then the other before the next workload starts, so a noisy
neighbour on the machine hits both alike; the table reports each figure
and the ratio registryd / docker-registry, and checks it against the
target from the performance issue.

Workloads:

* push: ``POST`` then one ``PUT ?digest=`` carrying the whole blob
  (the spec's monolithic upload), and ``POST``, ``PATCH`` in 16 MiB
  ``Content-Range`` chunks, ``PUT ?digest=`` (chunked upload); the body is
  sent from a file with ``sendfile`` so the client costs little CPU.
* pull: one ``GET`` of the whole blob, and 8 concurrent ``GET``s, by
  ``curl`` (a Python client would itself be the limit of one stream).
* small requests: manifest ``GET`` by tag under ``wrk`` and blob ``HEAD``
  under ``hey`` (wrk cannot send HEAD), 64 connections each (requests/s
  and 99th percentile latency).
* listings: tags of a repository with 10,000 tags and the catalog of
  10,000 repositories, written directly in Distribution's on-disk layout
  (which registryd shares) and fetched completely (following ``Link``).
* peak RSS of the server (the sum over all its processes) over the run,
  including a push and pull of a 2 GiB blob (PSS too, which counts shared
  libraries once); start-up: process start to the first answered
  ``GET /v2/``.

registryd runs with ``--workers auto`` (one process per CPU, all serving
the same sockets and storage: registryd.workers) unless
``--registryd-args`` says otherwise; docker-registry uses every core by
itself.

Needs ``apt-get install docker-registry wrk hey curl`` and psutil.
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024

ACCEPT_MANIFESTS = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------- test data


def make_blob(path, size):
    """A file of C{size} bytes that compresses poorly; returns its digest.

    1 MiB of random bytes, each copy stamped with its index, so nothing in
    the path can deduplicate blocks; much faster to make than urandom."""
    base = bytearray(os.urandom(MIB))
    hasher = hashlib.sha256()
    with open(path, "wb") as file:
        written = 0
        index = 0
        while written < size:
            base[:8] = index.to_bytes(8, "big")
            block = bytes(base[: min(MIB, size - written)])
            file.write(block)
            hasher.update(block)
            written += len(block)
            index += 1
    return "sha256:" + hasher.hexdigest()


# ------------------------------------------------------------------ client


class HTTPError(Exception):
    pass


class Client:
    """A minimal HTTP/1.1 keep-alive client: request bodies go out of a
    file with ``sendfile``, response bodies are counted, not kept (unless
    small), so the client spends as little CPU as possible."""

    def __init__(self, port):
        self.port = port
        self.sock = None
        self._buffer = bytearray()
        self._scratch = bytearray(MIB)

    def _connect(self):
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer.clear()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method, target, headers=None, body=b"", file=None, offset=0, length=0,
                keep=True):
        """Send a request; returns (status, headers dict, body or byte count).

        The body is C{body} (bytes) or C{length} bytes of C{file} from
        C{offset}.  With C{keep} false a response body is only counted."""
        self._connect()
        if file is not None:
            size = length
        else:
            size = len(body)
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {size}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if file is None:
            self.sock.sendall(head + body)
        else:
            self.sock.sendall(head)
            sent = 0
            while sent < length:
                n = os.sendfile(self.sock.fileno(), file.fileno(), offset + sent, length - sent)
                if n == 0:
                    raise HTTPError("file ended early")
                sent += n
        return self._response(method, keep)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise HTTPError("connection closed")
        self._buffer += data

    def _response(self, method, keep):
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        end = self._buffer.index(b"\r\n\r\n")
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304):
            return status, headers, b"" if keep else 0
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
            return status, headers, body if keep else len(body)
        length = int(headers.get("content-length", "0"))
        if keep:
            while len(self._buffer) < length:
                self._fill()
            body = bytes(self._buffer[:length])
            del self._buffer[:length]
            return status, headers, body
        # Count a large body without keeping it.
        taken = min(len(self._buffer), length)
        del self._buffer[:taken]
        view = memoryview(self._scratch)
        while taken < length:
            n = self.sock.recv_into(view, min(MIB, length - taken))
            if n == 0:
                raise HTTPError("connection closed mid-body")
            taken += n
        return status, headers, taken

    def _read_chunked(self):
        body = bytearray()
        while True:
            while b"\r\n" not in self._buffer:
                self._fill()
            end = self._buffer.index(b"\r\n")
            size = int(bytes(self._buffer[:end]).split(b";")[0], 16)
            del self._buffer[: end + 2]
            while len(self._buffer) < size + 2:
                self._fill()
            body += self._buffer[:size]
            del self._buffer[: size + 2]
            if size == 0:
                return bytes(body)

    def expect(self, status, *args, **kwargs):
        got, headers, body = self.request(*args, **kwargs)
        if got != status:
            raise HTTPError(f"{args[0]} {args[1]}: expected {status}, got {got}: {body!r:.300}")
        return headers, body


def target_of(location):
    """The path and query of a Location header (absolute or not)."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(target, query):
    return target + ("&" if "?" in target else "?") + query


def push_monolithic(port, name, blob):
    client = Client(port)
    try:
        headers, _ = client.expect(202, "POST", f"/v2/{name}/blobs/uploads/")
        with open(blob.path, "rb") as file:
            client.expect(
                201, "PUT", with_query(target_of(headers["location"]), f"digest={blob.digest}"),
                {"Content-Type": "application/octet-stream"}, file=file, length=blob.size,
            )
    finally:
        client.close()


def push_chunked(port, name, blob, chunk=16 * MIB):
    client = Client(port)
    try:
        headers, _ = client.expect(202, "POST", f"/v2/{name}/blobs/uploads/")
        location = target_of(headers["location"])
        with open(blob.path, "rb") as file:
            offset = 0
            while offset < blob.size:
                length = min(chunk, blob.size - offset)
                headers, _ = client.expect(
                    202, "PATCH", location,
                    {"Content-Type": "application/octet-stream",
                     "Content-Range": f"{offset}-{offset + length - 1}"},
                    file=file, offset=offset, length=length,
                )
                location = target_of(headers["location"])
                offset += length
        client.expect(201, "PUT", with_query(location, f"digest={blob.digest}"))
    finally:
        client.close()


def pull(port, name, blob):
    client = Client(port)
    try:
        status, _, count = client.request("GET", f"/v2/{name}/blobs/{blob.digest}", keep=False)
        if status != 200 or count != blob.size:
            raise HTTPError(f"pull: status {status}, {count} of {blob.size} bytes")
    finally:
        client.close()


def pull_verified(port, name, blob):
    """A pull that checks the bytes too (once per server, untimed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request("GET", f"/v2/{name}/blobs/{blob.digest}")
    response = connection.getresponse()
    hasher = hashlib.sha256()
    while True:
        data = response.read(MIB)
        if not data:
            break
        hasher.update(data)
    connection.close()
    if "sha256:" + hasher.hexdigest() != blob.digest:
        raise HTTPError(f"pulled blob does not match {blob.digest}")


def push_manifest(port, name, tag, config_blob, layer):
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": config_blob.size, "digest": config_blob.digest,
        },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": layer.size, "digest": layer.digest,
        }],
    }, indent=3).encode()
    client = Client(port)
    try:
        client.expect(
            201, "PUT", f"/v2/{name}/manifests/{tag}",
            {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}, body=manifest,
        )
    finally:
        client.close()
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def push_small_blob(port, name, content):
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    client = Client(port)
    try:
        headers, _ = client.expect(202, "POST", f"/v2/{name}/blobs/uploads/")
        client.expect(
            201, "PUT", with_query(target_of(headers["location"]), f"digest={digest}"), body=content,
        )
    finally:
        client.close()
    return Blob(None, digest, len(content))


def fetch_listing(port, target, key):
    """Every entry of a paginated listing, following Link headers."""
    entries = []
    client = Client(port)
    try:
        while target:
            headers, body = client.expect(200, "GET", target)
            entries.extend(json.loads(body)[key] or [])
            link = headers.get("link")
            target = re.match(r"<([^>]*)>", link).group(1) if link else None
            if target and "://" in target:
                target = target_of(target)
    finally:
        client.close()
    return entries


class Blob:
    def __init__(self, path, digest, size):
        self.path = path
        self.digest = digest
        self.size = size


# ------------------------------------------------- Distribution's layout


def write_link(path, digest):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        file.write(digest)


def populate_listings(root, count, manifest_digest, config_digest, layer_digest):
    """C{count} tags on ``bench/tags`` and C{count} repositories
    ``catalog/r<N>``, each with a tagged manifest, written directly in the
    layout both servers use (the manifest and its blobs exist already)."""
    base = os.path.join(root, "docker", "registry", "v2", "repositories")
    alg, hex_ = manifest_digest.split(":")
    tags = os.path.join(base, "bench", "tags", "_manifests")
    write_link(os.path.join(tags, "revisions", alg, hex_, "link"), manifest_digest)
    for i in range(count):
        tag = os.path.join(tags, "tags", f"t{i:05d}")
        write_link(os.path.join(tag, "index", alg, hex_, "link"), manifest_digest)
        write_link(os.path.join(tag, "current", "link"), manifest_digest)
    for i in range(count):
        repository = os.path.join(base, "catalog", f"r{i:05d}")
        for digest in (config_digest, layer_digest):
            a, h = digest.split(":")
            write_link(os.path.join(repository, "_layers", a, h, "link"), digest)
        write_link(os.path.join(repository, "_manifests", "revisions", alg, hex_, "link"), manifest_digest)
        write_link(os.path.join(repository, "_manifests", "tags", "latest", "current", "link"), manifest_digest)


# ----------------------------------------------------------------- servers


class RSSSampler(threading.Thread):
    """Peak memory of a process and all its children: the sum of their RSS,
    and the sum of their PSS (shared pages counted once)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.window_peak = 0
        self.pss_peak = self.window_pss_peak = 0
        self.done = threading.Event()

    def memory(self):
        rss = pss = 0
        try:
            processes = [self.process] + self.process.children(recursive=True)
        except psutil.NoSuchProcess:
            return 0, 0
        for process in processes:
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        return rss, pss

    def run(self):
        while not self.done.is_set():
            rss, pss = self.memory()
            self.peak = max(self.peak, rss)
            self.window_peak = max(self.window_peak, rss)
            self.pss_peak = max(self.pss_peak, pss)
            self.window_pss_peak = max(self.window_pss_peak, pss)
            time.sleep(0.02)

    def start_window(self):
        self.window_peak, self.window_pss_peak = self.memory()


class Server:
    def __init__(self, name, workdir):
        self.name = name
        self.workdir = os.path.join(workdir, name)
        self.root = os.path.join(self.workdir, "root")
        os.makedirs(self.root)
        self.port = free_port()
        self.process = None
        self.startup = None
        self.sampler = None

    def config_text(self):
        return "\n".join([
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.root}",
            "  delete:",
            "    enabled: true",
            "  cache:",
            "    blobdescriptor: inmemory",
            *self.extra_storage(),
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  headers:",
            "    X-Content-Type-Options: [nosniff]",
            "",
        ])

    def extra_storage(self):
        return []

    def start(self):
        config = os.path.join(self.workdir, "config.yml")
        with open(config, "w") as file:
            file.write(self.config_text())
        log = open(os.path.join(self.workdir, "server.log"), "wb")
        started = time.monotonic()
        self.process = subprocess.Popen(
            self.command(config), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=self.environment(), cwd=self.workdir, start_new_session=True,
        )
        log.close()
        deadline = started + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited; see {self.workdir}/server.log")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/v2/")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not answer /v2/ within 60 s")
            time.sleep(0.005)
        self.startup = time.monotonic() - started
        self.sampler = RSSSampler(self.process.pid)
        self.sampler.start()

    def stop(self):
        if self.sampler is not None:
            self.sampler.done.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Distribution(Server):
    def extra_storage(self):
        return ["  maintenance:", "    uploadpurging:", "      enabled: false"]

    def command(self, config):
        return ["docker-registry", "serve", config]

    def environment(self):
        return {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "OTEL_"))}


class Registryd(Server):
    def __init__(self, name, workdir, extra_args=(), tree=REPO):
        super().__init__(name, workdir)
        self.extra_args = list(extra_args)
        self.tree = tree

    def command(self, config):
        return [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "registryd", "--config", config, *self.extra_args,
        ]

    def environment(self):
        path = os.environ.get("PYTHONPATH")
        return dict(os.environ, PYTHONPATH=self.tree + (os.pathsep + path if path else ""))


# -------------------------------------------------------------- measuring


def timed(action):
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_time(action, runs):
    return statistics.median(timed(action) for _ in range(runs))


def parallel(action, count):
    errors = []

    def run():
        try:
            action()
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk(url, duration, connections, headers=()):
    """(requests/s, p99 latency in ms, failures) of GETs from one wrk run."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency"]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], check=True, capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M).groups()
    p99 = float(value) * _UNITS[unit]
    failures = 0
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if match:
        failures += int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if match:
        failures += sum(int(n) for n in match.groups())
    return rate, p99, failures


def hey(url, duration, connections, method, headers=()):
    """The same figures from ``hey``, for HEAD: wrk 4.1 (and h2load) wait
    for a body after a HEAD response that has a Content-Length, so they
    cannot load HEAD requests."""
    command = ["hey", "-z", f"{duration}s", "-c", str(connections), "-m", method, "-t", "10"]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], check=True, capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = float(re.search(r"99%+ in ([\d.]+) secs", output).group(1)) * 1000
    failures = 0
    for status, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", output):
        if not status.startswith("2"):
            failures += int(count)
    match = re.search(r"Error distribution:(.*)", output, re.S)
    if match:
        failures += sum(int(n) for n in re.findall(r"\[(\d+)\]", match.group(1)))
    return rate, p99, failures


class Table:
    def __init__(self):
        self.rows = []

    def add(self, label, base, ours, unit, target, higher_is_better=True, fmt="{:.0f}"):
        """A row; C{target} is a minimum ratio (float), an absolute limit
        (a string like ``"< 150"``, checked against registryd's figure) or
        None."""
        if higher_is_better:
            ratio = ours / base if base else float("inf")
        else:
            ratio = base / ours if ours else float("inf")
        if isinstance(target, str):
            limit = float(target.split()[1])
            met = ours < limit
            target_text = f"{target} {unit}"
        elif target is not None:
            met = ratio >= target
            target_text = f">= {target:g}x"
        else:
            met, target_text = None, ""
        self.rows.append((label, fmt.format(base), fmt.format(ours), unit, f"{ratio:.2f}x",
                          target_text, {True: "yes", False: "NO", None: ""}[met]))
        print(f"  {label}: docker-registry {fmt.format(base)} {unit}, registryd "
              f"{fmt.format(ours)} {unit} ({ratio:.2f}x)", flush=True)

    def render(self):
        header = ("workload", "docker-registry", "registryd", "unit", "ratio", "target", "met")
        widths = [max(len(str(row[i])) for row in self.rows + [header]) for i in range(len(header))]
        lines = []
        for index, row in enumerate([header] + self.rows):
            cells = [str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
                     for i, (cell, width) in enumerate(zip(row, widths))]
            lines.append("| " + " | ".join(cells) + " |")
            if index == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256M", help="blob size for push and pull (256M)")
    parser.add_argument("--big", default="2G", help="blob moved while watching RSS (2G)")
    parser.add_argument("--runs", type=int, default=3, help="runs per push/pull figure (median)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk load (8)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--entries", type=int, default=10000, help="tags / repositories listed")
    parser.add_argument("--quick", action="store_true",
                        help="64M blobs, 512M big blob, 4 s loads, 2000 entries")
    parser.add_argument("--workdir", default=None, help="where the roots go (a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the roots and logs")
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated workload groups (default: all of {', '.join(GROUPS)})")
    parser.add_argument("--tree", default=REPO,
                        help="registryd source tree to run (default: this checkout)")
    parser.add_argument("--registryd-args", default="--workers auto",
                        help="twistd registryd arguments (default: '--workers auto', one "
                             "process per CPU; '' for a single process)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.big, args.duration, args.entries = "64M", "512M", 4, 2000
    for tool in ("docker-registry", "wrk", "hey", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install {tool}")
    args.only = set(args.only.split(","))
    if not args.only <= set(GROUPS):
        parser.error(f"--only: unknown groups {', '.join(sorted(args.only - set(GROUPS)))}")
    size = parse_size(args.size)
    workdir = tempfile.mkdtemp(prefix="registryd-bench-", dir=args.workdir)
    servers = []
    try:
        print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; data in {workdir}", flush=True)
        blob = Blob(os.path.join(workdir, "blob"), None, size)
        blob.digest = make_blob(blob.path, size)
        big = Blob(os.path.join(workdir, "big"), None, parse_size(args.big))
        if "memory" in args.only:
            big.digest = make_blob(big.path, big.size)
        base = Distribution("docker-registry", workdir)
        ours = Registryd("registryd", workdir, args.registryd_args.split(), os.path.abspath(args.tree))
        servers = [base, ours]
        table = Table()
        for server in servers:
            server.start()
        run_workloads(args, table, base, ours, blob, big)
        table.add("start-up to first /v2/ answer", base.startup * 1000, ours.startup * 1000,
                  "ms", "< 1500", higher_is_better=False)
        print()
        print(f"registryd {' '.join(['--config', '...'] + ours.extra_args)} vs docker-registry "
              f"2.8; {size // MIB} MiB blobs, {args.connections} connections, "
              f"{args.entries} entries, {os.cpu_count()} CPUs, load now {os.getloadavg()[0]:.2f}")
        print(table.render())
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


GROUPS = ("push", "pull", "requests", "listings", "memory")


def run_workloads(args, table, base, ours, blob, big):
    servers = (base, ours)
    for server in servers:
        # Set-up, also a warm-up: a blob and a manifest that refers to it.
        push_monolithic(server.port, "bench/warm", blob)
        pull_verified(server.port, "bench/warm", blob)
        config = push_small_blob(server.port, "bench/warm", b'{"architecture":"amd64","os":"linux"}')
        server.manifest = push_manifest(server.port, "bench/warm", "latest", config, blob)
        server.config_blob = config
    for group in GROUPS:
        if group in args.only:
            print(group, flush=True)
            globals()[f"run_{group}"](args, table, servers, blob, big)


def run_push(args, table, servers, blob, big):
    size_mib = blob.size / MIB
    for label, push, target in [
        ("monolithic push", push_monolithic, 8),
        ("chunked push (16 MiB PATCHes)", push_chunked, 6),
    ]:
        times = {server.name: [] for server in servers}
        for run in range(args.runs):
            for server in servers:
                times[server.name].append(
                    timed(lambda: push(server.port, f"bench/push{run}", blob)))
        rates = [size_mib / statistics.median(times[s.name]) for s in servers]
        table.add(label, *rates, "MiB/s", target)


def curl_pull(port, name, blob):
    """Seconds curl took to GET the whole blob (curl: a client that is not
    itself the bottleneck of a single stream, as a Python loop would be)."""
    output = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
         f"http://127.0.0.1:{port}/v2/{name}/blobs/{blob.digest}"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    if output[0] != "200" or int(float(output[1])) != blob.size:
        raise HTTPError(f"pull: status {output[0]}, {output[1]} of {blob.size} bytes")
    return float(output[2])


def run_pull(args, table, servers, blob, big):
    size_mib = blob.size / MIB
    runs = max(args.runs, 5)  # fast, so noisy: more runs, one server then the other
    for label, streams, target in [("pull, 1 stream", 1, 1.2), ("pull, 8 streams", 8, 1.0)]:
        times = {server.name: [] for server in servers}
        for _ in range(runs):
            for server in servers:
                if streams == 1:
                    elapsed = curl_pull(server.port, "bench/warm", blob)
                else:
                    elapsed = parallel(lambda: curl_pull(server.port, "bench/warm", blob), streams)
                times[server.name].append(elapsed)
        rates = [streams * size_mib / statistics.median(times[s.name]) for s in servers]
        table.add(label, *rates, "MiB/s", target)


def run_requests(args, table, servers, blob, big):
    for label, path, load in [
        ("manifest GET by tag", "/v2/bench/warm/manifests/latest",
         lambda url, seconds: wrk(url, seconds, args.connections, [("Accept", ACCEPT_MANIFESTS)])),
        ("blob HEAD", f"/v2/bench/warm/blobs/{blob.digest}",
         lambda url, seconds: hey(url, seconds, args.connections, "HEAD")),
    ]:
        figures = []
        for server in servers:
            load(f"http://127.0.0.1:{server.port}{path}", 1)  # warm up
            figures.append(load(f"http://127.0.0.1:{server.port}{path}", args.duration))
        for server, (_, _, failures) in zip(servers, figures):
            if failures:
                print(f"  WARNING: {server.name} had {failures} failed requests in {label}")
        table.add(f"{label}, {args.connections} connections", figures[0][0], figures[1][0],
                  "req/s", 2.0)
        table.add(f"{label}, p99 latency", figures[0][1], figures[1][1], "ms", 1.0,
                  higher_is_better=False, fmt="{:.1f}")


def run_listings(args, table, servers, blob, big):
    for server in servers:
        populate_listings(server.root, args.entries, server.manifest, server.config_blob.digest,
                          blob.digest)
    for label, path, key, expected in [
        ("tags list", "/v2/bench/tags/tags/list?n=100000", "tags", args.entries),
        # Distribution refuses n above catalog.maxentries (1000): page.
        ("catalog", "/v2/_catalog?n=1000", "repositories", args.entries),
    ]:
        times = []
        for server in servers:
            entries = fetch_listing(server.port, path, key)  # warm
            if len(entries) < expected:
                raise HTTPError(f"{server.name} {label}: {len(entries)} entries, expected {expected}")
            times.append(median_time(lambda: fetch_listing(server.port, path, key), 5) * 1000)
        table.add(f"{label}, {args.entries} entries", *times, "ms", 2.0, higher_is_better=False)


def run_memory(args, table, servers, blob, big):
    for server in servers:
        server.sampler.start_window()
        push_monolithic(server.port, "bench/big", big)
        pull(server.port, "bench/big", big)
        time.sleep(0.1)
    base, ours = servers
    table.add(f"peak RSS moving {big.size // MIB} MiB blobs",
              base.sampler.window_peak / MIB, ours.sampler.window_peak / MIB, "MiB", "< 150",
              higher_is_better=False)
    table.add(f"peak PSS moving {big.size // MIB} MiB blobs",
              base.sampler.window_pss_peak / MIB, ours.sampler.window_pss_peak / MIB, "MiB",
              None, higher_is_better=False)
    table.add("peak RSS over the whole run", base.sampler.peak / MIB, ours.sampler.peak / MIB,
              "MiB", None, higher_is_better=False)


if __name__ == "__main__":
    main()

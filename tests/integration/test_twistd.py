"""The real ``twistd registryd``, as an operator runs it, in a subprocess.

What matters here is what only the whole program shows: twistd finds the
plugin, a bad configuration stops start-up with one line naming the key
(no traceback), a port that cannot be bound stops start-up, and a good
configuration serves the API.

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

from tests.e2e.tools import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def twistd_command(*arguments):
    """twistd in the foreground, without a pid file, running registryd."""
    return [*TWISTD, "--nodaemon", "--pidfile=", "registryd", *arguments]


def environment(extra=None):
    """This environment with the source tree first on the path, without
    REGISTRY_* variables (they would override the tests' configuration),
    plus C{extra}."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REGISTRY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run_to_exit(tmp_path, *arguments, timeout=60, env=None, command=twistd_command):
    """Run C{command(*arguments)} (twistd registryd) until it exits, with
    C{env} added to the environment; return (status, all output)."""
    result = subprocess.run(
        command(*arguments),
        cwd=tmp_path,
        env=environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout


def write_config(tmp_path, text):
    path = tmp_path / "registryd.yaml"
    path.write_text(text)
    return str(path)


def assert_clean_failure(status, output, *expected):
    assert status != 0, output
    assert "Traceback" not in output, output
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


def test_unbindable_port_fails_start_up(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, output = run_to_exit(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert status != 0, output
    assert "Address already in use" in output, output


# --- serving --------------------------------------------------------------------


class Running:
    """A twistd registryd subprocess, stopped with SIGTERM on exit."""

    def __init__(self, tmp_path, *arguments, env=None, command=twistd_command):
        self.log_path = tmp_path / "twistd.out"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            command(*arguments),
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
    blob = tmp_path / "registry-data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
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
        digest = push_blob(f"http://127.0.0.1:{port}", "env/test", b"stored where the environment says")
    assert blob_file(root, digest).read_bytes() == b"stored where the environment says"
    assert not (tmp_path / "registry-data").exists()
    assert ("ignoring environment variables that name no configuration key: "
            "REGISTRY_SERVICE_HOST") in running.output


def test_environment_overrides_the_config_file(tmp_path):
    port = free_port()
    config = write_config(
        tmp_path,
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'file-root'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n",
    )
    root = tmp_path / "env-root"
    with Running(tmp_path, "--config", config,
                 env={"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root)}) as running:
        response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        assert response.status == 200, running.output
        digest = push_blob(f"http://127.0.0.1:{port}", "env/file", b"env beats file")
    assert blob_file(root, digest).exists()
    assert not (tmp_path / "file-root").exists()


@pytest.mark.parametrize("name, value, expected", [
    ("REGISTRY_REPORTING_BUGSNAG_APIKEY", "x", "reporting: not supported by registryd yet"),
    ("REGISTRY_STORAGE_DELETE_ENABLED", "maybe", "storage.delete.enabled: expected true or false"),
    ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "[", "value is not valid YAML"),
    ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "5", "storage.filesystem.rootdirectory"),
])
def test_an_environment_variable_registryd_cannot_use_stops_start_up_naming_it(
        tmp_path, name, value, expected):
    status, output = run_to_exit(tmp_path, env={name: value})
    assert_clean_failure(status, output, name, expected)


def test_version_is_registryds(tmp_path):
    from registryd import __version__

    status, output = run_to_exit(tmp_path, "--version")
    assert status == 0, output
    assert output.strip() == f"registryd {__version__}"

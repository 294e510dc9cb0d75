"""Operations features in the real ``twistd registryd`` process: Debian's
stock config.yml (without auth) starts and runs its storage health check,
SIGHUP reloads the configuration, and ``log.formatter: json`` makes the
log (with its access-log lines) JSON.

Subprocesses and plain sockets only; the test process's reactor is not used.
"""

import json
import os
import signal
import time
import urllib.request

from tests.e2e.tools import free_port, free_ports
from tests.integration.test_twistd import Running, write_config
from tests.support import read_response_head
from tests.unit.test_config import DEBIAN_STOCK, without_sections


def wait_until(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def serving_config(tmp_path, port):
    """A configuration storing under tmp_path/data, listening on
    127.0.0.1:``port``, ending in the http section (add its keys)."""
    return f"""\
version: 0.1
storage:
  filesystem:
    rootdirectory: {tmp_path / "data"}
http:
  addr: 127.0.0.1:{port}
"""


def test_debian_stock_config_without_auth_starts_and_reloads_on_sighup(tmp_path):
    port, debug_port = free_ports(2)
    root = tmp_path / "docker-registry"
    stock = without_sections(DEBIAN_STOCK, "auth")
    # Only where it listens and stores is changed, to run as a test.
    text = stock.replace("/var/lib/docker-registry", str(root)).replace(
        ":5000", f"127.0.0.1:{port}"
    )
    assert "health:" in text and "storagedriver:" in text
    config = write_config(tmp_path, text)
    with Running(tmp_path, "--config", config) as running:
        response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        assert response.status == 200, running.output
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        # the periodic storage check ran (it writes its probe file)
        wait_until((root / "registryd" / "health").exists)
        # SIGHUP: a new header applies, the new debug listener needs a restart
        text = text.replace(
            "X-Content-Type-Options: [nosniff]",
            "X-Content-Type-Options: [nosniff]\n    X-Reloaded: [after-sighup]",
        )
        text = text.replace("http:\n", f"http:\n  debug:\n    addr: 127.0.0.1:{debug_port}\n")
        with open(config, "w") as stream:
            stream.write(text)
        running.process.send_signal(signal.SIGHUP)
        wait_until(lambda: f"configuration {config} applied" in running.output)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5) as response:
            assert response.headers["X-Reloaded"] == "after-sighup"
        assert "http.debug changed; restart registryd to apply it" in running.output
        assert running.process.poll() is None  # still serving


def test_json_log_lines_with_access_log(tmp_path):
    port = free_port()
    config = write_config(
        tmp_path,
        f"""\
version: 0.1
log:
  formatter: json
  fields: {{service: registry}}
storage:
  filesystem:
    rootdirectory: {tmp_path / "data"}
http:
  addr: 127.0.0.1:{port}
""",
    )
    with Running(tmp_path, "--config", config) as running:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/", headers={"User-Agent": "json-test/1"}
        )
        running.wait_until_serving(request)
        wait_until(lambda: "json-test/1" in running.output)
    records = [json.loads(line) for line in running.output.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("namespace") == "registryd.access"]
    assert access, running.output
    record = access[-1]
    assert (record["method"], record["path"], record["status"], record["route"]) == (
        "GET",
        "/v2/",
        200,
        "api_base",
    )
    assert record["user_agent"] == "json-test/1"
    assert record["service"] == "registry"
    assert record["level"] == "info"
    # twisted.web's own combined-format access line is replaced, not doubled
    assert not any('"GET /v2/ HTTP/1.1"' in r.get("msg", "") for r in records)


def test_a_journal_in_use_by_another_process_stops_start_up_cleanly(tmp_path):
    import fcntl

    from tests.integration.test_twistd import run_to_exit

    journal = tmp_path / "journal" / "hook"
    journal.mkdir(parents=True)
    config = write_config(
        tmp_path,
        f"""\
version: 0.1
storage:
  inmemory:
http:
  addr: 127.0.0.1:{free_port()}
notifications:
  journal: {{directory: {tmp_path / "journal"}}}
  endpoints:
    - {{name: hook, url: "http://127.0.0.1:9/"}}
""",
    )
    with open(journal / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another registryd would
        status, output = run_to_exit(tmp_path, "--config", config)
    assert status != 0
    assert "Traceback" not in output, output
    assert f"notification journal {journal} is in use by another process" in output


def _connect(port):
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=10)


def draining_config(tmp_path, port, http="", more=""):
    """A configuration file with http.draintimeout (20s) and relative URLs,
    plus ``http`` (YAML lines in the http section) and ``more`` (top-level
    lines)."""
    return write_config(
        tmp_path,
        serving_config(tmp_path, port)
        + "  draintimeout: 20s\n  relativeurls: true\n"
        + http
        + more,
    )


def test_draintimeout_lets_an_upload_in_progress_finish(tmp_path):
    """http.draintimeout: on SIGTERM registryd stops accepting, closes idle
    connections, lets a request in progress finish (its response says
    Connection: close), then exits cleanly."""
    port = free_port()
    config = draining_config(tmp_path, port)
    with Running(tmp_path, "--config", config) as running:
        running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        response = urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{port}/v2/drain/app/blobs/uploads/", method="POST"
            ),
            timeout=10,
        )
        location = response.headers["Location"]
        assert location.startswith("/v2/drain/app/blobs/uploads/")  # http.relativeurls

        idle = _connect(port)
        idle.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = read_response_head(idle)
        assert status == 200

        busy = _connect(port)
        data = os.urandom(300_000)
        busy.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[:100_000]
        )
        time.sleep(0.5)
        running.process.send_signal(signal.SIGTERM)

        def refused():
            try:
                _connect(port).close()
            except OSError:
                return True
            return False

        wait_until(refused)
        assert idle.recv(100) == b""  # the idle connection was closed
        assert running.process.poll() is None  # still finishing the upload
        busy.sendall(data[100_000:])
        status, headers, _ = read_response_head(busy)
        assert status == 202, status
        assert headers["range"] == f"0-{len(data) - 1}"
        assert headers.get("connection") == "close"
        assert busy.recv(100) == b""
        assert running.process.wait(timeout=20) in (0, -signal.SIGTERM), running.output
    assert "letting requests finish for up to 20s" in running.output
    assert "Traceback" not in running.output, running.output


def _served_certificate(port, ca_file):
    """The DER certificate a new TLS connection to ``port`` gets."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def test_sighup_renews_tls_certificates_without_a_restart(tmp_path):
    """cert-manager or certbot rewrites the files; SIGHUP makes new
    connections get the new certificate.  A renewal caught half-way (new
    certificate, old key) is refused and the old certificate stays."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests import certs

    port = free_port()
    ca = certs.CA()
    ca_file = certs.write(tmp_path, "ca.crt", ca.pem)
    certificate, key = certs.server_files(tmp_path, ca)
    config = write_config(
        tmp_path,
        f"""\
version: 0.1
storage:
  inmemory:
http:
  addr: 127.0.0.1:{port}
  tls:
    certificate: {certificate}
    key: {key}
""",
    )

    def der(path):
        return x509.load_pem_x509_certificate(open(path, "rb").read()).public_bytes(Encoding.DER)

    with Running(tmp_path, "--config", config) as running:
        wait_until(lambda: "Starting factory" in running.output)
        first = der(certificate)
        assert _served_certificate(port, ca_file) == first
        old_key = open(key, "rb").read()

        certs.server_files(tmp_path, ca)  # renewed: new key and certificate
        renewed = der(certificate)
        assert renewed != first
        running.process.send_signal(signal.SIGHUP)
        wait_until(lambda: f"configuration {config} applied" in running.output)
        assert f"TLS of tcp:{port}:interface=127.0.0.1 renewed" in running.output, running.output
        assert _served_certificate(port, ca_file) == renewed

        certs.server_files(tmp_path, ca)
        open(key, "wb").write(old_key)  # half-way: this key does not fit the certificate
        running.process.send_signal(signal.SIGHUP)
        wait_until(lambda: running.output.count(f"configuration {config} applied") == 2)
        assert "keeps its certificate" in running.output, running.output
        assert _served_certificate(port, ca_file) == renewed
        assert running.process.poll() is None


def test_sighup_names_keys_needing_a_restart_as_the_file_spells_them(tmp_path):
    port = free_port()
    text = serving_config(tmp_path, port)
    config = write_config(tmp_path, text)
    with Running(tmp_path, "--config", config) as running:
        running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        with open(config, "w") as stream:
            stream.write(
                text + "  relativeurls: true\ngc:\n  graceperiod: 2h\n  deleteuntagged: true\n"
            )
        running.process.send_signal(signal.SIGHUP)
        wait_until(lambda: f"configuration {config} applied" in running.output)
    changed = [
        line.split("reload: ", 1)[1]
        for line in running.output.splitlines()
        if "; restart registryd to apply it" in line
    ]
    assert sorted(changed) == [
        "gc.deleteuntagged changed; restart registryd to apply it",
        "gc.graceperiod changed; restart registryd to apply it",
        "http.relativeurls changed; restart registryd to apply it",
    ], running.output

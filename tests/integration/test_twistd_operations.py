"""Operations features in the real ``twistd registryd`` process: Debian's
stock config.yml (without auth) starts and runs its storage health check,
SIGHUP reloads the configuration, and ``log.formatter: json`` makes the
log (with its access-log lines) JSON.

Subprocesses and plain sockets only; the test process's reactor is not used.
"""

import json
import signal
import time
import urllib.request

from tests.e2e.tools import free_port, free_ports
from tests.integration.test_twistd import Running, write_config
from tests.unit.test_config import DEBIAN_STOCK, without_sections


def wait_until(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_debian_stock_config_without_auth_starts_and_reloads_on_sighup(tmp_path):
    port, debug_port = free_ports(2)
    root = tmp_path / "docker-registry"
    stock = without_sections(DEBIAN_STOCK, "auth")
    # Only where it listens and stores is changed, to run as a test.
    text = stock.replace("/var/lib/docker-registry", str(root)).replace(":5000", f"127.0.0.1:{port}")
    assert "health:" in text and "storagedriver:" in text
    config = write_config(tmp_path, text)
    with Running(tmp_path, "--config", config) as running:
        response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        assert response.status == 200, running.output
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        # the periodic storage check ran (it writes its probe file)
        wait_until((root / "registryd" / "health").exists)
        # SIGHUP: a new header applies, the new debug listener needs a restart
        text = text.replace("X-Content-Type-Options: [nosniff]",
                            "X-Content-Type-Options: [nosniff]\n    X-Reloaded: [after-sighup]")
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
    config = write_config(tmp_path, f"""\
version: 0.1
log:
  formatter: json
  fields: {{service: registry}}
storage:
  filesystem:
    rootdirectory: {tmp_path / "data"}
http:
  addr: 127.0.0.1:{port}
""")
    with Running(tmp_path, "--config", config) as running:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/", headers={"User-Agent": "json-test/1"})
        running.wait_until_serving(request)
        wait_until(lambda: "json-test/1" in running.output)
    records = [json.loads(line) for line in running.output.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("namespace") == "registryd.access"]
    assert access, running.output
    record = access[-1]
    assert (record["method"], record["path"], record["status"], record["route"]) == (
        "GET", "/v2/", 200, "api_base")
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
    config = write_config(tmp_path, f"""\
version: 0.1
storage:
  inmemory:
http:
  addr: 127.0.0.1:{free_port()}
notifications:
  journal: {{directory: {tmp_path / "journal"}}}
  endpoints:
    - {{name: hook, url: "http://127.0.0.1:9/"}}
""")
    with open(journal / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another registryd would
        status, output = run_to_exit(tmp_path, "--config", config)
    assert status != 0
    assert "Traceback" not in output, output
    assert f"notification journal {journal} is in use by another process" in output

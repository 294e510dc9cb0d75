"""The ``registryd`` command (``python -m registryd``), as an operator or
a CI job runs it, in subprocesses: ``--version``, ``--help`` for every
subcommand, ``check-config`` and ``serve``.

The console script ``registryd`` is this same entry point
(``registryd.cli:main``); the container image test (tests/e2e) runs the
installed script.
"""

import os
import signal
import sys

import pytest
import yaml

from registryd import __version__
from registryd.cli import COMMANDS
from tests.e2e.tools import free_port
from tests.integration.test_twistd import (
    Running,
    blob_file,
    push_blob,
    run_to_exit,
    write_config,
)


def registryd(*arguments):
    return [sys.executable, "-m", "registryd", *arguments]


def run(tmp_path, *arguments, env=None):
    return run_to_exit(tmp_path, *arguments, env=env, command=registryd)


def test_version(tmp_path):
    status, output = run(tmp_path, "--version")
    assert (status, output) == (0, f"registryd {__version__}\n")


def test_help_names_every_subcommand_and_each_has_its_own(tmp_path):
    status, output = run(tmp_path, "--help")
    assert status == 0, output
    for name in ("serve", "check-config", "gc", "referrers", "retention"):
        assert f"\n  {name} " in output, output
    assert set(COMMANDS) == {"serve", "check-config", "gc", "referrers", "retention"}
    for name in COMMANDS:
        status, output = run(tmp_path, name, "--help")
        assert status == 0, (name, output)
        assert output.lower().startswith("usage: registryd"), (name, output)
        assert "--config" in output or "FILE" in output, (name, output)


def test_bad_usage_exits_2(tmp_path):
    assert run(tmp_path)[0] == 2
    status, output = run(tmp_path, "nosuchcommand")
    assert status == 2 and "unknown command 'nosuchcommand'" in output


CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
  secret: do-not-print-me
proxy:
  remoteurl: https://registry-1.docker.io
  username: someone
  password: do-not-print-this-either
"""


def test_check_config_prints_the_effective_configuration_with_secrets_masked(tmp_path):
    config = write_config(tmp_path, CONFIG.format(root=tmp_path / "root", port=5000))
    env = {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "env-root"),
        "REGISTRY_PROXY_PASSWORD": "from-the-environment",
        "REGISTRY_SERVICE_PORT": "5000",
    }
    status, output = run(tmp_path, "check-config", config, env=env)
    assert status == 0, output
    for secret in ("do-not-print-me", "do-not-print-this-either", "from-the-environment"):
        assert secret not in output
    assert "# REGISTRY_PROXY_PASSWORD sets proxy.password" in output
    assert "# REGISTRY_SERVICE_PORT ignored" in output
    effective = yaml.safe_load(output)
    assert effective["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "env-root")
    assert effective["proxy"] == {
        "remoteurl": "https://registry-1.docker.io",
        "username": "someone",
        "password": "********",
    }
    assert effective["http"]["secret"] == "********"
    assert not (tmp_path / "env-root").exists()  # checking writes nothing


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {"REGISTRY_STORAGE_DELETE_ENABLED": "maybe"},
            "REGISTRY_STORAGE_DELETE_ENABLED: storage.delete.enabled: expected true or false",
        ),
        ({"REGISTRY_HTTP_ADDR": "127.0.0.1:99999"}, "http.addr: port 99999 is out of range"),
        (
            {"REGISTRY_HTTP_TLS_CERTIFICATE": "/nonexistent.crt", "REGISTRY_HTTP_TLS_KEY": "/k"},
            "cannot read /nonexistent.crt",
        ),
    ],
)
def test_check_config_fails_with_one_line_naming_the_problem(tmp_path, env, expected):
    config = write_config(tmp_path, CONFIG.format(root=tmp_path / "root", port=5000))
    status, output = run(tmp_path, "check-config", config, env=env)
    assert status == 1, output
    assert output.count("\n") == 1 and "Traceback" not in output, output
    assert output.startswith("registryd check-config: ") and expected in output, output


def test_check_config_checks_the_storage_root_can_be_written(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    config = write_config(tmp_path, CONFIG.format(root=tmp_path / "a-file", port=5000))
    status, output = run(tmp_path, "check-config", "--quiet", config)
    assert status == 1, output
    assert "storage.filesystem.rootdirectory" in output and "is not a directory" in output
    config = write_config(tmp_path, CONFIG.format(root=tmp_path / "a-file" / "below", port=5000))
    status, output = run(tmp_path, "check-config", "--quiet", config)
    assert status == 1 and "cannot be created" in output, output
    config = write_config(tmp_path, CONFIG.format(root=tmp_path / "new" / "root", port=5000))
    assert run(tmp_path, "check-config", "--quiet", config) == (0, "")


def test_check_config_warns_of_a_short_grace_period_with_scheduled_gc(tmp_path):
    """Valid (exit status 0, also with ``--quiet``), with one warning line
    on stderr naming both keys."""
    text = CONFIG.format(root=tmp_path / "root", port=5000)
    config = write_config(tmp_path, text + "gc: {interval: 1h, graceperiod: 2m}\n")
    status, output = run(tmp_path, "check-config", "--quiet", config)
    assert status == 0, output
    assert output.startswith(
        "registryd check-config: warning: gc.graceperiod 2m with gc.interval 1h: "
    ), output
    assert len(output.splitlines()) == 1, output


def test_serve_runs_the_registry_in_the_foreground(tmp_path):
    """Like twistd -n registryd, without a pid file; SIGTERM stops it."""
    port = free_port()
    text = CONFIG.split("proxy:")[0]  # a pull-through cache refuses pushes
    config = write_config(tmp_path, text.format(root=tmp_path / "root", port=port))
    with Running(tmp_path, "serve", "--config", config, command=registryd) as running:
        response = running.wait_until_serving(f"http://127.0.0.1:{port}/v2/")
        assert response.status == 200, running.output
        digest = push_blob(f"http://127.0.0.1:{port}", "served/blob", b"served by registryd serve")
        assert not os.path.exists(tmp_path / "twistd.pid")
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=30) in (0, -signal.SIGTERM), running.output
    assert blob_file(tmp_path / "root", digest).exists()


def test_serve_reports_a_bad_configuration_in_one_line(tmp_path):
    status, output = run(tmp_path, "serve", env={"REGISTRY_STORAGE_DELETE_ENABLED": "maybe"})
    assert status == 1, output
    assert "Traceback" not in output
    assert (
        "REGISTRY_STORAGE_DELETE_ENABLED: storage.delete.enabled" in output.strip().splitlines()[-1]
    )

"""registryd-gc and ``python -m registryd``: arguments and exit statuses.

Collections themselves run in a subprocess (they start a reactor); see
tests/e2e/test_gc_interop.py.  Here: what is decided before that, plus one
real run of ``python -m registryd gc`` on a directory.
"""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from registryd.__main__ import main as module_main
from registryd.ops.gc_command import run
from tests.support import registryd_command

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_configuration_errors_exit_2_naming_the_key(tmp_path):
    err = io.StringIO()
    assert run(["--config", str(tmp_path / "missing.yml")], err=err) == 2
    assert err.getvalue().startswith("registryd-gc: configuration ")
    assert "cannot read configuration file" in err.getvalue()
    config = tmp_path / "bad.yml"
    config.write_text("version: 0.1\nstorage:\n  inmemory:\ngc: {graceperiod: soon}\n")
    err = io.StringIO()
    assert run(["--config", str(config)], err=err) == 2
    assert f"configuration {config}: gc.graceperiod: " in err.getvalue()
    config.write_text("version: 0.1\nstorage:\n  inmemory:\n")
    err = io.StringIO()
    assert run(["--config", str(config), "--grace-period", "later"], err=err) == 2
    assert err.getvalue().startswith("registryd-gc: --grace-period: expected a duration")


def test_module_dispatcher(capsys):
    assert module_main([]) == 2
    assert "  gc            garbage collection" in capsys.readouterr().err
    assert module_main(["--help"]) == 0
    assert module_main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_python_m_registryd_gc_collects_a_directory(tmp_path):
    root = tmp_path / "data"
    blob = root / "docker/registry/v2/blobs/sha256/ab" / ("ab" + "0" * 62)
    blob.mkdir(parents=True)
    (blob / "data").write_bytes(b"x" * 10)
    old = time.time() - 7200
    os.utime(blob / "data", (old, old))
    fresh = root / "docker/registry/v2/blobs/sha256/cd" / ("cd" + "0" * 62)
    fresh.mkdir(parents=True)
    (fresh / "data").write_bytes(b"y" * 20)
    config = tmp_path / "registryd.yaml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "registryd", "gc", "--config", str(config)]

    dry = subprocess.run(command + ["--dry-run"], capture_output=True, env=env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.decode().splitlines()
    assert f"would remove blob sha256:ab{'0' * 62} (10 bytes)" in lines
    assert f"kept blob sha256:cd{'0' * 62}: younger than the grace period" in lines
    assert (blob / "data").exists()

    real = subprocess.run(command + ["--json"], capture_output=True, env=env, timeout=60)
    assert real.returncode == 0, real.stderr
    report = json.loads(real.stdout)
    assert report["blobs_removed"] == [{"digest": f"sha256:ab{'0' * 62}", "size": 10}]
    assert report["bytes_reclaimed"] == 10
    assert not blob.exists() and (fresh / "data").exists()


def _old_unreferenced_blob(root):
    """An unreferenced blob older than the grace period under ``root``."""
    blob = root / "docker/registry/v2/blobs/sha256/ab" / ("ab" + "0" * 62)
    blob.mkdir(parents=True)
    (blob / "data").write_bytes(b"x" * 10)
    old = time.time() - 7200
    os.utime(blob / "data", (old, old))
    return blob / "data"


def test_without_config_it_refuses_to_delete_in_one_line(tmp_path):
    """Distribution's garbage-collect requires its configuration; so does
    registryd-gc to delete: run in the directory of some ./registry-data
    by mistake, it changes nothing and says what to add."""
    blob = _old_unreferenced_blob(tmp_path / "registry-data")
    refused = registryd_command("gc", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr == (
        "registryd-gc: --config FILE is required to delete (the registry's configuration, "
        "naming its storage); add --dry-run to look at ./registry-data without it\n"
    )
    assert blob.exists()
    looked = registryd_command("gc", "--dry-run", cwd=tmp_path)
    assert looked.returncode == 0, looked.stderr
    assert f"would remove blob sha256:ab{'0' * 62} (10 bytes)" in looked.stdout.splitlines()
    assert blob.exists()


def test_every_configuration_error_is_a_line_of_its_own(tmp_path):
    config = tmp_path / "bad.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  inmemory:\n  delete: {enabled: 1}\n"
        "gc: {graceperiod: soon}\nbogus: 1\n"
    )
    err = io.StringIO()
    assert run(["--config", str(config)], err=err) == 2
    lines = err.getvalue().splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "storage.delete.enabled",
        "gc.graceperiod",
        "bogus",
    ]
    assert all(line.startswith(f"registryd-gc: configuration {config}: ") for line in lines)

"""A real S3 store for tests: OpenStack Swift with its s3api, on loopback.

``swift`` is a session fixture: Swift starts once per session (a few
seconds; the first time on a machine the script installs Debian's swift
packages) through ``swift-s3.sh`` into a temporary state directory, on free
ports, and is stopped at the end.  Tests share one bucket and isolate
themselves with a key prefix each (the driver's ``rootdirectory``).

When Swift cannot start, the tests fail -- except locally (not ``CI=true``)
when the swift packages cannot be installed (no root, no network), where
they are skipped.

Synchronous code only (subprocess, botocore); nothing here imports the
reactor.
"""

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.tools import free_ports, in_ci

#: The script as the project's shared services provide it; a copy in this
#: directory is used where that is missing (CI images without /work/shared).
SHARED_SCRIPT = Path("/work/shared/services/swift-s3.sh")
LOCAL_SCRIPT = Path(__file__).resolve().parent / "swift-s3.sh"
BUCKET = "registryd-tests"

#: Lines of the script's stderr meaning the packages could not be installed.
_INSTALL_FAILURES = ("apt-get install failed", "missing packages")

#: Lines meaning the chosen ports were no good (taken meanwhile): worth
#: another try on fresh ones.
_PORT_FAILURES = ("is already in use", "ports must differ")


def script_path():
    configured = os.environ.get("SWIFT_S3_SCRIPT")
    if configured:
        return Path(configured)
    return SHARED_SCRIPT if SHARED_SCRIPT.exists() else LOCAL_SCRIPT


class SwiftS3:
    """A running Swift with s3api: ``endpoint``, ``access_key``,
    ``secret_key``, ``region``, ``state``; and helpers for tests."""

    def __init__(self, state):
        self.state = Path(state)
        self.script = script_path()
        self.ports = {}
        self.choose_ports()
        self.env = {}
        self._client = None

    def choose_ports(self):
        names = ("SWIFT_PORT", "SWIFT_OBJECT_PORT", "SWIFT_CONTAINER_PORT", "SWIFT_ACCOUNT_PORT")
        self.ports = dict(zip(names, free_ports(len(names))))

    # processes

    def _run(self, mode, timeout):
        environment = dict(os.environ)
        environment.update({key: str(value) for key, value in self.ports.items()})
        return subprocess.run(
            ["bash", str(self.script), mode, str(self.state)],
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )

    def start(self):
        result = self._run("start", timeout=900)
        stderr = result.stderr.decode("utf-8", "replace")
        if result.returncode != 0:
            return stderr
        for line in result.stdout.decode().splitlines():
            if line.startswith("export ") and "=" in line:
                name, value = line[len("export ") :].split("=", 1)
                self.env[name] = value.strip("'\"")
        return None

    def stop(self):
        self._run("stop", timeout=120)

    @property
    def endpoint(self):
        return self.env["SWIFT_S3_ENDPOINT"]

    @property
    def access_key(self):
        return self.env["AWS_ACCESS_KEY_ID"]

    @property
    def secret_key(self):
        return self.env["AWS_SECRET_ACCESS_KEY"]

    @property
    def region(self):
        return self.env["AWS_DEFAULT_REGION"]

    # S3 helpers (blocking: for fixtures and setup, not inside tests that
    # need the reactor to run meanwhile)

    @property
    def client(self):
        if self._client is None:
            import botocore.session
            from botocore.config import Config

            self._client = botocore.session.get_session().create_client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                config=Config(
                    s3={"addressing_style": "path"},
                    signature_version="s3v4",
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._client

    def make_bucket(self, name=BUCKET):
        try:
            self.client.create_bucket(Bucket=name)
        except self.client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except self.client.exceptions.ClientError as error:
            if error.response["Error"]["Code"] not in (
                "BucketAlreadyExists",
                "BucketAlreadyOwnedByYou",
            ):
                raise
        return name

    @staticmethod
    def new_prefix(label="t"):
        return f"{label}-{uuid.uuid4().hex[:12]}"

    def keys(self, prefix, bucket=BUCKET):
        """Every key under ``prefix``/, sorted."""
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            found.extend(item["Key"] for item in page.get("Contents", ()))
        return sorted(found)

    def multipart_uploads(self, prefix, bucket=BUCKET):
        response = self.client.list_multipart_uploads(Bucket=bucket, Prefix=f"{prefix}/")
        return [(item["Key"], item["UploadId"]) for item in response.get("Uploads", ())]

    def purge(self, prefix, bucket=BUCKET):
        """Delete everything under ``prefix``/, open multipart uploads too."""
        for key, upload_id in self.multipart_uploads(prefix, bucket):
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        keys = self.keys(prefix, bucket)
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=bucket,
                Delete={
                    "Objects": [{"Key": key} for key in keys[start : start + 1000]],
                    "Quiet": True,
                },
            )

    def parameters(self, prefix, **extra):
        """A ``storage.s3`` section for this store, under ``prefix``."""
        section = {
            "bucket": BUCKET,
            "region": self.region,
            "regionendpoint": self.endpoint,
            "forcepathstyle": True,
            "secure": False,
            "accesskey": self.access_key,
            "secretkey": self.secret_key,
            "rootdirectory": f"/{prefix}",
        }
        section.update(extra)
        return section


def _supports_xattrs(directory):
    """Swift keeps object metadata in user xattrs (tmpfs lacks them
    before Linux 6.6)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=directory) as probe:
            os.setxattr(probe.name, "user.registryd.probe", b"x")
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def swift(tmp_path_factory):
    """The session's Swift (started on first use), with the test bucket made."""
    import shutil
    import tempfile

    state = tmp_path_factory.mktemp("swift-s3")
    own_state = None
    if not _supports_xattrs(state) and os.path.isdir("/var/tmp"):
        state = own_state = Path(tempfile.mkdtemp(prefix="registryd-swift-", dir="/var/tmp"))
    store = SwiftS3(state)
    try:
        problem = store.start()
        for _ in range(2):
            if problem is None or not any(marker in problem for marker in _PORT_FAILURES):
                break
            store.choose_ports()
            problem = store.start()
        if problem is not None:
            summary = problem.strip().splitlines()[-1] if problem.strip() else "no output"
            message = f"OpenStack Swift (s3api) did not start: {summary}\n{problem[-3000:]}"
            if not in_ci() and any(marker in problem for marker in _INSTALL_FAILURES):
                pytest.skip(message)
            pytest.fail(message, pytrace=False)
        store.make_bucket()
        yield store
    finally:
        store.stop()
        if own_state is not None:
            shutil.rmtree(own_state, ignore_errors=True)

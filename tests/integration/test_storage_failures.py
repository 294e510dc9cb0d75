"""A storage root that is full or read-only, on a real disk: an 8 MiB tmpfs
mounted for the test (tests/e2e/tools.Tmpfs; root needed, else skipped
locally and failed under CI=true).

What a client must see: a prompt, retryable 503 UNAVAILABLE with
``Retry-After`` whose message says what is wrong; what an operator must
see: ``/health`` saying the same; and afterwards nothing half-written
visible, and the same push succeeding once space (or writability) is back,
without a restart.
"""

import hashlib
import json
import os

import pytest_twisted
import treq

from tests.e2e.tools import Tmpfs
from tests.integration.test_health_metrics import BASE
from tests.service_support import start_service
from tests.support import sha256

MiB = 1024 * 1024


@pytest_twisted.async_yield_fixture
async def disk(tmp_path):
    """A registry service whose storage root is on a fresh 8 MiB tmpfs;
    ``disk.tmpfs`` remounts it, ``disk.root`` is the storage root."""
    with Tmpfs(tmp_path / "disk", size="8m") as tmpfs:
        root = tmp_path / "disk" / "registry-data"
        running = await start_service(tmp_path, BASE, root=str(root))
        running.tmpfs, running.root = tmpfs, root
        try:
            yield running
        finally:
            await running.stop()
            tmpfs.remount(read_only=False)


async def call(running, method, url, data=None, headers=None):
    """(status, headers, body) of one request; ``url`` relative to /v2/."""
    if not url.startswith("http"):
        url = running.v2(url)
    response = await running.client.request(method, url, data=data, headers=headers or {})
    return response.code, response.headers, await response.content()


async def health(running):
    response = await treq.get(running.debug_url + "/health", persistent=False)
    return response.code, json.loads(await response.content())


def fill_disk(tmpfs, leave):
    """A filler file that leaves ``leave`` bytes free; returns its path."""
    filler = os.path.join(tmpfs.directory, "filler")
    with open(filler, "wb") as stream:
        stream.write(b"\0" * (tmpfs.free() - leave))
    assert tmpfs.free() <= leave + 64 * 1024
    return filler


def assert_unavailable(status, headers, body, *expected):
    """A retryable 503 UNAVAILABLE whose message contains ``expected``."""
    assert status == 503, body
    [error] = json.loads(body)["errors"]
    assert error["code"] == "UNAVAILABLE", error
    for text in expected:
        assert text in error["message"], error
    assert error["detail"]["reason"] == error["message"]
    assert headers.getRawHeaders("Retry-After") == ["10"]
    return error["message"]


def read_bytes(path):
    with open(path, "rb") as stream:
        return stream.read()


def files_under(directory):
    return sorted(
        os.path.join(path, name) for path, _, names in os.walk(directory) for name in names
    )


def location(running, headers):
    found = headers.getRawHeaders("Location")[0]
    return found if found.startswith("http") else running.url + found


def with_digest(url, digest):
    return f"{url}{'&' if '?' in url else '?'}digest={digest}"


@pytest_twisted.ensureDeferred
async def test_full_disk_is_a_named_503_nothing_half_written_and_the_push_resumes(disk):
    blob = os.urandom(2 * MiB)
    digest = sha256(blob)
    filler = fill_disk(disk.tmpfs, leave=1 * MiB)

    # docker's way: a session, the layer in one PATCH, PUT with the digest.
    status, headers, body = await call(disk, "POST", "app/blobs/uploads/")
    assert status == 202, body
    upload = location(disk, headers)
    status, headers, body = await call(disk, "PATCH", upload, blob)
    message = assert_unavailable(
        status, headers, body, "storage full: no space left on device (ENOSPC) writing /"
    )
    assert "_uploads" in message  # names what was being written

    # Nothing half-written is visible; the upload kept a consistent prefix
    # of what was sent, and says where to resume.
    status, _, _ = await call(disk, "GET", f"app/blobs/{digest}")
    assert status == 404
    blobs = disk.root / "docker" / "registry" / "v2" / "blobs"
    assert files_under(blobs) == []
    [stored] = [path for path in files_under(disk.root) if path.endswith("/data")]
    kept = read_bytes(stored)
    assert 0 < len(kept) < len(blob) and blob.startswith(kept)
    status, headers, _ = await call(disk, "GET", upload)
    assert status == 204
    assert headers.getRawHeaders("Range") == [f"0-{len(kept) - 1}"]

    # A monolithic push fails the same way and leaves no upload behind.
    other = os.urandom(2 * MiB)
    status, headers, body = await call(
        disk, "POST", f"app/blobs/uploads/?digest={sha256(other)}", other
    )
    assert_unavailable(status, headers, body, "storage full: no space left on device (ENOSPC)")
    assert [path for path in files_under(disk.root) if path.endswith("/data")] == [stored]

    # /health names the problem while the disk is full.
    status, failing = await health(disk)
    assert status == 503
    assert "storage full: no space left on device" in failing["storagedriver_filesystem"]

    os.unlink(filler)  # the operator frees space: service resumes, no restart
    assert await health(disk) == (200, {})
    status, headers, body = await call(
        disk,
        "PATCH",
        upload,
        blob[len(kept) :],
        {"Content-Range": f"{len(kept)}-{len(blob) - 1}"},
    )
    assert status == 202, body
    status, _, body = await call(disk, "PUT", with_digest(location(disk, headers), digest))
    assert status == 201, body
    status, _, body = await call(disk, "GET", f"app/blobs/{digest}")
    assert (status, hashlib.sha256(body).hexdigest()) == (200, digest.split(":")[1])
    status, _, body = await call(disk, "POST", f"app/blobs/uploads/?digest={sha256(other)}", other)
    assert status == 201, body


@pytest_twisted.ensureDeferred
async def test_read_only_root_refuses_pushes_by_name_serves_pulls_and_recovers(disk):
    pulled = os.urandom(5000)
    status, _, body = await call(
        disk, "POST", f"app/blobs/uploads/?digest={sha256(pulled)}", pulled
    )
    assert status == 201, body

    disk.tmpfs.remount(read_only=True)
    pushed = os.urandom(5000)
    status, headers, body = await call(
        disk, "POST", f"app/blobs/uploads/?digest={sha256(pushed)}", pushed
    )
    assert_unavailable(status, headers, body, "storage is read-only (EROFS) writing /")
    status, headers, body = await call(disk, "POST", "app/blobs/uploads/")
    assert_unavailable(status, headers, body, "storage is read-only (EROFS)")
    status, _, body = await call(disk, "GET", f"app/blobs/{sha256(pulled)}")
    assert (status, body) == (200, pulled)
    status, failing = await health(disk)
    assert status == 503
    assert "storage is read-only (EROFS)" in failing["storagedriver_filesystem"]

    disk.tmpfs.remount(read_only=False)
    assert await health(disk) == (200, {})
    status, _, body = await call(
        disk, "POST", f"app/blobs/uploads/?digest={sha256(pushed)}", pushed
    )
    assert status == 201, body


def test_unwritable_root_is_a_named_503_until_permissions_are_fixed(tmp_path):
    """EACCES for real: twistd registryd as root without the capability to
    override file permissions, then the storage tree made read-only by
    mode (as an operator's stray chown or chmod would)."""
    import stat
    import urllib.error
    import urllib.request

    from tests.e2e.tools import free_ports, without_permission_override
    from tests.integration.test_twistd import Running, write_config

    port, debug_port = free_ports(2)
    root = tmp_path / "registry-data"
    config = write_config(tmp_path, BASE.format(root=root, port=port, debug_port=debug_port))
    base, debug = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{debug_port}"

    def request(method, url, data=None):
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, data, method=method), timeout=30
            ) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def push(data):
        return request("POST", f"{base}/v2/app/blobs/uploads/?digest={sha256(data)}", data)

    def set_directories_writable(writable):
        for path, _, _ in os.walk(root):
            mode = os.stat(path).st_mode
            os.chmod(path, (mode | stat.S_IWUSR) if writable else (mode & ~0o222))

    with Running(tmp_path, "--config", config, prefix=without_permission_override()) as running:
        running.wait_until_serving(f"{base}/v2/")
        assert push(b"first")[0] == 201, running.output
        set_directories_writable(False)
        try:
            status, headers, body = push(b"second")
            assert status == 503, body
            [error] = json.loads(body)["errors"]
            assert error["code"] == "UNAVAILABLE"
            assert error["message"].startswith("storage permission denied (EACCES) writing /"), (
                error
            )
            assert headers["Retry-After"] == "10"
            status, _, body = request("GET", f"{debug}/health")
            assert status == 503
            assert "permission denied (EACCES)" in json.loads(body)["storagedriver_filesystem"]
        finally:
            set_directories_writable(True)
        assert request("GET", f"{debug}/health")[:1] == (200,)
        assert push(b"second")[0] == 201
        assert "Traceback" not in running.output, running.output

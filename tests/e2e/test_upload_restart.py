"""A registryd killed in the middle of a chunked push and started again
finishes the upload from its stored running hash, without reading back
what it had received (``registryd.storage.uploads.STORE_ALONE_FROM``)."""

import os
import signal

from registryd.storage.uploads import STORE_ALONE_FROM
from tests.e2e import tools

CHUNK = 8 * 1024 * 1024


def bytes_read(pid):
    """Bytes process ``pid`` has read through ``read``-like system calls
    (``rchar``: files, page cache hits included, and sockets)."""
    with open(f"/proc/{pid}/io") as io:
        fields = dict(line.split(": ") for line in io.read().splitlines())
    return int(fields["rchar"])


def test_a_killed_registryd_finishes_a_chunked_upload_without_reading_it_back(
    registryd_factory,
):
    """One process (no workers, no nodes), SIGKILL after the ``PATCH``es
    of 72 MiB, started again on the same root: the status, the last
    ``PATCH`` and the ``PUT`` read less than a tenth of what was received
    (reading it back to rebuild the hash would read all of it), and the
    blob is stored with the right digest."""
    received = STORE_ALONE_FROM + CHUNK
    data = os.urandom(received + 1024 * 1024)
    first = registryd_factory()
    response = tools.http_request("POST", f"{first.url}/v2/restart/app/blobs/uploads/")
    assert response.status == 202, response
    location = tools.patch_chunks(
        first.url,
        first.url + tools.upload_path(response.headers["location"]),
        data[:received],
        CHUNK,
    )
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(timeout=60)

    second = registryd_factory()  # the same root
    path = tools.upload_path(location)
    before = bytes_read(second.pid)
    response = tools.http_request("GET", second.url + path)
    assert response.status == 204 and response.headers["range"] == f"0-{received - 1}", response
    location = tools.patch_chunks(
        second.url, second.url + path, data[received:], len(data), start=received
    )
    digest = tools.sha256_digest(data)
    separator = "&" if "?" in location else "?"
    response = tools.http_request("PUT", f"{location}{separator}digest={digest}")
    assert response.status == 201, response
    read = bytes_read(second.pid) - before
    assert read < received // 10, f"the restarted registryd read {read} bytes"
    response = tools.http_request("HEAD", f"{second.url}/v2/restart/app/blobs/{digest}")
    assert response.status == 200 and int(response.headers["content-length"]) == len(data)

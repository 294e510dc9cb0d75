"""How storage failures reach clients: an OSError that means the storage as
a whole is full, read-only or inaccessible becomes a StorageRefused naming
it, and the model turns every storage outage into a 503 UNAVAILABLE with
the reason as its message and ``Retry-After``, logged once a minute."""

import errno

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from registryd import errors
from registryd.storage.errors import (
    StorageError,
    StorageRefused,
    StorageUnavailable,
    _OncePerInterval,
    translate_storage_errors,
)


@pytest.mark.parametrize(
    "number, condition",
    [
        (errno.ENOSPC, "storage full: no space left on device (ENOSPC)"),
        (errno.EDQUOT, "storage full: disk quota exceeded (EDQUOT)"),
        (errno.EROFS, "storage is read-only (EROFS)"),
        (errno.EACCES, "storage permission denied (EACCES)"),
        (errno.EPERM, "storage operation not permitted (EPERM)"),
    ],
)
def test_os_errors_of_the_whole_storage_are_named(number, condition):
    refused = StorageRefused.from_os_error(OSError(number, "whatever"), "writing", "/a/b")
    assert isinstance(refused, StorageUnavailable)
    assert str(refused) == f"{condition} writing /a/b"
    assert (refused.condition, refused.path) == (condition, "/a/b")


@pytest.mark.parametrize("number", [errno.ENAMETOOLONG, errno.EIO, errno.ENOENT, None])
def test_other_os_errors_are_not_refusals(number):
    assert StorageRefused.from_os_error(OSError(number, "x"), "reading", "/a") is None


def refusing(error):
    @translate_storage_errors
    async def model_call():
        raise error

    return model_call


@pytest_twisted.ensureDeferred
async def test_outages_are_503_with_the_reason_and_retry_after():
    with pytest.raises(errors.Unavailable) as raised:
        await refusing(
            StorageRefused.from_os_error(OSError(errno.ENOSPC, "x"), "writing", "/u/data")
        )()
    error = raised.value
    reason = "storage full: no space left on device (ENOSPC) writing /u/data"
    assert (error.status, error.code, error.message) == (503, "UNAVAILABLE", reason)
    assert error.detail == {"reason": reason}
    assert error.headers == {"Retry-After": "10"}


@pytest_twisted.ensureDeferred
async def test_other_storage_errors_are_not_translated():
    with pytest.raises(StorageError) as raised:
        await refusing(StorageError("/x: a bug"))()
    assert type(raised.value) is StorageError


def test_every_unavailable_carries_retry_after():
    assert errors.Unavailable().headers == {"Retry-After": "10"}
    assert errors.UpstreamUnavailable("down").headers == {"Retry-After": "10"}
    assert errors.Unavailable(headers={"Retry-After": "3"}).headers == {"Retry-After": "3"}


def test_each_condition_is_logged_once_per_interval():
    now = [1000.0]
    log_once = _OncePerInterval(interval=60, clock=lambda: now[0])
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        full = StorageRefused("storage full: no space left on device (ENOSPC)", "writing", "/a")
        read_only = StorageRefused("storage is read-only (EROFS)", "writing", "/b")
        for _ in range(100):
            log_once(full)
        log_once(read_only)
        for path in ("/a", "/b", "/c"):  # other outages: one condition
            log_once(StorageUnavailable(f"S3 get_object {path}: no answer within 1s"))
        now[0] += 59
        log_once(full)
        now[0] += 2
        log_once(full)
    finally:
        globalLogPublisher.removeObserver(events.append)
    reasons = [event["reason"] for event in events if "reason" in event]
    assert reasons == [
        str(full),
        str(read_only),
        "S3 get_object /a: no answer within 1s",
        str(full),
    ]

"""The s3 driver's pure parts: how botocore's errors become storage errors
(which decides between a client's 404, 503 and 500), and how large objects
are cut into copy ranges that S3 accepts."""

import botocore.exceptions
import pytest

from registryd.storage.drivers.s3_client import S3Error, translate
from registryd.storage.drivers.s3_parameters import GiB, MiB
from registryd.storage.drivers.s3_streams import copy_ranges
from registryd.storage.errors import PathNotFound, StorageRefused, StorageUnavailable


def client_error(status, code, message="", operation="GetObject"):
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


@pytest.mark.parametrize("status, code", [(404, "NoSuchKey"), (404, "404"), (404, "NotFound")])
def test_missing_keys_are_path_not_found(status, code):
    error = translate(client_error(status, code), "get_object", "/a/b")
    assert isinstance(error, PathNotFound)
    assert error.path == "/a/b"


@pytest.mark.parametrize(
    "status, code",
    [
        (503, "SlowDown"),
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
        (502, ""),
        (504, "GatewayTimeout"),
        (429, "TooManyRequests"),
        (400, "RequestTimeout"),
    ],
)
def test_outages_are_unavailable(status, code):
    error = translate(client_error(status, code, "busy"), "put_object", "/x")
    assert isinstance(error, StorageUnavailable)
    assert "S3 put_object /x" in str(error) and str(status) in str(error)


@pytest.mark.parametrize(
    "status, code, condition",
    [
        (403, "AccessDenied", "storage permission denied (S3 AccessDenied)"),
        (403, "SignatureDoesNotMatch", "storage permission denied (S3 SignatureDoesNotMatch)"),
        (403, "InvalidAccessKeyId", "storage permission denied (S3 InvalidAccessKeyId)"),
        (404, "NoSuchBucket", "storage missing: no such bucket (S3 NoSuchBucket)"),
        (403, "QuotaExceeded", "storage full (S3 QuotaExceeded)"),
        (507, "XMinioStorageFull", "storage full (S3 XMinioStorageFull)"),
    ],
)
def test_refusals_of_the_whole_store_are_named_and_retryable(status, code, condition):
    """Like a full or read-only disk: a 503 naming the condition, not a 500."""
    error = translate(client_error(status, code, "no"), "put_object", "/x")
    assert type(error) is StorageRefused
    assert str(error) == f"{condition} in S3 put_object /x"


@pytest.mark.parametrize(
    "status, code",
    [
        (404, "NoSuchUpload"),
        (501, "NotImplemented"),
        (416, "InvalidRange"),
        (400, "InvalidArgument"),
    ],
)
def test_other_refusals_are_s3_errors_with_their_code(status, code):
    error = translate(client_error(status, code, "no"), "get_object", "/x")
    assert type(error) is S3Error
    assert (error.code, error.status) == (code, status)
    assert code in str(error)


def test_a_404_without_a_path_is_not_path_not_found():
    assert type(translate(client_error(404, "NoSuchKey"), "list_parts")) is S3Error


@pytest.mark.parametrize(
    "error",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        botocore.exceptions.ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
        ConnectionResetError("reset"),
    ],
)
def test_connection_failures_are_unavailable(error):
    assert isinstance(translate(error, "head_object", "/x"), StorageUnavailable)


def test_missing_credentials_are_a_named_refusal():
    error = translate(botocore.exceptions.NoCredentialsError(), "head_object", "/x")
    assert type(error) is StorageRefused
    assert str(error).startswith("storage permission denied (no usable S3 credentials: ")
    assert str(error).endswith(" in S3 head_object /x")


def test_programming_errors_are_not_translated():
    assert translate(ValueError("bug"), "head_object", "/x") is None


@pytest.mark.parametrize(
    "size, chunk, expected",
    [
        (0, 32 * MiB, []),
        (6 * MiB, 32 * MiB, [(0, 6 * MiB - 1)]),
        (64 * MiB, 32 * MiB, [(0, 32 * MiB - 1), (32 * MiB, 64 * MiB - 1)]),
        # A 1 MiB remainder joins the last piece instead of being a too-small part.
        (12 * MiB, 5 * MiB, [(0, 5 * MiB - 1), (5 * MiB, 12 * MiB - 1)]),
    ],
)
def test_copy_ranges(size, chunk, expected):
    assert copy_ranges(size, chunk) == expected


def test_copy_ranges_stay_within_s3_limits():
    for size, chunk in [(9 * GiB + 7, 5 * GiB), (5 * GiB + 1, 5 * GiB), (100 * MiB + 3, 5 * MiB)]:
        ranges = copy_ranges(size, chunk)
        assert ranges[0][0] == 0 and ranges[-1][1] == size - 1
        assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
        lengths = [last - first + 1 for first, last in ranges]
        assert all(5 * MiB <= length <= 5 * GiB for length in lengths), lengths


def test_known_directories_forget_below_and_stay_bounded():
    from registryd.storage.drivers.s3_tree import KnownDirectories

    known = KnownDirectories(limit=3)
    for key in ("root/a", "root/a/b", "root/ab"):
        known.add(key)
    assert "root/a" in known and "root/a/b" in known
    known.forget("root/a")
    assert "root/a" not in known and "root/a/b" not in known
    assert "root/ab" in known  # a sibling sharing the prefix is not below
    for key in ("k1", "k2", "k3"):
        known.add(key)
    assert len(known) == 3 and "root/ab" not in known  # least recently used went first

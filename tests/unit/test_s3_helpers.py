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


def test_fresh_directories_stay_fresh_until_forgotten():
    from registryd.storage.drivers.s3_tree import KnownDirectories

    known = KnownDirectories()
    known.add("r/a", fresh=True)
    known.add("r/b")
    assert known.is_fresh("r/a") and not known.is_fresh("r/b") and not known.is_fresh("r/c")
    known.add("r/a")  # seen again with children: still what this driver made it
    assert known.is_fresh("r/a")
    known.forget("r/a")
    known.add("r/a")  # found again after a delete: not fresh any more
    assert not known.is_fresh("r/a")


def test_recent_sizes_forget_below_and_stay_bounded():
    from registryd.storage.drivers.s3_tree import RecentSizes

    sizes = RecentSizes(limit=2)
    sizes.remember("r/a/data", 3)
    sizes.remember("r/ab", 4)
    sizes.forget("r/a")
    assert sizes.get("r/a/data") is None and sizes.get("r/ab") == 4
    sizes.remember("k1", 1)
    sizes.remember("k2", 2)
    assert len(sizes) == 2 and sizes.get("r/ab") is None


def delimited_page(keys, prefix, max_keys):
    """What ``ListObjectsV2(Prefix=prefix, Delimiter="/", MaxKeys=max_keys)``
    answers over ``keys``, as S3 orders and cuts it (by UTF-8 bytes, which
    is code point order)."""
    entries = {}
    for key in keys:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if "/" in rest:
            name = prefix + rest[: rest.index("/") + 1]
            entries[name] = {"Prefix": name}
        else:
            entries[key] = {"Key": key}
    names = sorted(entries)
    page = [entries[name] for name in names[:max_keys]]
    return {
        "Contents": [item for item in page if "Key" in item],
        "CommonPrefixes": [item for item in page if "Prefix" in item],
        "IsTruncated": len(names) > max_keys,
    }


def test_probe_state_reads_one_delimited_page_right():
    """Whatever the bucket holds and wherever the page is cut, the answer
    is the truth or UNDECIDED (then the driver asks the long way); it is
    UNDECIDED only when the page stopped before ``key/``'s place."""
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    from registryd.storage.drivers.s3_tree import ABSENT, DIRECTORY, FILE, UNDECIDED, probe_state

    name = st.text(alphabet="ab-./\u00e9", min_size=1, max_size=6)

    @settings(max_examples=400, deadline=None)
    @given(keys=st.sets(name, max_size=12), key=name, max_keys=st.integers(1, 5))
    @example(keys={"a-1", "a-2", "a/x"}, key="a", max_keys=1)
    @example(keys={"a", "a/x"}, key="a", max_keys=1)
    def check(keys, key, max_keys):
        if key.endswith("/"):
            return
        # the store is a tree: no key is also a directory
        keys = {k for k in keys if not any(other.startswith(k + "/") for other in keys)}
        state = probe_state(key, delimited_page(keys, key, max_keys))
        is_file = key in keys
        is_dir = any(k.startswith(key + "/") for k in keys)
        if state == FILE:
            assert is_file
        elif state == DIRECTORY:
            assert is_dir
        elif state == ABSENT:
            assert not is_file and not is_dir
        else:
            assert state == UNDECIDED
            assert not is_file

    check()


def test_probe_state_survives_odd_pages():
    """A page from a store that leaves fields out or sends empty ones."""
    from registryd.storage.drivers.s3_tree import ABSENT, UNDECIDED, probe_state

    assert probe_state("a", {}) == ABSENT
    assert probe_state("a", {"Contents": None, "CommonPrefixes": None}) == ABSENT
    assert probe_state("a", {"Contents": [{}], "CommonPrefixes": [{}], "IsTruncated": True}) == (
        UNDECIDED
    )

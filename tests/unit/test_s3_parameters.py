"""storage.s3: Distribution's keys, parsed as Distribution parses them,
refused by name when wrong (no store needed)."""

import pytest

from registryd.config import ConfigError, parse_config
from registryd.storage.drivers import InvalidParameter
from registryd.storage.drivers.s3_parameters import MiB, parse_parameters
from registryd.storage.factory import create_storage_driver

BASE = {"bucket": "registry", "region": "eu-west-1"}


def parse(**extra):
    return parse_parameters(dict(BASE, **extra))


def refused(key, **extra):
    with pytest.raises(InvalidParameter) as caught:
        parse_parameters(dict(BASE, **extra))
    assert caught.value.key == f"storage.s3.{key}"
    assert str(caught.value).startswith(f"storage.s3.{key}: ")
    return str(caught.value)


def test_defaults_are_distributions():
    params = parse()
    assert (params.bucket, params.region, params.endpoint) == ("registry", "eu-west-1", None)
    assert params.chunk_size == 10 * MiB
    assert params.copy_chunk_size == params.copy_threshold_size == 32 * MiB
    assert params.copy_max_concurrency == 100
    assert params.secure and params.v4auth
    assert not (params.force_path_style or params.encrypt or params.skip_verify)
    assert params.root == ""
    assert params.storage_class == "STANDARD"
    assert params.object_acl is None
    assert params.access_key is None and params.secret_key is None


def test_distribution_sample_section():
    """The s3 section of Distribution's about-configuration.md sample."""
    params = parse_parameters(
        {
            "accesskey": "awsaccesskey",
            "secretkey": "awssecretkey",
            "region": "us-west-1",
            "regionendpoint": "http://myobjects.local",
            "forcepathstyle": True,
            "accelerate": False,
            "bucket": "bucketname",
            "encrypt": True,
            "keyid": "mykeyid",
            "secure": True,
            "v4auth": True,
            "chunksize": 5242880,
            "multipartcopychunksize": 33554432,
            "multipartcopymaxconcurrency": 100,
            "multipartcopythresholdsize": 33554432,
            "rootdirectory": "/s3/object/name/prefix",
            "usefipsendpoint": False,
            "loglevel": "debug",
        }
    )
    assert params.endpoint == "http://myobjects.local"
    assert params.root == "s3/object/name/prefix"
    assert params.key_id == "mykeyid" and params.encrypt
    assert params.chunk_size == 5 * MiB
    assert (params.access_key, params.secret_key) == ("awsaccesskey", "awssecretkey")


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        ("true", True),
        ("1", True),
        ("T", True),
        (False, False),
        ("false", False),
        ("0", False),
    ],
)
def test_booleans_as_go_parses_them(value, expected):
    assert parse(forcepathstyle=value).force_path_style is expected


@pytest.mark.parametrize("key", ["forcepathstyle", "secure", "encrypt", "skipverify", "v4auth"])
def test_bad_booleans_named(key):
    assert "expected true or false" in refused(key, **{key: "maybe"})


@pytest.mark.parametrize("value, expected", [(5 * MiB, 5 * MiB), ("6291456", 6 * MiB)])
def test_chunksize(value, expected):
    assert parse(chunksize=value).chunk_size == expected


@pytest.mark.parametrize("value", [5 * MiB - 1, 0, "big", 2.5, True, 6 * 1024 * MiB])
def test_chunksize_refused(value):
    refused("chunksize", chunksize=value)


def test_bucket_required_and_checked():
    with pytest.raises(InvalidParameter) as caught:
        parse_parameters({"region": "us-east-1"})
    assert caught.value.key == "storage.s3.bucket"
    assert "required" in str(caught.value)
    refused("bucket", bucket="no/slashes")


def test_region_required_without_endpoint():
    with pytest.raises(InvalidParameter) as caught:
        parse_parameters({"bucket": "bkt"})
    assert caught.value.key == "storage.s3.region"
    params = parse_parameters({"bucket": "bkt", "regionendpoint": "http://127.0.0.1:9000"})
    assert params.region == "us-east-1"
    refused("region", region="Not A Region")


@pytest.mark.parametrize(
    "endpoint, secure, expected",
    [
        ("http://minio.local:9000", True, "http://minio.local:9000"),
        ("https://s3.example.com/", True, "https://s3.example.com"),
        ("minio.local:9000", True, "https://minio.local:9000"),
        ("minio.local:9000", False, "http://minio.local:9000"),
    ],
)
def test_regionendpoint(endpoint, secure, expected):
    assert parse(regionendpoint=endpoint, secure=secure).endpoint == expected


@pytest.mark.parametrize("endpoint", ["ftp://host", "http://host/path", "http://", "http://a b"])
def test_bad_regionendpoint(endpoint):
    refused("regionendpoint", regionendpoint=endpoint)


def test_credentials_come_in_pairs():
    assert "secretkey" in refused("secretkey", accesskey="id")
    refused("accesskey", secretkey="secret")
    # Distribution's "empty strings: use the instance's credentials".
    params = parse(accesskey="", secretkey="")
    assert params.access_key is None and params.secret_key is None


def test_credentials_are_not_shown():
    assert "hunter2" not in repr(parse(accesskey="id", secretkey="hunter2"))


def test_storage_class_and_acl():
    assert parse(storageclass="reduced_redundancy").storage_class == "REDUCED_REDUNDANCY"
    assert parse(storageclass="NONE").storage_class == "NONE"
    refused("storageclass", storageclass="DEEP_ARCHIVE")
    assert parse(objectacl="bucket-owner-full-control").object_acl == "bucket-owner-full-control"
    refused("objectacl", objectacl="everyone")


def test_loglevel_accepted():
    for value in ("off", "debug", False):
        parse(loglevel=value)
    refused("loglevel", loglevel="verbose")


def test_registryd_limits():
    params = parse(maxrequests=8, requesttimeout="2.5s")
    assert (params.max_requests, params.request_timeout) == (8, 2.5)
    assert parse(requesttimeout=10).request_timeout == 10.0
    assert parse(requesttimeout="500ms").request_timeout == 0.5
    refused("maxrequests", maxrequests=0)
    refused("requesttimeout", requesttimeout="soon")
    refused("requesttimeout", requesttimeout=0)


def test_rootdirectory():
    assert parse(rootdirectory="/a/b/").root == "a/b"
    assert parse(rootdirectory="/").root == ""
    refused("rootdirectory", rootdirectory="/a/../b")


def test_unknown_and_unsupported_keys():
    message = refused("rootdir", rootdir="/x")
    assert "unknown parameter" in message and "rootdirectory" in message
    assert "not supported by registryd yet" in refused(
        "redirectendpoint", redirectendpoint="https://cdn.example.com"
    )


def test_errors_reach_the_operator_with_the_key_path():
    config = parse_config(
        {
            "version": "0.1",
            "storage": {"s3": {"bucket": "bkt", "region": "us-east-1", "chunksize": 1}},
        }
    )
    with pytest.raises(ConfigError) as caught:
        create_storage_driver(config.storage)
    assert str(caught.value).startswith("storage.s3.chunksize: must be between")


def test_driver_made_without_contacting_the_store():
    """Start-up does not need the store: a registry whose store is down
    starts, and answers 503 until the store is back."""
    config = parse_config(
        {
            "version": "0.1",
            "storage": {
                "s3": {
                    "bucket": "bkt",
                    "regionendpoint": "http://127.0.0.1:9",
                    "accesskey": "a",
                    "secretkey": "s",
                    "forcepathstyle": True,
                }
            },
        }
    )
    driver = create_storage_driver(config.storage)
    assert driver.name == "s3"
    driver.close()

"""The ``storage.s3`` configuration section, checked and typed.

The keys are CNCF Distribution's (``about-configuration.md``,
``storage-drivers-s3.md``), parsed as leniently as Distribution parses them
(booleans and integers may be strings, as Go's ``strconv`` reads them) so
that an existing ``config.yml`` works unchanged.  What registryd cannot do
is refused by name rather than ignored, and two keys are registryd's own:
``maxrequests`` and ``requesttimeout`` bound the S3 requests a node makes
at once and how long one may take, so that an unreachable store gives
clients a prompt 503 instead of requests piling up.

Credentials: ``accesskey`` and ``secretkey`` when both are given; otherwise
botocore's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, ``~/.aws``, container and instance roles), which is
what Distribution does with the AWS SDK.
"""

import re

import attr

from registryd.config.errors import ConfigError
from registryd.config.types import Duration
from registryd.storage.drivers import InvalidParameter, check_parameters

MiB = 1024 * 1024
GiB = 1024 * MiB

#: S3's smallest part (all parts of a multipart upload but the last).
MIN_CHUNK_SIZE = 5 * MiB
#: S3's largest part, and the largest single copy.
MAX_CHUNK_SIZE = 5 * GiB
DEFAULT_CHUNK_SIZE = 2 * MIN_CHUNK_SIZE  # Distribution's default
DEFAULT_COPY_CHUNK_SIZE = 32 * MiB
DEFAULT_COPY_MAX_CONCURRENCY = 100
DEFAULT_COPY_THRESHOLD_SIZE = 32 * MiB
DEFAULT_MAX_REQUESTS = 32
DEFAULT_REQUEST_TIMEOUT = 30.0

#: Distribution's storage classes; "NONE" sends no storage class at all.
STORAGE_CLASSES = (
    "NONE",
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "OUTPOSTS",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
)
OBJECT_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)
LOG_LEVELS = (
    "off",
    "debug",
    "debugwithsigning",
    "debugwithhttpbody",
    "debugwithrequestretries",
    "debugwithrequesterrors",
    "debugwitheventstreambody",
)

#: Keys of Distribution's s3 driver that registryd does not implement yet.
NOT_YET = frozenset({"redirectendpoint"})

KNOWN = (
    frozenset(
        {
            "accesskey",
            "secretkey",
            "region",
            "regionendpoint",
            "forcepathstyle",
            "bucket",
            "encrypt",
            "keyid",
            "secure",
            "skipverify",
            "v4auth",
            "chunksize",
            "multipartcopychunksize",
            "multipartcopymaxconcurrency",
            "multipartcopythresholdsize",
            "rootdirectory",
            "storageclass",
            "useragent",
            "usedualstack",
            "accelerate",
            "usefipsendpoint",
            "objectacl",
            "loglevel",
            # registryd's own
            "maxrequests",
            "requesttimeout",
        }
    )
    | NOT_YET
)

_SECTION = "storage.s3"
_REGION = re.compile(r"[a-z0-9][a-z0-9-]*")
# Go's strconv.ParseBool, which Distribution uses for string values.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@attr.s(frozen=True, slots=True)
class S3Parameters:
    """Everything the s3 driver needs, validated."""

    bucket = attr.ib()
    region = attr.ib(default="us-east-1")
    endpoint = attr.ib(default=None)  # full URL, or None for AWS
    access_key = attr.ib(default=None, repr=False)
    secret_key = attr.ib(default=None, repr=False)
    force_path_style = attr.ib(default=False)
    secure = attr.ib(default=True)
    skip_verify = attr.ib(default=False)
    v4auth = attr.ib(default=True)
    encrypt = attr.ib(default=False)
    key_id = attr.ib(default=None)
    root = attr.ib(default="")  # key prefix without leading or trailing "/"
    chunk_size = attr.ib(default=DEFAULT_CHUNK_SIZE)
    copy_chunk_size = attr.ib(default=DEFAULT_COPY_CHUNK_SIZE)
    copy_max_concurrency = attr.ib(default=DEFAULT_COPY_MAX_CONCURRENCY)
    copy_threshold_size = attr.ib(default=DEFAULT_COPY_THRESHOLD_SIZE)
    storage_class = attr.ib(default="STANDARD")
    object_acl = attr.ib(default=None)  # None: send no ACL (the bucket's default)
    user_agent = attr.ib(default=None)
    dual_stack = attr.ib(default=False)
    accelerate = attr.ib(default=False)
    fips = attr.ib(default=False)
    max_requests = attr.ib(default=DEFAULT_MAX_REQUESTS)
    request_timeout = attr.ib(default=DEFAULT_REQUEST_TIMEOUT)


def _key(name):
    return f"{_SECTION}.{name}"


def _string(section, name, default=None, empty_ok=True):
    value = section.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidParameter(_key(name), f"expected a string, got {value!r}")
    if not value and not empty_ok:
        raise InvalidParameter(_key(name), "must not be empty")
    return value


def _boolean(section, name, default):
    value = section.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip() in _TRUE + _FALSE:
        return value.strip() in _TRUE
    raise InvalidParameter(_key(name), f"expected true or false, got {value!r}")


def _integer(section, name, default, low, high):
    value = section.get(name)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise InvalidParameter(_key(name), f"expected an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(_key(name), f"expected an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidParameter(_key(name), f"must be between {low} and {high}, got {value}")
    return value


def _seconds(section, name, default):
    """A duration by registryd's one rule (a number or "30" is seconds,
    "500ms" and "1m30s" are Go durations), in (0, 3600] seconds."""
    value = section.get(name)
    if value is None:
        return default
    try:
        value = Duration(numbers="seconds").check(value, _key(name))
    except ConfigError as error:
        raise InvalidParameter(error.key, error.problem) from None
    if not 0 < value <= 3600:
        raise InvalidParameter(
            _key(name), f"must be more than 0 and at most 3600 seconds, got {value:g}"
        )
    return value


def _choice(section, name, choices, default, fold=str.lower):
    value = _string(section, name)
    if value is None:
        return default
    for choice in choices:
        if fold(value) == fold(choice):
            return choice
    raise InvalidParameter(_key(name), f"expected one of {', '.join(choices)}, got {value!r}")


def _endpoint(section, secure):
    """``regionendpoint`` as a URL; without a scheme, ``secure`` picks it."""
    value = _string(section, "regionendpoint", default="")
    if not value:
        return None
    if "://" not in value:
        value = ("https://" if secure else "http://") + value
    match = re.fullmatch(r"(https?)://([^/?#\s]+)(/[^?#\s]*)?", value)
    if match is None or (match.group(3) not in (None, "", "/")):
        raise InvalidParameter(
            _key("regionendpoint"),
            f"expected a URL such as https://s3.example.com:9000 (no path), got {value!r}",
        )
    return f"{match.group(1)}://{match.group(2)}"


def parse_parameters(parameters):
    """Check a ``storage.s3`` section; return :class:`S3Parameters`.

    :raises InvalidParameter: naming the first bad key.
    """
    section = check_parameters("s3", parameters, KNOWN)
    for name in sorted(section):
        if name in NOT_YET:
            raise InvalidParameter(_key(name), "not supported by registryd yet")
    bucket = _string(section, "bucket", default="")
    if not bucket:
        raise InvalidParameter(_key("bucket"), "required: the bucket to keep the registry in")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", bucket):
        raise InvalidParameter(_key("bucket"), f"not a valid bucket name: {bucket!r}")
    secure = _boolean(section, "secure", True)
    endpoint = _endpoint(section, secure)
    region = _string(section, "region", default="")
    if not region:
        if endpoint is None:
            raise InvalidParameter(_key("region"), "required: the AWS region of the bucket")
        region = "us-east-1"  # what S3-compatible stores expect unless told otherwise
    if not _REGION.fullmatch(region):
        raise InvalidParameter(_key("region"), f"not a region name: {region!r}")
    access_key = _string(section, "accesskey", default="") or None
    secret_key = _string(section, "secretkey", default="") or None
    if (access_key is None) != (secret_key is None):
        given, missing = ("accesskey", "secretkey") if access_key else ("secretkey", "accesskey")
        raise InvalidParameter(
            _key(missing),
            f"required when {given} is given (or leave both out to use the "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment or an instance role)",
        )
    root = _string(section, "rootdirectory", default="")
    if "\x00" in root or any(part in (".", "..") for part in root.split("/")):
        raise InvalidParameter(_key("rootdirectory"), f"not a usable key prefix: {root!r}")
    root = "/".join(part for part in root.split("/") if part)
    log_level = section.get("loglevel")
    if log_level is not None and log_level is not False:
        _choice(section, "loglevel", LOG_LEVELS, "off")  # accepted; botocore logs via logging
    encrypt = _boolean(section, "encrypt", False)
    key_id = _string(section, "keyid", default="") or None
    acl = _choice(section, "objectacl", OBJECT_ACLS, None)
    return S3Parameters(
        bucket=bucket,
        region=region,
        endpoint=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        force_path_style=_boolean(section, "forcepathstyle", False),
        secure=secure,
        skip_verify=_boolean(section, "skipverify", False),
        v4auth=_boolean(section, "v4auth", True),
        encrypt=encrypt,
        key_id=key_id if encrypt else None,
        root=root,
        chunk_size=_integer(
            section, "chunksize", DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE
        ),
        copy_chunk_size=_integer(
            section,
            "multipartcopychunksize",
            DEFAULT_COPY_CHUNK_SIZE,
            MIN_CHUNK_SIZE,
            MAX_CHUNK_SIZE,
        ),
        copy_max_concurrency=_integer(
            section, "multipartcopymaxconcurrency", DEFAULT_COPY_MAX_CONCURRENCY, 1, 10_000
        ),
        copy_threshold_size=_integer(
            section, "multipartcopythresholdsize", DEFAULT_COPY_THRESHOLD_SIZE, 0, MAX_CHUNK_SIZE
        ),
        storage_class=_choice(section, "storageclass", STORAGE_CLASSES, "STANDARD", fold=str.upper),
        object_acl=acl,
        user_agent=_string(section, "useragent", default="") or None,
        dual_stack=_boolean(section, "usedualstack", False),
        accelerate=_boolean(section, "accelerate", False),
        fips=_boolean(section, "usefipsendpoint", False),
        max_requests=_integer(section, "maxrequests", DEFAULT_MAX_REQUESTS, 1, 1024),
        request_timeout=_seconds(section, "requesttimeout", DEFAULT_REQUEST_TIMEOUT),
    )

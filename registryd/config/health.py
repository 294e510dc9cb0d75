"""The ``health`` section: Distribution's periodic checks (storage driver,
file, HTTP, TCP) feeding /health, and 503s while one fails.

A zero interval, timeout or threshold means the default, as in
Distribution.
"""

import attr

from registryd.config.errors import ConfigError
from registryd.config.schema import (
    ListOf,
    SectionOf,
    as_tuple,
    derived,
    section,
    setting,
)
from registryd.config.types import (
    HTTPURL,
    NON_NEGATIVE,
    Boolean,
    Custom,
    Duration,
    Headers,
    Integer,
    String,
    TCPAddress,
    zero_is,
)

#: Seconds an HTTP or TCP health check may take when no timeout is set.
DEFAULT_CHECK_TIMEOUT = 5.0
DEFAULT_CHECK_INTERVAL = 10.0


def _at_least_one(count):
    return max(1, count)


def _interval(doc):
    return setting(
        "interval",
        Duration(minimum=0.1),
        doc,
        default=DEFAULT_CHECK_INTERVAL,
        convert=zero_is(DEFAULT_CHECK_INTERVAL),
    )


def _timeout():
    return setting(
        "timeout",
        Duration(minimum=0.001),
        "How long the check may take.",
        default=DEFAULT_CHECK_TIMEOUT,
        convert=zero_is(DEFAULT_CHECK_TIMEOUT),
    )


def _threshold():
    return setting(
        "threshold",
        NON_NEGATIVE,
        "Failures in a row before the node is unhealthy.",
        default=1,
        convert=_at_least_one,
    )


@section()
@attr.s(frozen=True, slots=True)
class FileCheckConfig:
    """health.file[]: unhealthy while ``path`` exists."""

    path = setting(
        "file",
        String(nonempty=True, empty="expected a file path, got ''"),
        "Unhealthy while this file exists.",
        required="required: the path whose existence fails the check",
    )
    interval = _interval("How often to look.")


def _status_code(value, path):
    if not 100 <= Integer().check(value, path) <= 599:
        raise ConfigError(path, f"expected an HTTP status code, got {value}")
    return value


@section()
@attr.s(frozen=True, slots=True)
class HTTPCheckConfig:
    """health.http[]: unhealthy when a HEAD of ``uri`` does not answer
    ``status_code`` within ``timeout``, ``threshold`` times in a row."""

    uri = setting(
        "uri", HTTPURL(), "The URL to HEAD.", required="required: the URL to check with HEAD"
    )
    headers = setting("headers", Headers(), "Request headers.", factory=dict)
    status_code = setting(
        "statuscode", Custom(_status_code, "HTTP status"), "The status expected.", default=200
    )
    timeout = _timeout()
    interval = _interval("How often to check.")
    threshold = _threshold()


def _finish_tcp(found):
    host, port = TCPAddress().split(found.values["addr"], found.path_of("addr"))
    return found.build(host=host, port=port)


@section(finish=_finish_tcp)
@attr.s(frozen=True, slots=True)
class TCPCheckConfig:
    """health.tcp[]: unhealthy when ``addr`` (host:port) does not accept a
    connection within ``timeout``, ``threshold`` times in a row."""

    addr = setting(
        "addr",
        TCPAddress(),
        "The host:port to connect to.",
        required="required: the host:port to connect to",
    )
    host = derived(written="health.tcp[].addr")
    port = derived(written="health.tcp[].addr")
    timeout = _timeout()
    interval = _interval("How often to check.")
    threshold = _threshold()


@section()
@attr.s(frozen=True, slots=True)
class HealthConfig:
    """health: periodic checks feeding /health (and 503s while failing)."""

    #: health.storagedriver.enabled: probe the storage driver periodically.
    storagedriver = setting(
        "storagedriver.enabled",
        Boolean(),
        "Write and read back a file in the storage periodically.",
        default=False,
    )
    interval = setting(
        "storagedriver.interval",
        Duration(minimum=0.1),
        "How often.",
        default=DEFAULT_CHECK_INTERVAL,
        convert=zero_is(DEFAULT_CHECK_INTERVAL),
    )
    #: consecutive failures before the driver counts as unhealthy
    threshold = setting(
        "storagedriver.threshold",
        NON_NEGATIVE,
        "Failures in a row before the node is unhealthy.",
        default=1,
        convert=_at_least_one,
    )
    files = setting(
        "file", ListOf(SectionOf(FileCheckConfig)), "File checks.", default=(), converter=as_tuple
    )
    http = setting(
        "http", ListOf(SectionOf(HTTPCheckConfig)), "HTTP checks.", default=(), converter=as_tuple
    )
    tcp = setting(
        "tcp", ListOf(SectionOf(TCPCheckConfig)), "TCP checks.", default=(), converter=as_tuple
    )

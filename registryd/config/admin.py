"""registryd's own administration sections: ``gc`` (online garbage
collection) and ``manhole`` (an SSH-reachable Python prompt).

The manhole's endpoint string and key file are checked when the service
is made (``registryd.runtime.tap``); paths are made absolute here, against the
start-up directory, as the filesystem driver's root is.
"""

import os

import attr

from registryd.config.errors import ConfigError
from registryd.config.schema import section, setting
from registryd.config.types import Boolean, Custom, Duration, FilePath, Integer, Pattern, String

#: The manhole's default endpoint: loopback only.
DEFAULT_MANHOLE_LISTEN = "tcp:5022:interface=127.0.0.1"
#: Where the manhole's host key is kept (created on first start).
DEFAULT_MANHOLE_HOST_KEY = "./manhole_host_key"
#: How long one statement typed in the manhole may compute before it is stopped.
DEFAULT_MANHOLE_TIME_LIMIT = 30.0
#: How much the daemon may grow while manhole statements run (bytes).
DEFAULT_MANHOLE_MEMORY_LIMIT = 512 * 1024 * 1024


def _gc_interval(value, path):
    """0 (or absent): no schedule; else at least a second."""
    seconds = Duration().check(value, path)
    if 0 < seconds < 1:
        raise ConfigError(path, f"must be 0 (never) or at least 1s, got {value!r}")
    return seconds or None


@section()
@attr.s(frozen=True, slots=True)
class GCConfig:
    """gc (registryd's own): online garbage collection."""

    #: seconds: blobs (and links, untagged manifests) younger than this stay
    grace_period = setting(
        "graceperiod",
        Duration(),
        "Blobs, links and manifests younger than this stay.",
        default=3600.0,
    )
    #: seconds between scheduled online collections; None: never
    interval = setting(
        "interval",
        Custom(_gc_interval, "duration"),
        "Time between online collections; 0: never.",
        default=None,
    )
    delete_untagged = setting(
        "deleteuntagged", Boolean(), "Also remove manifests no tag reaches.", default=False
    )
    dry_run = setting("dryrun", Boolean(), "Scheduled runs only report.", default=False)


def _endpoint_string(value, path):
    if not String().check(value, path).strip():
        raise ConfigError(
            path, "expected a Twisted endpoint string such as tcp:5022:interface=127.0.0.1"
        )
    return value


def _finish_manhole(found):
    host_key = found.values.get("host_key") or os.path.abspath(DEFAULT_MANHOLE_HOST_KEY)
    return found.build(host_key=host_key)


@section(finish=_finish_manhole)
@attr.s(frozen=True, slots=True)
class ManholeConfig:
    """manhole (registryd's own): an SSH-reachable Python prompt in the daemon."""

    #: absolute path of an OpenSSH authorized_keys file
    authorized_keys = setting(
        "authorized_keys",
        FilePath(),
        "The public keys allowed to log in.",
        required="required: an OpenSSH authorized_keys file with the keys allowed to log in",
    )
    listen = setting(
        "listen",
        Custom(_endpoint_string, "Twisted endpoint"),
        "Where SSH listens.",
        default=DEFAULT_MANHOLE_LISTEN,
    )
    user = setting(
        "user",
        Pattern(
            r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,31}",
            "expected a user name of letters, digits, '_', '.', '-', got {value!r}",
        ),
        "The SSH user name.",
        default="admin",
    )
    #: absolute path; None: DEFAULT_MANHOLE_HOST_KEY
    host_key = setting(
        "host_key",
        FilePath(),
        "The server's key, generated if missing.",
        default=None,
        shown=DEFAULT_MANHOLE_HOST_KEY,
    )
    #: Seconds one typed statement may compute (waiting on a helper excluded).
    timelimit = setting(
        "timelimit",
        Duration(minimum=0.1),
        "A statement computing longer is stopped.",
        default=DEFAULT_MANHOLE_TIME_LIMIT,
    )
    #: Bytes the daemon's memory may grow by while typed statements run.
    memorylimit = setting(
        "memorylimit",
        Integer(1024 * 1024, "expected at least {minimum} bytes, got {value}"),
        "Bytes the daemon may grow by while statements run.",
        default=DEFAULT_MANHOLE_MEMORY_LIMIT,
    )

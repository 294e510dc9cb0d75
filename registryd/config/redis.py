"""The ``redis`` section: where the nodes' shared state lives
(``registryd.shared.redis_state``).

Distribution 2.8's keys (``addr``, ``pool``) and 3's (``addrs``,
``username``, ``poolsize``...) both work.  Several ``addrs`` are a Redis
Cluster, unless ``mastername`` names the master those Sentinels watch.
Without the section a node keeps its state in process, as one node needs.
"""

import attr

from registryd.config.errors import ConfigError
from registryd.config.schema import ListOf, SectionOf, as_tuple, extra, ignored, section, setting
from registryd.config.types import (
    NON_NEGATIVE,
    POSITIVE,
    Boolean,
    Choice,
    Custom,
    Duration,
    FilePath,
    Integer,
    String,
    TCPAddress,
)


def _metadata_cache_setting(value, path):
    """auto, on or off; YAML reads a bare ``on``/``off`` as a boolean, so
    true and false are taken for them."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return Choice("auto", "on", "off").check(value, path)


def _finish_tls(found):
    if found.extras.get("enabled") is False:
        return None
    if ("certificate" in found.values) != ("key" in found.values):
        raise ConfigError(found.path, "certificate and key go together")
    return found.build()


@section(
    extra("enabled", Boolean(), "false: no TLS (Distribution 2.8's switch)."), finish=_finish_tls
)
@attr.s(frozen=True, slots=True)
class RedisTLSConfig:
    """redis.tls: TLS to Redis, with an optional client certificate."""

    certificate = setting(
        "certificate", FilePath("certificate"), "Client certificate (PEM).", default=None
    )
    key = setting("key", FilePath("key"), "The client certificate's key (PEM).", default=None)
    #: CA files; empty: the system's
    rootcas = setting(
        "rootcas",
        ListOf(FilePath("CA certificate")),
        "CA certificates to trust.",
        default=(),
        converter=as_tuple,
    )


def _finish_redis(found):
    extras = found.extras
    if "addrs" in extras:
        addrs = [
            TCPAddress().split(item, f"{found.path_of('addrs')}[{index}]")
            for index, item in enumerate(extras["addrs"])
        ]
    elif "addr" in extras:
        addrs = [TCPAddress().split(extras["addr"], found.path_of("addr"))]
    else:
        raise ConfigError(
            found.path,
            "required: addr (one server) or addrs (a Cluster, or Sentinels with mastername)",
        )
    changes = dict(addrs=tuple(addrs))
    for key in ("pool.maxactive", "maxactiveconns", "poolsize"):
        if key in extras:
            changes["pool_size"] = extras[key]
    for key in ("pool.idletimeout", "connmaxidletime"):
        if key in extras:
            changes["idle_timeout"] = extras[key]
    return found.build(**changes)


@section(
    extra("addr", TCPAddress(), "One Redis server, host:port (Distribution 2.8)."),
    extra(
        "addrs",
        ListOf(TCPAddress(), nonempty=True),
        "Redis servers: one; a Cluster's; or Sentinels' with mastername (Distribution 3).",
    ),
    extra("pool.maxactive", POSITIVE, "Connections (and threads using them) at most (2.8)."),
    extra("pool.idletimeout", Duration(), "Idle connections are checked after this (2.8)."),
    extra("poolsize", POSITIVE, "Connections (and threads using them) at most."),
    extra("maxactiveconns", POSITIVE, "Same as poolsize."),
    extra("connmaxidletime", Duration(), "Idle connections are checked after this."),
    ignored("pool.maxidle", Integer(), "go-redis tuning without an equivalent here."),
    ignored("maxidleconns", Integer(), "go-redis tuning without an equivalent here."),
    ignored("minidleconns", Integer(), "go-redis tuning without an equivalent here."),
    ignored("clientname", String(), "go-redis tuning without an equivalent here."),
    ignored("protocol", Integer(), "go-redis tuning without an equivalent here."),
    finish=_finish_redis,
)
@attr.s(frozen=True, slots=True)
class RedisConfig:
    """redis: the nodes' shared state (login brake, upload locks, push guard, job leases)."""

    #: ((host, port), ...), from addr or addrs
    addrs = attr.ib(default=(), converter=as_tuple)
    username = setting("username", String(), "ACL user.", default=None)
    password = setting("password", String(), "Password.", default=None, secret=True)
    db = setting("db", NON_NEGATIVE, "Database number (one server or Sentinel).", default=0)
    mastername = setting(
        "mastername", String(), "With Sentinels in addrs: the master's name.", default=None
    )
    tls = setting("tls", SectionOf(RedisTLSConfig), "TLS to Redis.", default=None)
    dial_timeout = setting(
        "dialtimeout", Duration(minimum=0.001), "Connecting may take this long.", default=5.0
    )
    read_timeout = setting(
        "readtimeout", Duration(minimum=0.001), "An answer may take this long.", default=3.0
    )
    write_timeout = setting(
        "writetimeout", Duration(minimum=0.001), "Sending may take this long.", default=3.0
    )
    #: auto | on | off: whether reads consult the nodes' metadata cache
    metadata_cache = setting(
        "metadatacache",
        Custom(_metadata_cache_setting, "auto | on | off"),
        "Reads consult the nodes' metadata cache: auto: when the storage driver's "
        "are remote (s3, third-party drivers; not filesystem, inmemory); on; off.",
        default="auto",
        own=True,
    )
    pool_size = attr.ib(default=8)
    idle_timeout = attr.ib(default=300.0)

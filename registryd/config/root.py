"""The whole configuration: the top-level keys, and the sections under them.

Like Distribution, the version is checked before anything else: a future
format is refused as a whole, not key by key.  Then every key is read in
document order and every problem collected (:class:`Parser`), so
:func:`parse_config` reports all of a file's mistakes at once.
"""

import functools
import os
import re

import attr

from registryd.config.admin import GCConfig, ManholeConfig
from registryd.config.auth import AuthConfig
from registryd.config.errors import ConfigError, describe, join
from registryd.config.health import HealthConfig
from registryd.config.http import HTTPConfig
from registryd.config.lifecycle import LifecycleConfig
from registryd.config.log import LOG_LEVELS, LogConfig
from registryd.config.notifications import NotificationsConfig
from registryd.config.proxy import ProxyConfig
from registryd.config.redis import RedisConfig
from registryd.config.schema import (
    ListOf,
    Parser,
    SectionOf,
    derived,
    extra,
    not_yet,
    section,
    setting,
    written_keys,
)
from registryd.config.storage import StorageConfig
from registryd.config.types import (
    HTTPURL,
    POSITIVE,
    Choice,
    Custom,
    Integer,
    String,
)
from registryd.config.ui import UIConfig
from registryd.config.validation import ValidationConfig

#: Most worker processes accepted (a typo guard, not a tuning limit).
MAX_WORKERS = 256


def parse_workers(value, path="workers"):
    """workers: how many processes serve HTTP, an integer >= 1 or ``auto``
    (one per CPU).  Also the ``--workers`` option's value (a string)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return max(1, os.cpu_count() or 1)
        # ASCII digits only, and few: str.isdigit takes '\u00b2', and int()
        # raises ValueError beyond 4300 digits
        if not re.fullmatch(r"[0-9]{1,20}", text):
            raise ConfigError(
                path, f"expected a number of processes or 'auto', got {value[:100]!r}"
            )
        value = int(text)
    Integer().check(value, path)
    if not 1 <= value <= MAX_WORKERS:
        raise ConfigError(path, f"expected 1 to {MAX_WORKERS} processes, got {value}")
    return value


@attr.s(frozen=True, slots=True)
class ListingConfig:
    """Page limits of the listing endpoints (Distribution 3's keys
    catalog.maxentries and tags.maxtags); None: no limit beyond registryd's
    defaults."""

    #: catalog.maxentries: a catalog request for more (n) is refused with
    #: PAGINATION_NUMBER_INVALID; also the page size when n is not given.
    max_catalog_entries = derived(default=None, written="catalog.maxentries")
    #: tags.maxtags: at most this many tags per response, then a Link.
    max_tags = derived(default=None, written="tags.maxtags")


def _middleware_name(value, path):
    if String().check(value, path) != "redirect":
        raise ConfigError(
            path, f"{value!r} is not supported by registryd yet (supported here: redirect)"
        )
    return value


def _finish_middleware(found):
    if "baseurl" not in found.values or found.values["baseurl"] is None:
        raise ConfigError(
            join(found.path, "options.baseurl"), "required: the URL that serves the storage's files"
        )
    return found.build()


@section(finish=_finish_middleware)
@attr.s(frozen=True, slots=True, eq=False)
class StorageMiddleware:
    """middleware.storage[]: of Distribution's storage middlewares, ``redirect``."""

    name = setting(
        "name",
        Custom(_middleware_name, "redirect"),
        "The middleware: redirect.",
        required="required: the middleware's name",
    )
    baseurl = setting(
        "options.baseurl",
        HTTPURL(),
        "Blob GETs answer 307 to this URL plus the blob's path in the layout.",
        default=None,
        convert=lambda url: url.rstrip("/"),
    )


def _finish_config(found):
    values = dict(found.values)
    raw_log = found.raw.get("log")
    if "loglevel" in found.extras and not (isinstance(raw_log, dict) and raw_log.get("level")):
        # Distribution's deprecated spelling of log.level; log.level wins.
        values["log"] = attr.evolve(values.get("log", LogConfig()), level=found.extras["loglevel"])
    redirects = found.extras.get("middleware.storage", [])
    if redirects:
        values["storage"] = attr.evolve(values["storage"], redirect_base_url=redirects[0].baseurl)
    values["listing"] = ListingConfig(
        found.extras.get("catalog.maxentries"), found.extras.get("tags.maxtags")
    )
    return Config(**values)


@section(
    extra(
        "version",
        Custom(lambda value, path: value, "0.1"),
        "The file format: 0.1.",
        required="required: add 'version: 0.1'",
    ),
    extra("loglevel", Choice(*LOG_LEVELS), "Distribution's deprecated log.level."),
    extra(
        "catalog.maxentries", POSITIVE, "Most repositories per catalog page (and the page size)."
    ),
    extra("tags.maxtags", POSITIVE, "Most tags per response, then a Link header."),
    extra(
        "middleware.storage",
        ListOf(
            SectionOf(StorageMiddleware),
            most=1,
            too_many="only one redirect middleware can be configured",
        ),
        "Storage middlewares: only redirect (a web server or CDN serving blobs).",
    ),
    not_yet("middleware.registry"),
    not_yet("middleware.repository"),
    not_yet("compatibility"),
    not_yet("policy"),
    not_yet("reporting"),
    finish=_finish_config,
)
@attr.s(frozen=True, slots=True)
class Config:
    """A whole, validated configuration."""

    log = setting("log", SectionOf(LogConfig), "Logging.", factory=LogConfig)
    storage = setting(
        "storage",
        SectionOf(StorageConfig),
        "The storage driver and its settings.",
        factory=StorageConfig,
        required="required: configure exactly one storage driver (e.g. storage.filesystem)",
    )
    http = setting("http", SectionOf(HTTPConfig), "Listeners and responses.", factory=HTTPConfig)
    validation = setting(
        "validation", SectionOf(ValidationConfig), "Manifest checks.", factory=ValidationConfig
    )
    health = setting("health", SectionOf(HealthConfig), "Health checks.", factory=HealthConfig)
    notifications = setting(
        "notifications", SectionOf(NotificationsConfig), "Webhooks.", factory=NotificationsConfig
    )
    gc = setting(
        "gc", SectionOf(GCConfig), "Online garbage collection.", factory=GCConfig, own=True
    )
    #: a ManholeConfig when configured
    manhole = setting(
        "manhole",
        SectionOf(ManholeConfig),
        "An SSH Python prompt in the daemon.",
        default=None,
        own=True,
    )
    #: The auth section (registryd.config.auth.AuthConfig), or None: no
    #: authentication, everyone may do anything.
    auth = setting("auth", SectionOf(AuthConfig), "Authentication and access rules.", default=None)
    #: Processes serving HTTP (registryd.runtime.workers); 1: this process alone.
    workers = setting(
        "workers",
        Custom(parse_workers, "integer or auto"),
        "Processes serving HTTP: a number, or auto (one per CPU).",
        default=1,
        own=True,
    )
    #: catalog.maxentries and tags.maxtags
    listing = derived(factory=ListingConfig, written="catalog.maxentries, tags.maxtags")
    #: A ProxyConfig when registryd is a pull-through cache, else None.
    proxy = setting(
        "proxy", SectionOf(ProxyConfig), "A pull-through cache of another registry.", default=None
    )
    #: A RedisConfig when several nodes share state through Redis, else None.
    redis = setting(
        "redis", SectionOf(RedisConfig), "The nodes' shared state (several nodes).", default=None
    )
    #: the web interface (registryd.ui)
    ui = setting("ui", SectionOf(UIConfig), "The web interface.", factory=UIConfig, own=True)
    #: immutable tags, quotas, retention (registryd.config.lifecycle)
    lifecycle = setting(
        "lifecycle",
        SectionOf(LifecycleConfig),
        "Immutable tags, quotas and retention.",
        factory=LifecycleConfig,
        own=True,
    )

    def with_listen(self, endpoints):
        """This configuration listening on ``endpoints`` instead (``--listen``)."""
        return attr.evolve(self, http=attr.evolve(self.http, listen=tuple(endpoints)))


def key_as_written(attribute_path, config=None):
    """The configuration key, as an operator writes it in the file, for the
    dotted attribute path of a :class:`Config` field (``gc.grace_period`` ->
    ``gc.graceperiod``): messages about a loaded configuration (a reload
    that needs a restart) must name what the operator can find in the file.

    :param config: the configuration, for keys that depend on it (the
        storage driver's section).
    """
    if attribute_path == "storage.parameters" and config is not None:
        return f"storage.{config.storage.driver}"
    return _written_keys().get(attribute_path, attribute_path)


@functools.cache
def _written_keys():
    """key_as_written's table, from the schema, made on first use."""
    return dict(written_keys(Config))


def parse_config(mapping):
    """Validate an already-parsed YAML document (a dict) into a :class:`Config`.

    :raises ConfigError: naming every key, in document order, that is
        unsupported or has a bad value (a ``ConfigErrors`` when there are
        several: one line each).
    """
    if mapping is None:
        raise ConfigError(
            "configuration is empty: expected a mapping with at least "
            "'version: 0.1' and a storage section"
        )
    if not isinstance(mapping, dict):
        raise ConfigError(f"top level: expected a mapping, got {describe(mapping)}")
    if "version" not in mapping:
        raise ConfigError("version", "required: add 'version: 0.1'")
    given = mapping["version"]
    if isinstance(given, bool) or given not in ("0.1", 0.1):
        raise ConfigError("version", f"expected 0.1, got {describe(given)}")
    parser = Parser()
    config = parser.section(Config, mapping, "")
    if parser.errors:
        raise ConfigError.of(parser.errors)
    return config

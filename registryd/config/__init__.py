"""Configuration: a YAML file in CNCF Distribution's ``config.yml`` format,
turned into validated, immutable attrs objects.

registryd reads Distribution's keys where the features overlap, so an
existing ``config.yml`` works unchanged, and refuses everything else at
start-up.  Nothing is silently ignored: a key for a feature registryd lacks
(``reporting``, ``middleware``...) would otherwise leave an operator
believing a registry is mirrored, monitored or cached when it is not.
The few keys that only tune Distribution internals (``storage.cache``,
``http.secret``...) are type-checked and accepted, because they change
nothing a client can observe.

Every error is a :class:`ConfigError` whose message starts with the dotted
path of the offending key, so one line tells the operator what to fix; all
of a file's errors are reported at once, in document order.

The package: ``errors`` (ConfigError), ``types`` (value types, the one
duration rule), ``schema`` (keys as attrs field metadata, the one parser,
the key walker), one module per section, ``root`` (Config), ``load`` (the
file) and ``reference`` (the key list for README.md and operators, written
from the schema).  It is pure (no reactor, no I/O except reading the file in
:func:`load_config`): storage drivers are created from a
:class:`StorageConfig` elsewhere (``registryd.runtime.service``), because driver
parameters belong to the drivers, which may come from plugins.
"""

from registryd.config.admin import (
    DEFAULT_MANHOLE_HOST_KEY,
    DEFAULT_MANHOLE_LISTEN,
    DEFAULT_MANHOLE_MEMORY_LIMIT,
    DEFAULT_MANHOLE_TIME_LIMIT,
    GCConfig,
    ManholeConfig,
)
from registryd.config.auth import (
    AccessConfig,
    AuthConfig,
    HtpasswdConfig,
    TokenConfig,
    TokenServerConfig,
)
from registryd.config.errors import ConfigError, ConfigErrors, error_lines
from registryd.config.health import (
    DEFAULT_CHECK_TIMEOUT,
    FileCheckConfig,
    HealthConfig,
    HTTPCheckConfig,
    TCPCheckConfig,
)
from registryd.config.http import (
    CIPHER_SUITES,
    DEFAULT_LISTEN,
    DebugConfig,
    HTTPConfig,
    TLSConfig,
    addr_to_endpoint,
)
from registryd.config.load import (
    default_document,
    environment_keys,
    environment_summary,
    load_config,
    read_document,
)
from registryd.config.log import LOG_LEVELS, LogConfig
from registryd.config.notifications import (
    DEFAULT_ENDPOINT_BACKOFF,
    DEFAULT_ENDPOINT_THRESHOLD,
    DEFAULT_ENDPOINT_TIMEOUT,
    DEFAULT_JOURNAL_DIRECTORY,
    DEFAULT_JOURNAL_MAX_EVENTS,
    EVENT_ACTIONS,
    EndpointConfig,
    NotificationsConfig,
)
from registryd.config.proxy import DEFAULT_PROXY_MAX_BLOB_SIZE, DEFAULT_PROXY_TTL, ProxyConfig
from registryd.config.redis import RedisConfig, RedisTLSConfig
from registryd.config.root import (
    MAX_WORKERS,
    Config,
    ListingConfig,
    key_as_written,
    parse_config,
    parse_workers,
)
from registryd.config.storage import (
    DEFAULT_ROOT_DIRECTORY,
    MaintenanceConfig,
    StorageConfig,
    UploadPurgingConfig,
)
from registryd.config.types import MAX_DURATION, parse_duration
from registryd.config.ui import UIConfig
from registryd.config.validation import ValidationConfig

__all__ = [
    "RedisConfig",
    "RedisTLSConfig",
    "CIPHER_SUITES",
    "DEFAULT_CHECK_TIMEOUT",
    "DEFAULT_ENDPOINT_BACKOFF",
    "DEFAULT_ENDPOINT_THRESHOLD",
    "DEFAULT_ENDPOINT_TIMEOUT",
    "DEFAULT_JOURNAL_DIRECTORY",
    "DEFAULT_JOURNAL_MAX_EVENTS",
    "DEFAULT_LISTEN",
    "DEFAULT_MANHOLE_HOST_KEY",
    "DEFAULT_MANHOLE_LISTEN",
    "DEFAULT_MANHOLE_MEMORY_LIMIT",
    "DEFAULT_MANHOLE_TIME_LIMIT",
    "DEFAULT_PROXY_MAX_BLOB_SIZE",
    "DEFAULT_PROXY_TTL",
    "DEFAULT_ROOT_DIRECTORY",
    "EVENT_ACTIONS",
    "LOG_LEVELS",
    "MAX_WORKERS",
    "AccessConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "DebugConfig",
    "EndpointConfig",
    "FileCheckConfig",
    "GCConfig",
    "HTTPCheckConfig",
    "HTTPConfig",
    "HealthConfig",
    "HtpasswdConfig",
    "ListingConfig",
    "LogConfig",
    "MaintenanceConfig",
    "ManholeConfig",
    "NotificationsConfig",
    "ProxyConfig",
    "StorageConfig",
    "TCPCheckConfig",
    "TLSConfig",
    "TokenConfig",
    "TokenServerConfig",
    "UploadPurgingConfig",
    "UIConfig",
    "ValidationConfig",
    "addr_to_endpoint",
    "error_lines",
    "key_as_written",
    "load_config",
    "read_document",
    "default_document",
    "environment_keys",
    "environment_summary",
    "parse_config",
    "MAX_DURATION",
    "parse_duration",
    "parse_workers",
]

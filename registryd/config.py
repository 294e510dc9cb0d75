"""Configuration: a YAML file in CNCF Distribution's ``config.yml`` format,
turned into validated, immutable attrs objects.

registryd reads Distribution's keys where the features overlap, so an
existing ``config.yml`` works unchanged, and refuses everything else at
start-up.  Nothing is silently ignored: a key for a feature registryd lacks
(``redis``, ``middleware``...) would otherwise leave an operator
believing a registry is mirrored, monitored or cached when it is not.
The few keys that only tune Distribution internals (``storage.cache``,
``http.secret``...) are type-checked and accepted, because
they change nothing a client can observe.

Every error is a :class:`ConfigError` whose message starts with the dotted
path of the offending key, so one line tells the operator what to fix.  Keys
are checked in document order, and every key of a section is checked even
after one failed: a file with three mistakes is refused with one
:class:`ConfigErrors` naming all three (one line each), so the operator
fixes them in one round instead of three restarts.

This module is pure (no reactor, no I/O except reading the file in
:func:`load_config`): storage drivers are created from a
:class:`StorageConfig` elsewhere (``registryd.service``), because driver
parameters belong to the drivers, which may come from plugins.
"""

import copy
import ipaddress
import re
from urllib.parse import urlsplit

import attr
import yaml

#: Where the filesystem driver keeps data when no configuration file is given.
DEFAULT_ROOT_DIRECTORY = "./registry-data"

#: The http.addr Distribution's own sample config uses, as an endpoint string.
DEFAULT_LISTEN = ("tcp:5000",)

#: Distribution's log levels, which are also twisted.logger level names.
LOG_LEVELS = ("error", "warn", "info", "debug")


class ConfigError(Exception):
    """A configuration key or value registryd cannot use.

    ``str(error)`` is one line: ``"<key path>: <problem>"``, e.g.
    ``"storage.filesystem.rootdirectory: expected a string, got 5"``.

    Prefer ``ConfigError(key, problem)``.  ``ConfigError(message)`` (one
    argument, already naming its key) is accepted too, so that storage
    drivers written against the plain-exception convention still produce a
    useful message; :meth:`within` adds the section path either way.
    """

    def __init__(self, key, problem=None):
        if problem is None:
            key, problem = None, key
        self.key = key
        self.problem = problem
        super().__init__(str(self))

    def __str__(self):
        if self.key:
            return f"{self.key}: {self.problem}"
        return str(self.problem)

    def within(self, section):
        """The same error, for a key that lives under C{section}.

        Drivers only see their own section (``storage.<name>``), so they name
        keys relative to it; this makes the path absolute.
        """
        if self.key is not None:
            if self.key == section or self.key.startswith(section + "."):
                return self
            return ConfigError(f"{section}.{self.key}", self.problem)
        message = str(self.problem)
        if message == section or message.startswith((section + ".", section + ":")):
            return self
        if re.match(r"[\w.\-]+: ", message):
            return ConfigError(f"{section}.{message}")
        return ConfigError(section, message)

    @property
    def errors(self):
        """The single problems this error stands for: itself alone here;
        every one found in the file for a L{ConfigErrors}."""
        return (self,)


class ConfigErrors(ConfigError):
    """Several L{ConfigError}s found in one file, reported together.

    ``str()`` is one line per problem, in document order, at most
    C{MAX_REPORTED} of them (a file of garbage must not flood a terminal);
    C{key} and C{problem} are the first one's, so code that looks at one
    error keeps working.
    """

    MAX_REPORTED = 20

    def __init__(self, errors):
        self._errors = tuple(single for error in errors for single in error.errors)
        super().__init__(self._errors[0].key, self._errors[0].problem)

    @property
    def errors(self):
        return self._errors

    def __str__(self):
        lines = [str(error) for error in self._errors[: self.MAX_REPORTED]]
        if len(self._errors) > self.MAX_REPORTED:
            lines.append(f"... and {len(self._errors) - self.MAX_REPORTED} more problems")
        return "\n".join(lines)

    def within(self, section):
        return ConfigErrors([error.within(section) for error in self._errors])


def error_lines(error):
    """The lines of C{str(error)} for a L{ConfigError} (one per problem)."""
    return str(error).splitlines() or [str(error)]


def _raise_all(problems):
    """Raise the problems collected from one section, if any: the only one
    as itself, several as one L{ConfigErrors}."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigErrors(problems)


@attr.s(frozen=True, slots=True)
class LogConfig:
    """Logging: level, line format, extra fields and the access log.

    twistd chooses where log lines go (stdout, ``--logfile``...);
    ``registryd.logs`` applies the level and the format to whatever it chose.
    """

    level = attr.ib(default="info")  # one of LOG_LEVELS
    #: "text", "json" or "logstash"; None: JSON lines when stdout is the
    #: systemd journal (JOURNAL_STREAM), text otherwise.
    formatter = attr.ib(default=None)
    #: log.fields: added to every JSON line.
    fields = attr.ib(factory=dict)
    #: False when log.accesslog.disabled is true.
    accesslog = attr.ib(default=True)


@attr.s(frozen=True, slots=True)
class UploadPurgingConfig:
    """storage.maintenance.uploadpurging, with Distribution's defaults
    (on: uploads older than a week are removed once a day)."""

    enabled = attr.ib(default=True)
    age = attr.ib(default=168 * 3600.0)  # seconds
    interval = attr.ib(default=24 * 3600.0)  # seconds
    dry_run = attr.ib(default=False)


@attr.s(frozen=True, slots=True)
class MaintenanceConfig:
    """storage.maintenance: upload purging and read-only mode."""

    upload_purging = attr.ib(factory=UploadPurgingConfig)
    #: storage.maintenance.readonly.enabled: writes answered 405 UNSUPPORTED
    read_only = attr.ib(default=False)


@attr.s(frozen=True, slots=True)
class GCConfig:
    """gc (registryd's own): online garbage collection."""

    #: seconds: blobs (and links, untagged manifests) younger than this stay
    grace_period = attr.ib(default=3600.0)
    #: seconds between scheduled online collections; None: never
    interval = attr.ib(default=None)
    delete_untagged = attr.ib(default=False)
    dry_run = attr.ib(default=False)


#: The manhole's default endpoint: loopback only.
DEFAULT_MANHOLE_LISTEN = "tcp:5022:interface=127.0.0.1"
#: Where the manhole's host key is kept (created on first start).
DEFAULT_MANHOLE_HOST_KEY = "./manhole_host_key"
#: How long one statement typed in the manhole may compute before it is stopped.
DEFAULT_MANHOLE_TIME_LIMIT = 30.0
#: How much the daemon may grow while manhole statements run (bytes).
DEFAULT_MANHOLE_MEMORY_LIMIT = 512 * 1024 * 1024


@attr.s(frozen=True, slots=True)
class ManholeConfig:
    """manhole (registryd's own): an SSH-reachable Python prompt in the daemon."""

    authorized_keys = attr.ib()  # absolute path of an OpenSSH authorized_keys file
    listen = attr.ib(default=DEFAULT_MANHOLE_LISTEN)
    user = attr.ib(default="admin")
    host_key = attr.ib(default=None)  # absolute path; None: DEFAULT_MANHOLE_HOST_KEY
    #: Seconds one typed statement may compute (waiting on a helper excluded).
    timelimit = attr.ib(default=DEFAULT_MANHOLE_TIME_LIMIT)
    #: Bytes the daemon's memory may grow by while typed statements run.
    memorylimit = attr.ib(default=DEFAULT_MANHOLE_MEMORY_LIMIT)


@attr.s(frozen=True, slots=True)
class StorageConfig:
    """The one storage driver, its parameters, and what the model allows."""

    driver = attr.ib(default="filesystem")
    parameters = attr.ib(factory=lambda: {"rootdirectory": DEFAULT_ROOT_DIRECTORY})
    delete_enabled = attr.ib(default=False)
    maintenance = attr.ib(factory=MaintenanceConfig)
    #: storage.redirect: blob GETs answer 307 to the driver's URL (a
    #: presigned S3 URL).  Off unless storage.redirect.enabled is true.
    redirect = attr.ib(default=False)
    #: middleware.storage ``redirect``'s baseurl: blob GETs answer 307 to
    #: it plus the blob's path in the storage layout (a web server or CDN
    #: in front of the storage serves it), or None.
    redirect_base_url = attr.ib(default=None)


@attr.s(frozen=True, slots=True)
class TLSConfig:
    """http.tls: the server certificate and optional client certificates."""

    certificate = attr.ib()  # PEM file: the certificate, then any chain
    key = attr.ib()  # PEM file: the private key
    #: PEM files of CAs whose client certificates are accepted; empty: no
    #: client certificates asked for.
    clientcas = attr.ib(default=(), converter=tuple)
    #: "require-and-verify-client-cert" or "verify-client-cert-if-given".
    clientauth = attr.ib(default="require-and-verify-client-cert")
    minimumtls = attr.ib(default="tls1.2")  # or "tls1.3"
    #: http.tls.ciphersuites: Go (IANA) names of the TLS 1.2 suites offered,
    #: or empty for the default (Twisted's: forward-secret AEAD suites).
    #: TLS 1.3 suites are always on, as in Go.
    ciphersuites = attr.ib(default=(), converter=tuple)


#: http.tls.ciphersuites: the names Distribution accepts (Go's), and the
#: OpenSSL name of each TLS 1.2 suite; the TLS 1.3 suites map to None (not
#: configurable, always offered, as in Go).
CIPHER_SUITES = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}


@attr.s(frozen=True, slots=True)
class HTTPConfig:
    """The HTTP side: where to listen and what responses carry."""

    #: Twisted server endpoint strings (from http.addr, or --listen).
    listen = attr.ib(default=DEFAULT_LISTEN, converter=tuple)
    #: Absolute base URL for generated URLs (http.host), or None to derive
    #: it from each request.
    host = attr.ib(default=None)
    #: Extra response headers: name -> list of values (http.headers).
    headers = attr.ib(factory=dict)
    #: The debug listener (http.debug), or None.
    debug = attr.ib(default=None)
    #: http.tls (a L{TLSConfig}), or None: every listener except ``ssl:``
    #: endpoints then speaks plain HTTP.
    tls = attr.ib(default=None)
    #: http.relativeurls: Location headers without scheme and host.
    relative_urls = attr.ib(default=False)
    #: http.prefix: the path the routes are served below ("/path/"), or None.
    prefix = attr.ib(default=None)
    #: http.draintimeout: seconds a stopping registry lets requests in
    #: progress finish (0: stop at once, closing connections).
    drain_timeout = attr.ib(default=0.0)


@attr.s(frozen=True, slots=True)
class DebugConfig:
    """http.debug: a second, private listener for /health and /metrics."""

    #: Twisted server endpoint strings (from http.debug.addr).
    listen = attr.ib(converter=tuple)
    #: http.debug.prometheus.enabled / path
    prometheus_enabled = attr.ib(default=False)
    prometheus_path = attr.ib(default="/metrics")


@attr.s(frozen=True, slots=True)
class ValidationConfig:
    """What a pushed manifest must satisfy beyond its own syntax."""

    #: validation.manifests.indexes.platforms (Distribution 3's key):
    #: "all" (default) requires every child manifest of an index to be in
    #: the repository; "none" accepts sparse indexes, as mirrors of single
    #: platforms need.
    accept_sparse_manifests = attr.ib(default=False)
    #: validation.manifests.images.blobs (registryd's key, in the style of
    #: indexes.platforms): "all" (default) requires an image manifest's
    #: config and layers to be in the repository; "none" accepts sparse
    #: images, whose manifest can be pulled but whose blobs cannot.
    accept_sparse_images = attr.ib(default=False)
    #: validation.manifests.urls as a registryd.manifests.verify.URLPolicy;
    #: None (no such section, or validation.disabled) accepts any URL.
    url_policy = attr.ib(default=None)


@attr.s(frozen=True, slots=True)
class FileCheckConfig:
    """health.file[]: unhealthy while C{path} exists."""

    path = attr.ib()
    interval = attr.ib(default=10.0)  # seconds


#: Seconds an HTTP or TCP health check may take when no timeout is set.
DEFAULT_CHECK_TIMEOUT = 5.0


@attr.s(frozen=True, slots=True)
class HTTPCheckConfig:
    """health.http[]: unhealthy when a HEAD of C{uri} does not answer
    C{status_code} within C{timeout}, C{threshold} times in a row."""

    uri = attr.ib()
    headers = attr.ib(factory=dict)  # name -> list of values
    status_code = attr.ib(default=200)
    timeout = attr.ib(default=DEFAULT_CHECK_TIMEOUT)  # seconds
    interval = attr.ib(default=10.0)  # seconds
    threshold = attr.ib(default=1)


@attr.s(frozen=True, slots=True)
class TCPCheckConfig:
    """health.tcp[]: unhealthy when C{addr} (host:port) does not accept a
    connection within C{timeout}, C{threshold} times in a row."""

    addr = attr.ib()
    host = attr.ib()
    port = attr.ib()
    timeout = attr.ib(default=DEFAULT_CHECK_TIMEOUT)  # seconds
    interval = attr.ib(default=10.0)  # seconds
    threshold = attr.ib(default=1)


@attr.s(frozen=True, slots=True)
class HealthConfig:
    """health: periodic checks feeding /health (and 503s while failing)."""

    #: health.storagedriver.enabled: probe the storage driver periodically.
    storagedriver = attr.ib(default=False)
    interval = attr.ib(default=10.0)  # seconds
    #: consecutive failures before the driver counts as unhealthy
    threshold = attr.ib(default=1)
    files = attr.ib(default=(), converter=tuple)
    http = attr.ib(default=(), converter=tuple)
    tcp = attr.ib(default=(), converter=tuple)


#: Distribution's EndpointConfig.defaults(): timeout 1s, threshold 10, backoff 1s.
DEFAULT_ENDPOINT_TIMEOUT = 1.0
DEFAULT_ENDPOINT_THRESHOLD = 10
DEFAULT_ENDPOINT_BACKOFF = 1.0

#: Where notification journals live when notifications.journal.directory is not given.
DEFAULT_JOURNAL_DIRECTORY = "./notifications"
#: Events kept per endpoint while it is unreachable; newer ones are dropped.
DEFAULT_JOURNAL_MAX_EVENTS = 100_000

#: The actions Distribution's events carry.
EVENT_ACTIONS = ("push", "pull", "mount", "delete")


@attr.s(frozen=True, slots=True)
class EndpointConfig:
    """notifications.endpoints[]: one webhook receiver."""

    name = attr.ib()
    url = attr.ib()
    headers = attr.ib(factory=dict)  # name -> list of values
    timeout = attr.ib(default=DEFAULT_ENDPOINT_TIMEOUT)  # seconds
    threshold = attr.ib(default=DEFAULT_ENDPOINT_THRESHOLD)
    backoff = attr.ib(default=DEFAULT_ENDPOINT_BACKOFF)  # seconds
    #: ignoredmediatypes and ignore.mediatypes together
    ignored_media_types = attr.ib(default=(), converter=tuple)
    #: ignore.actions
    ignored_actions = attr.ib(default=(), converter=tuple)
    disabled = attr.ib(default=False)


@attr.s(frozen=True, slots=True)
class NotificationsConfig:
    """notifications: webhook endpoints and registryd's persisted queue."""

    endpoints = attr.ib(default=(), converter=tuple)
    #: notifications.events.includereferences
    include_references = attr.ib(default=False)
    #: notifications.journal.directory (absolute)
    journal_directory = attr.ib(default=None)
    #: notifications.journal.maxevents
    journal_max_events = attr.ib(default=DEFAULT_JOURNAL_MAX_EVENTS)

    @property
    def enabled_endpoints(self):
        return tuple(endpoint for endpoint in self.endpoints if not endpoint.disabled)


#: proxy.ttl's default, as in Distribution: cached content expires after a week.
DEFAULT_PROXY_TTL = 168 * 3600.0
#: proxy.maxblobsize's default (registryd's key): the most bytes taken from
#: upstream for one blob whose size upstream did not announce, and the
#: largest announced size accepted.
DEFAULT_PROXY_MAX_BLOB_SIZE = 10 * 1024 ** 3


@attr.s(frozen=True, slots=True)
class ProxyConfig:
    """proxy: serve as a pull-through cache of another registry
    (``registryd.proxy``)."""

    remote_url = attr.ib()  # absolute http(s) URL, no trailing '/'
    username = attr.ib(default=None)
    password = attr.ib(default=None, repr=False)
    #: seconds cached content is kept after it was fetched; 0: forever
    ttl = attr.ib(default=DEFAULT_PROXY_TTL)
    #: bytes: the bound on one blob fetched from upstream
    max_blob_size = attr.ib(default=DEFAULT_PROXY_MAX_BLOB_SIZE)


@attr.s(frozen=True, slots=True)
class ListingConfig:
    """Page limits of the listing endpoints (Distribution 3's keys); None:
    no limit beyond registryd's defaults."""

    #: catalog.maxentries: a catalog request for more (n) is refused with
    #: PAGINATION_NUMBER_INVALID; also the page size when n is not given.
    max_catalog_entries = attr.ib(default=None)
    #: tags.maxtags: at most this many tags per response, then a Link.
    max_tags = attr.ib(default=None)


@attr.s(frozen=True, slots=True)
class Config:
    """A whole, validated configuration."""

    log = attr.ib(factory=LogConfig)
    storage = attr.ib(factory=StorageConfig)
    http = attr.ib(factory=HTTPConfig)
    validation = attr.ib(factory=ValidationConfig)
    health = attr.ib(factory=HealthConfig)
    notifications = attr.ib(factory=NotificationsConfig)
    gc = attr.ib(factory=GCConfig)
    manhole = attr.ib(default=None)  # a ManholeConfig when configured
    #: The auth section (registryd.auth.config.AuthConfig), or None: no
    #: authentication, everyone may do anything.
    auth = attr.ib(default=None)
    #: Processes serving HTTP (registryd.workers); 1: this process alone.
    workers = attr.ib(default=1)
    #: catalog.maxentries and tags.maxtags
    listing = attr.ib(factory=lambda: ListingConfig())
    #: A ProxyConfig when registryd is a pull-through cache, else None.
    proxy = attr.ib(default=None)
    #: registryd.lifecycle.config.LifecycleConfig: immutable tags
    lifecycle = attr.ib(factory=lambda: _lifecycle_config())

    def with_listen(self, endpoints):
        """This configuration listening on C{endpoints} instead (``--listen``)."""
        return attr.evolve(self, http=attr.evolve(self.http, listen=tuple(endpoints)))


#: Config attribute paths (``section.field``) whose YAML key is spelt
#: differently; every other field is spelt as its key.
_KEYS_AS_WRITTEN = {
    "log.accesslog": "log.accesslog.disabled",
    "storage.driver": "storage",
    "storage.delete_enabled": "storage.delete.enabled",
    "storage.redirect_base_url": "middleware.storage",
    "http.listen": "http.addr",
    "http.relative_urls": "http.relativeurls",
    "http.drain_timeout": "http.draintimeout",
    "validation.accept_sparse_manifests": "validation.manifests.indexes.platforms",
    "validation.accept_sparse_images": "validation.manifests.images.blobs",
    "validation.url_policy": "validation.manifests.urls",
    "health.storagedriver": "health.storagedriver.enabled",
    "health.interval": "health.storagedriver.interval",
    "health.threshold": "health.storagedriver.threshold",
    "health.files": "health.file",
    "notifications.include_references": "notifications.events.includereferences",
    "notifications.journal_directory": "notifications.journal.directory",
    "notifications.journal_max_events": "notifications.journal.maxevents",
    "gc.grace_period": "gc.graceperiod",
    "gc.delete_untagged": "gc.deleteuntagged",
    "gc.dry_run": "gc.dryrun",
    "proxy.remote_url": "proxy.remoteurl",
    "proxy.max_blob_size": "proxy.maxblobsize",
    "listing": "catalog.maxentries, tags.maxtags",
    "listing.max_catalog_entries": "catalog.maxentries",
    "listing.max_tags": "tags.maxtags",
}


def key_as_written(attribute_path, config=None):
    """The configuration key, as an operator writes it in the file, for the
    dotted attribute path of a L{Config} field (``gc.grace_period`` ->
    ``gc.graceperiod``): messages about a loaded configuration (a reload
    that needs a restart) must name what the operator can find in the file.

    @param config: the configuration, for keys that depend on it (the
        storage driver's section).
    """
    if attribute_path == "storage.parameters" and config is not None:
        return f"storage.{config.storage.driver}"
    return _KEYS_AS_WRITTEN.get(attribute_path, attribute_path)


# --- reading YAML ------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (and overlong integers).

    PyYAML keeps the last of two equal keys without a word; a duplicated
    ``storage`` or ``delete`` section would then silently drop settings.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<" merges may legitimately repeat keys
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        """An integer, or a YAML error naming where: Python's int() raises
        ValueError (a traceback at start-up) on more than 4300 digits."""
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, "integer too long", node.start_mark
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _yaml_error_message(error):
    """One line for a YAML error, with the line and column it names."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None)
    context = getattr(error, "context", None)
    if problem is None:
        text = " ".join(str(error).split())
    elif context:
        text = f"{problem} ({context})"
    else:
        text = problem
    if mark is None:
        return f"invalid YAML: {text}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {text}"


def load_config(path):
    """Read and validate the configuration file at C{path}.

    @param path: a file name, or None for the defaults (filesystem storage
        in ``./registry-data``, listening on ``tcp:5000``).
    @raise ConfigError: the file cannot be read, is not YAML, or holds a key
        or value registryd cannot use.
    @rtype: L{Config}
    """
    if path is None:
        return Config()
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise ConfigError(f"cannot read configuration file: {error.strerror or error}")
    try:
        mapping = yaml.load(data, Loader=_Loader)
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_error_message(error))
    return parse_config(mapping)


# --- checking values ---------------------------------------------------------


def _join(path, key):
    return f"{path}.{key}" if path else str(key)


def _describe(value):
    """A short, unambiguous rendering of a bad value for an error message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _string(value, path):
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {_describe(value)}")
    return value


def _boolean(value, path):
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {_describe(value)}")
    return value


def _integer(value, path):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {_describe(value)}")
    return value


def _mapping(value, path):
    """A section's mapping; an empty section (``inmemory:``) is null in YAML."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a mapping, got {_describe(value)}")
    return value


def _choice(value, path, choices):
    _string(value, path)
    if value.lower() not in choices:
        raise ConfigError(path, f"expected one of {', '.join(choices)}, got {value!r}")
    return value.lower()


_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
#: Go's longest time.Duration (int64 nanoseconds, about 292 years), in
#: seconds; Distribution refuses longer ones, and an infinite float would
#: break timers later.
MAX_DURATION = (2**63 - 1) / 1e9


def _duration(value, path, minimum=0.0):
    """A Go duration (``500ms``, ``10s``, ``1m30s``; an integer is
    nanoseconds, as in Distribution) as float seconds, at least C{minimum}."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(path, f"expected a duration such as 10s or 500ms, got {_describe(value)}")
    if isinstance(value, int):
        if abs(value) > 2**63 - 1:
            raise ConfigError(path, f"duration out of range (at most {MAX_DURATION:.0f}s)")
        seconds = value * 1e-9
    elif value.strip() == "0":
        seconds = 0.0
    else:
        text, seconds, position = value.strip(), 0.0, 0
        while position < len(text):
            match = _DURATION_PART.match(text, position)
            if match is None or match.group(1) in ("", "."):
                raise ConfigError(
                    path, f"expected a duration such as 10s, 500ms or 1m30s, got {value!r}"
                )
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            position = match.end()
        if not text:
            raise ConfigError(path, "expected a duration such as 10s or 500ms, got ''")
        if seconds > MAX_DURATION:
            raise ConfigError(
                path, f"duration out of range (at most {MAX_DURATION:.0f}s), got {value[:100]!r}"
            )
    if seconds < 0:
        raise ConfigError(path, f"must not be negative, got {value!r}")
    if seconds < minimum:
        raise ConfigError(
            path,
            f"must be at least {minimum:g}s, got {value!r}"
            + (" (a number without unit is nanoseconds)" if isinstance(value, int) else ""),
        )
    return seconds


def _list(value, path):
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list, got {_describe(value)}")
    return value


def _walk(value, path, handlers, distribution_keys=()):
    """Hand each key of the mapping C{value} to its handler, in document order.

    A key's problem does not stop the walk: the others are checked too,
    and all problems are raised together at the end (L{ConfigErrors}); the
    checks a section makes after its walk run only when the walk passed.

    A key without a handler is refused: with "not supported by registryd
    yet" if it is one of Distribution's (C{distribution_keys}), as an unknown
    key otherwise.  Either way the message lists what is supported here.
    """
    problems = []
    for key, item in _mapping(value, path).items():
        key_path = _join(path, key)
        try:
            if not isinstance(key, str):
                raise ConfigError(key_path, "keys must be strings")
            handler = handlers.get(key)
            if handler is None:
                raise _unsupported(key_path, key in distribution_keys, handlers)
            handler(item, key_path)
        except ConfigError as error:  # keep going: report every key's problem
            problems.append(error)
    _raise_all(problems)


def _unsupported(path, known, handlers):
    supported = ", ".join(sorted(handlers)) or "nothing"
    if known:
        return ConfigError(path, f"not supported by registryd yet (supported here: {supported})")
    return ConfigError(path, f"unknown key, not supported (supported here: {supported})")


def _accept(check):
    """A handler that only type-checks a value registryd has no use for."""

    def handler(value, path):
        check(value, path)

    return handler


# --- the sections ------------------------------------------------------------

_TOP_DISTRIBUTION_KEYS = frozenset("compatibility policy reporting".split())


def parse_config(mapping):
    """Validate an already-parsed YAML document (a dict) into a L{Config}.

    @raise ConfigError: naming the key, in document order, that is
        unsupported or has a bad value; a L{ConfigErrors} when several are.
    """
    if mapping is None:
        raise ConfigError(
            "configuration is empty: expected a mapping with at least "
            "'version: 0.1' and a storage section"
        )
    if not isinstance(mapping, dict):
        raise ConfigError(f"top level: expected a mapping, got {_describe(mapping)}")
    # Like Distribution, check the version before anything else: a future
    # format should be refused as a whole, not key by key.
    if "version" not in mapping:
        raise ConfigError("version", "required: add 'version: 0.1'")
    given = mapping["version"]
    if isinstance(given, bool) or given not in ("0.1", 0.1):
        raise ConfigError("version", f"expected 0.1, got {_describe(given)}")
    found = {}

    def keep(key, parse):
        """A handler that keeps C{parse(value, path)} as C{found[key]}."""

        def handler(value, path):
            found[key] = parse(value, path)

        return handler

    handlers = {
        "version": lambda value, path: None,  # checked above
        "log": keep("log", _parse_log),
        # Distribution's deprecated spelling of log.level; log.level wins.
        "loglevel": keep("loglevel", lambda value, path: _choice(value, path, LOG_LEVELS)),
        "storage": keep("storage", _parse_storage),
        "http": keep("http", _parse_http),
        "validation": keep("validation", _parse_validation),
        "health": keep("health", _parse_health),
        "notifications": keep("notifications", _parse_notifications),
        "gc": keep("gc", _parse_gc),
        "manhole": keep("manhole", _parse_manhole),
        "auth": keep("auth", _parse_auth),
        "workers": keep("workers", parse_workers),
        "catalog": keep("max_catalog_entries", _single_limit("maxentries")),
        "tags": keep("max_tags", _single_limit("maxtags")),
        "proxy": keep("proxy", _parse_proxy),
        "lifecycle": keep("lifecycle", _parse_lifecycle),
        "middleware": keep("redirect_base_url", _parse_middleware),
        # Distribution's Redis connection serves only its blob descriptor
        # cache (storage.cache, accepted likewise): an internal registryd's
        # model does without, so the section is accepted if it is a mapping.
        "redis": _accept(_mapping),
    }
    _walk(mapping, "", handlers, _TOP_DISTRIBUTION_KEYS)
    if "storage" not in found:
        raise ConfigError(
            "storage", "required: configure exactly one storage driver (e.g. storage.filesystem)"
        )
    if found.get("redirect_base_url"):
        found["storage"] = attr.evolve(found["storage"], redirect_base_url=found["redirect_base_url"])
    log_config = dict(found.get("log", {}))
    log_config["level"] = log_config.get("level") or found.get("loglevel") or "info"
    return Config(
        log=LogConfig(**log_config), storage=found["storage"], http=found.get("http", HTTPConfig()),
        validation=found.get("validation", ValidationConfig()),
        health=found.get("health", HealthConfig()),
        notifications=found.get("notifications", NotificationsConfig()),
        gc=found.get("gc", GCConfig()), manhole=found.get("manhole"),
        auth=found.get("auth"), workers=found.get("workers", 1), proxy=found.get("proxy"),
        listing=ListingConfig(found.get("max_catalog_entries"), found.get("max_tags")),
        lifecycle=found.get("lifecycle") or _lifecycle_config(),
    )


def _lifecycle_config():
    from registryd.lifecycle.config import LifecycleConfig

    return LifecycleConfig()


def _parse_lifecycle(value, path):
    import sys

    from registryd.lifecycle.config import parse_lifecycle

    return parse_lifecycle(value, path, sys.modules[__name__])


def _parse_auth(value, path):
    import sys

    from registryd.auth.config import parse_auth

    return parse_auth(value, path, sys.modules[__name__])


def _single_limit(key):
    """A parser for a section holding one positive integer, C{key}
    (catalog.maxentries, tags.maxtags): its value, or None."""

    def parse(value, path):
        found = {}

        def limit(value, limit_path):
            found["limit"] = _positive(value, limit_path)

        _walk(value, path, {key: limit})
        return found.get("limit")

    return parse


#: Most worker processes accepted (a typo guard, not a tuning limit).
MAX_WORKERS = 256


def parse_workers(value, path="workers"):
    """workers: how many processes serve HTTP, an integer >= 1 or ``auto``
    (one per CPU).  Also the ``--workers`` option's value (a string)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            import os

            return max(1, os.cpu_count() or 1)
        if not text.isdigit():
            raise ConfigError(path, f"expected a number of processes or 'auto', got {value!r}")
        value = int(text)
    _integer(value, path)
    if not 1 <= value <= MAX_WORKERS:
        raise ConfigError(path, f"expected 1 to {MAX_WORKERS} processes, got {value}")
    return value


def _parse_proxy(value, path):
    """proxy: Distribution's pull-through cache section.  Distribution's
    ``exec`` credential helper is refused (registryd runs no programs)."""
    found = {}

    def remoteurl(value, path):
        _http_url(value, path)
        parts = urlsplit(value)
        try:
            parts.port  # raises ValueError for a bad port
        except ValueError as error:
            raise ConfigError(path, f"expected an absolute http(s) URL, got {value!r}: {error}")
        if parts.query or parts.fragment:
            raise ConfigError(path, f"expected a URL without query or fragment, got {value!r}")
        found["remote_url"] = value.rstrip("/")

    def username(value, path):
        found["username"] = _string(value, path)

    def password(value, path):
        found["password"] = _string(value, path)

    def ttl(value, path):
        found["ttl"] = _duration(value, path)

    def maxblobsize(value, path):
        if _integer(value, path) < 1:
            raise ConfigError(path, f"expected a positive number of bytes, got {value}")
        found["max_blob_size"] = value

    _walk(value, path, {"remoteurl": remoteurl, "username": username, "password": password,
                        "ttl": ttl, "maxblobsize": maxblobsize})
    if "remote_url" not in found:
        raise ConfigError(_join(path, "remoteurl"), "required: the URL of the registry to mirror")
    if ("username" in found) != ("password" in found):
        missing = "password" if "username" in found else "username"
        raise ConfigError(_join(path, missing), "required when the other credential is given")
    return ProxyConfig(**found)


def _parse_validation(value, path):
    """validation: sparse indexes (Distribution 3's key), sparse images
    (registryd's ``manifests.images.blobs``) and the URLs that
    non-distributable layers may carry (``manifests.urls``, checked unless
    ``disabled: true`` or the deprecated ``enabled: false``)."""
    found = {}
    switches = {}

    def platforms(value, path):
        choice = _choice(value, path, ("all", "none"))
        found["accept_sparse_manifests"] = choice == "none"

    def indexes(value, path):
        _walk(value, path, {"platforms": platforms}, {"platformlist"})

    def blobs(value, path):
        choice = _choice(value, path, ("all", "none"))
        found["accept_sparse_images"] = choice == "none"

    def images(value, path):
        _walk(value, path, {"blobs": blobs})

    def patterns(value, path):
        import re

        compiled = []
        for index, pattern in enumerate(_list(value, path)):
            _string(pattern, f"{path}[{index}]")
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"{path}[{index}]", f"not a regular expression: {error}") from None
            compiled.append(pattern)
        return compiled

    def urls(value, path):
        lists = {"allow": [], "deny": []}

        def allow(value, path):
            lists["allow"] = patterns(value, path)

        def deny(value, path):
            lists["deny"] = patterns(value, path)

        _walk(value, path, {"allow": allow, "deny": deny})
        found["urls"] = lists

    def manifests(value, path):
        _walk(value, path, {"indexes": indexes, "images": images, "urls": urls})

    def disabled(value, path):
        switches["disabled"] = _boolean(value, path)

    def enabled(value, path):
        switches["enabled"] = _boolean(value, path)

    _walk(value, path, {"manifests": manifests, "disabled": disabled, "enabled": enabled})
    lists = found.pop("urls", None)
    checking = not switches.get("disabled", False) and switches.get("enabled", True)
    if lists is not None and checking:
        from registryd.manifests.verify import URLPolicy

        found["url_policy"] = URLPolicy(lists["allow"], lists["deny"])
    return ValidationConfig(**found)


def _parse_log(value, path):
    found = {}

    def level(value, path):
        found["level"] = _choice(value, path, LOG_LEVELS)

    def accesslog(value, path):
        def disabled(value, path):
            found["accesslog"] = not _boolean(value, path)

        _walk(value, path, {"disabled": disabled})

    def formatter(value, path):
        found["formatter"] = _choice(value, path, ("text", "json", "logstash"))

    def fields(value, path):
        found["fields"] = dict(_mapping(value, path))

    handlers = dict(level=level, accesslog=accesslog, formatter=formatter, fields=fields)
    _walk(value, path, handlers, {"hooks", "reportcaller"})
    return found


#: Keys under ``storage`` that are not driver sections.
_STORAGE_SETTINGS = frozenset({"delete", "cache", "maintenance", "redirect", "tag"})


def _parse_maintenance(value, path):
    """storage.maintenance: uploadpurging and readonly, Distribution's keys."""
    found = {}

    def uploadpurging(value, path):
        purging = {}

        def enabled(value, path):
            purging["enabled"] = _boolean(value, path)

        def age(value, path):
            purging["age"] = _duration(value, path, minimum=1.0)

        def interval(value, path):
            purging["interval"] = _duration(value, path, minimum=1.0)

        def dryrun(value, path):
            purging["dry_run"] = _boolean(value, path)

        handlers = dict(enabled=enabled, age=age, interval=interval, dryrun=dryrun)
        _walk(value, path, handlers)
        found["upload_purging"] = UploadPurgingConfig(**purging)

    def readonly(value, path):
        def enabled(value, path):
            found["read_only"] = _boolean(value, path)

        _walk(value, path, {"enabled": enabled})

    _walk(value, path, {"uploadpurging": uploadpurging, "readonly": readonly})
    return MaintenanceConfig(**found)


def _parse_gc(value, path):
    """gc: graceperiod, interval (0 or absent: no schedule), deleteuntagged, dryrun."""
    found = {}

    def graceperiod(value, path):
        found["grace_period"] = _duration(value, path)

    def interval(value, path):
        seconds = _duration(value, path)
        if 0 < seconds < 1:
            raise ConfigError(path, f"must be 0 (never) or at least 1s, got {value!r}")
        found["interval"] = seconds or None

    def deleteuntagged(value, path):
        found["delete_untagged"] = _boolean(value, path)

    def dryrun(value, path):
        found["dry_run"] = _boolean(value, path)

    handlers = dict(
        graceperiod=graceperiod, interval=interval, deleteuntagged=deleteuntagged, dryrun=dryrun
    )
    _walk(value, path, handlers)
    return GCConfig(**found)


def _parse_manhole(value, path):
    """manhole: listen, authorized_keys (required), user, host_key,
    timelimit (a duration), memorylimit (bytes).

    File paths are made absolute now, against the start-up directory, as
    the filesystem driver's root is.  The endpoint string and the key file
    are checked when the service is made (``registryd.tap``)."""
    import os

    found = {}

    def listen(value, path):
        if not _string(value, path).strip():
            raise ConfigError(path, "expected a Twisted endpoint string such as tcp:5022:interface=127.0.0.1")
        found["listen"] = value

    def file_path(key):
        def handler(value, path):
            _string(value, path)
            if not value or "\0" in value:
                raise ConfigError(path, f"expected a file path, got {value!r}")
            found[key] = os.path.abspath(value)

        return handler

    def user(value, path):
        _string(value, path)
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,31}", value):
            raise ConfigError(path, f"expected a user name of letters, digits, '_', '.', '-', got {value!r}")
        found["user"] = value

    def timelimit(value, path):
        found["timelimit"] = _duration(value, path, minimum=0.1)

    def memorylimit(value, path):
        _integer(value, path)
        if value < 1024 * 1024:
            raise ConfigError(path, f"expected at least 1048576 bytes, got {value}")
        found["memorylimit"] = value

    handlers = dict(
        listen=listen, authorized_keys=file_path("authorized_keys"), user=user,
        host_key=file_path("host_key"), timelimit=timelimit, memorylimit=memorylimit,
    )
    _walk(value, path, handlers)
    if "authorized_keys" not in found:
        raise ConfigError(
            _join(path, "authorized_keys"),
            "required: an OpenSSH authorized_keys file with the keys allowed to log in",
        )
    found.setdefault("host_key", os.path.abspath(DEFAULT_MANHOLE_HOST_KEY))
    return ManholeConfig(**found)


def _parse_storage(value, path):
    drivers = []
    found = {"delete_enabled": False}

    def delete(value, path):
        def enabled(value, path):
            found["delete_enabled"] = _boolean(value, path)

        _walk(value, path, {"enabled": enabled})

    def cache(value, path):
        # Distribution's blob descriptor cache; registryd's model has its own.
        handlers = dict(
            blobdescriptor=_accept(_string),
            layerinfo=_accept(_string),  # the deprecated name of blobdescriptor
            blobdescriptorsize=_accept(_integer),
        )
        _walk(value, path, handlers)

    def maintenance(value, path):
        found["maintenance"] = _parse_maintenance(value, path)

    def redirect(value, path):
        found["redirect"] = _parse_redirect(value, path)

    handlers = {"delete": delete, "cache": cache, "maintenance": maintenance, "redirect": redirect}
    for key, item in _mapping(value, path).items():
        key_path = _join(path, key)
        if not isinstance(key, str):
            raise ConfigError(key_path, "keys must be strings")
        if key in handlers:
            handlers[key](item, key_path)
        elif key in _STORAGE_SETTINGS:
            supported = ", ".join(sorted(handlers)) + " and one driver section"
            raise ConfigError(key_path, f"not supported by registryd yet (supported here: {supported})")
        else:
            # Any other key names a driver; the driver (perhaps from a plugin)
            # checks its own parameters when it is created.
            if drivers:
                raise ConfigError(
                    key_path,
                    f"only one storage driver may be configured, but {_join(path, drivers[0][0])} "
                    "is configured too",
                )
            drivers.append((key, copy.deepcopy(_mapping(item, key_path))))
    if not drivers:
        raise ConfigError(path, "no storage driver configured (e.g. add storage.filesystem)")
    (name, parameters), = drivers
    return StorageConfig(
        driver=name, parameters=parameters, delete_enabled=found["delete_enabled"],
        maintenance=found.get("maintenance", MaintenanceConfig()),
        redirect=found.get("redirect", False),
    )


def _parse_middleware(value, path):
    """middleware: of Distribution's middlewares, the storage ``redirect``
    one (``options.baseurl``); returns the base URL or None."""
    found = {}

    def storage(value, path):
        for index, entry in enumerate(_list(value, path)):
            entry_path = f"{path}[{index}]"
            seen = {}

            def name(value, name_path):
                _string(value, name_path)
                if value != "redirect":
                    raise ConfigError(
                        name_path,
                        f"{value!r} is not supported by registryd yet (supported here: redirect)",
                    )
                seen["name"] = value

            def options(value, options_path):
                def baseurl(value, url_path):
                    seen["baseurl"] = _http_url(value, url_path).rstrip("/")

                _walk(value, options_path, {"baseurl": baseurl})

            _walk(entry, entry_path, {"name": name, "options": options})
            if "name" not in seen:
                raise ConfigError(_join(entry_path, "name"), "required: the middleware's name")
            if "baseurl" not in seen:
                raise ConfigError(_join(entry_path, "options.baseurl"),
                                  "required: the URL that serves the storage's files")
            if "baseurl" in found:
                raise ConfigError(entry_path, "only one redirect middleware can be configured")
            found["baseurl"] = seen["baseurl"]

    _walk(value, path, {"storage": storage}, {"registry", "repository"})
    return found.get("baseurl")


def _parse_redirect(value, path):
    """storage.redirect: Distribution's ``disable`` plus registryd's ``enabled``.

    Distribution redirects by default wherever the driver can; registryd
    does not, because a presigned URL only works for clients that can
    reach the store itself, which is often on a private network.  So
    ``enabled: true`` turns redirects on, ``disable: true`` (Distribution's
    key) keeps them off, and a file saying both is refused.
    """
    found = {}

    def enabled(value, path):
        found["enabled"] = (_boolean(value, path), path)

    def disable(value, path):
        found["disable"] = (_boolean(value, path), path)

    _walk(value, path, {"enabled": enabled, "disable": disable})
    on = found.get("enabled", (False, None))[0]
    off, off_path = found.get("disable", (False, None))
    if on and off:
        raise ConfigError(off_path, "true contradicts storage.redirect.enabled: true; keep one of them")
    return on and not off


_HTTP_DISTRIBUTION_KEYS = frozenset()


def _parse_http(value, path):
    found = {}

    def addr(value, path):
        found["addr"] = (_string(value, path), path)

    def net(value, path):
        found["net"] = _choice(value, path, ("tcp", "unix"))

    def host(value, path):
        found["host"] = _parse_host(value, path)

    def headers(value, path):
        found["headers"] = _parse_headers(value, path)

    def debug(value, path):
        found["debug"] = _parse_debug(value, path)

    handlers = dict(
        addr=addr, net=net, host=host, headers=headers, secret=_accept(_string)
    )
    handlers["debug"] = debug

    def tls(value, path):
        found["tls"] = _parse_tls(value, path)

    handlers["tls"] = tls

    def relativeurls(value, path):
        found["relative_urls"] = _boolean(value, path)

    def draintimeout(value, path):
        found["drain_timeout"] = _duration(value, path)

    def prefix(value, path):
        _string(value, path)
        if not (value.startswith("/") and value.endswith("/")) or "//" in value:
            raise ConfigError(path, f"expected a path with leading and trailing slashes, such as /registry/, got {value!r}")
        if any(part in (".", "..") for part in value.split("/")) or "?" in value or "#" in value:
            raise ConfigError(path, f"expected a plain path, got {value!r}")
        found["prefix"] = value if value != "/" else None

    def http2(value, path):
        # registryd speaks HTTP/1.1 (HTTP/2 adds nothing for blob
        # streaming); a configuration that turns HTTP/2 off is what it does.
        def disabled(value, path):
            if not _boolean(value, path):
                raise ConfigError(path, "false is not supported: registryd speaks HTTP/1.1 only")

        _walk(value, path, {"disabled": disabled})
        if "disabled" not in _mapping(value, path):
            raise ConfigError(_join(path, "disabled"), "required: true (registryd speaks HTTP/1.1 only)")

    def h2c(value, path):
        def enabled(value, path):
            if _boolean(value, path):
                raise ConfigError(path, "true is not supported: registryd speaks HTTP/1.1 only")

        _walk(value, path, {"enabled": enabled})

    handlers.update(relativeurls=relativeurls, draintimeout=draintimeout, prefix=prefix,
                    http2=http2, h2c=h2c)
    _walk(value, path, handlers, _HTTP_DISTRIBUTION_KEYS)
    if "addr" in found:
        address, addr_path = found["addr"]
        listen = (addr_to_endpoint(address, found.get("net", "tcp"), addr_path),)
    elif found.get("net", "tcp") != "tcp":
        raise ConfigError(_join(path, "addr"), "required when http.net is unix: the socket's path")
    else:
        listen = DEFAULT_LISTEN
    return HTTPConfig(
        listen=listen, host=found.get("host"), headers=found.get("headers", {}),
        debug=found.get("debug"), tls=found.get("tls"),
        relative_urls=found.get("relative_urls", False),
        drain_timeout=found.get("drain_timeout", 0.0), prefix=found.get("prefix"),
    )


_CLIENT_AUTH_MODES = ("require-and-verify-client-cert", "verify-client-cert-if-given")


def _parse_tls(value, path):
    """http.tls: files are read (and their problems reported under these
    key paths) when the listeners are made, by registryd.tls."""
    found = {}

    def path_value(key):
        def handler(value, path):
            found[key] = _string(value, path)
            if not value:
                raise ConfigError(path, "must not be empty")
        return handler

    def clientcas(value, path):
        if not isinstance(value, list) or not value:
            raise ConfigError(path, f"expected a list of CA certificate files, got {_describe(value)}")
        for index, item in enumerate(value):
            _string(item, f"{path}[{index}]")
        found["clientcas"] = tuple(value)

    def clientauth(value, path):
        _string(value, path)
        if value not in _CLIENT_AUTH_MODES:
            raise ConfigError(
                path,
                f"expected one of {', '.join(_CLIENT_AUTH_MODES)}, got {value!r} (modes that accept "
                "unverified client certificates are not supported)",
            )
        found["clientauth"] = value

    def ciphersuites(value, path):
        names = _list(value, path)
        for index, name in enumerate(names):
            _string(name, f"{path}[{index}]")
            if name not in CIPHER_SUITES:
                raise ConfigError(
                    f"{path}[{index}]",
                    f"unknown cipher suite {name!r} (use Go's names, e.g. "
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
                )
        found["ciphersuites"] = tuple(names)

    def minimumtls(value, path):
        _string(value, path)
        if value in ("tls1.0", "tls1.1"):
            raise ConfigError(path, f"{value} is not supported: registryd speaks TLS 1.2 or later")
        found["minimumtls"] = _choice(value, path, ("tls1.2", "tls1.3"))

    handlers = dict(
        certificate=path_value("certificate"), key=path_value("key"), clientcas=clientcas,
        clientauth=clientauth, minimumtls=minimumtls,
    )
    handlers["ciphersuites"] = ciphersuites
    _walk(value, path, handlers, {"letsencrypt"})
    for key in ("certificate", "key"):
        if key not in found:
            raise ConfigError(_join(path, key), "required")
    return TLSConfig(**found)


def _parse_debug(value, path):
    """http.debug: addr (required) and prometheus.{enabled,path}."""
    found = {}

    def addr(value, path):
        found["listen"] = (addr_to_endpoint(_string(value, path), "tcp", path),)

    def prometheus(value, path):
        def enabled(value, path):
            found["prometheus_enabled"] = _boolean(value, path)

        def metrics_path(value, path):
            _string(value, path)
            if not value.startswith("/") or value.rstrip("/") == "" or "?" in value:
                raise ConfigError(path, f"expected an absolute path such as /metrics, got {value!r}")
            found["prometheus_path"] = value

        _walk(value, path, {"enabled": enabled, "path": metrics_path})

    _walk(value, path, {"addr": addr, "prometheus": prometheus}, {"tls"})
    if "listen" not in found:
        raise ConfigError(_join(path, "addr"), "required: where the debug listener listens, e.g. localhost:5001")
    return DebugConfig(**found)


def _parse_health(value, path):
    """health: storagedriver, file, http and tcp checks (Distribution's keys)."""
    found = {"files": [], "http": [], "tcp": []}

    def storagedriver(value, path):
        def enabled(value, path):
            found["storagedriver"] = _boolean(value, path)

        def interval(value, path):
            found["interval"] = _duration(value, path, minimum=0.1) or 10.0

        def threshold(value, path):
            found["threshold"] = max(1, _positive_or_zero(value, path))

        _walk(value, path, {"enabled": enabled, "interval": interval, "threshold": threshold})

    def files(value, path):
        for index, item in enumerate(_list(value, path)):
            item_path = f"{path}[{index}]"
            check = {}

            def file(value, path):
                check["path"] = _string(value, path)
                if not value:
                    raise ConfigError(path, "expected a file path, got ''")

            def interval(value, path):
                check["interval"] = _duration(value, path, minimum=0.1) or 10.0

            _walk(item, item_path, {"file": file, "interval": interval})
            if "path" not in check:
                raise ConfigError(_join(item_path, "file"), "required: the path whose existence fails the check")
            found["files"].append(FileCheckConfig(**check))

    def timing(check):
        """Handlers of the keys HTTP and TCP checks share."""

        def timeout(value, path):
            check["timeout"] = _duration(value, path, minimum=0.001) or DEFAULT_CHECK_TIMEOUT

        def interval(value, path):
            check["interval"] = _duration(value, path, minimum=0.1) or 10.0

        def threshold(value, path):
            check["threshold"] = max(1, _positive_or_zero(value, path))

        return {"timeout": timeout, "interval": interval, "threshold": threshold}

    def http_checks(value, path):
        for index, item in enumerate(_list(value, path)):
            item_path = f"{path}[{index}]"
            check = {}

            def uri(value, path):
                check["uri"] = _http_url(value, path)

            def headers(value, path):
                check["headers"] = _parse_headers(value, path)

            def statuscode(value, path):
                _integer(value, path)
                if not 100 <= value <= 599:
                    raise ConfigError(path, f"expected an HTTP status code, got {value}")
                check["status_code"] = value

            _walk(item, item_path, {"uri": uri, "headers": headers, "statuscode": statuscode,
                                    **timing(check)})
            if "uri" not in check:
                raise ConfigError(_join(item_path, "uri"), "required: the URL to check with HEAD")
            found["http"].append(HTTPCheckConfig(**check))

    def tcp_checks(value, path):
        for index, item in enumerate(_list(value, path)):
            item_path = f"{path}[{index}]"
            check = {}

            def addr(value, path):
                check["host"], check["port"] = _tcp_address(value, path)
                check["addr"] = value

            _walk(item, item_path, {"addr": addr, **timing(check)})
            if "addr" not in check:
                raise ConfigError(_join(item_path, "addr"), "required: the host:port to connect to")
            found["tcp"].append(TCPCheckConfig(**check))

    _walk(value, path, {"storagedriver": storagedriver, "file": files, "http": http_checks,
                        "tcp": tcp_checks})
    return HealthConfig(**found)


def _positive_or_zero(value, path):
    _integer(value, path)
    if value < 0:
        raise ConfigError(path, f"must not be negative, got {value}")
    return value


def _positive(value, path):
    _integer(value, path)
    if value < 1:
        raise ConfigError(path, f"must be at least 1, got {value}")
    return value


def _parse_notifications(value, path):
    """notifications: endpoints[] and events (Distribution's keys) plus
    registryd's journal section (where undelivered events are kept)."""
    import os

    found = {"endpoints": []}

    def endpoints(value, path):
        names = set()
        for index, item in enumerate(_list(value, path)):
            endpoint = _parse_endpoint(item, f"{path}[{index}]")
            if endpoint.name in names:
                raise ConfigError(f"{path}[{index}].name", f"duplicate endpoint name {endpoint.name!r}")
            names.add(endpoint.name)
            found["endpoints"].append(endpoint)

    def events(value, path):
        def includereferences(value, path):
            found["include_references"] = _boolean(value, path)

        _walk(value, path, {"includereferences": includereferences})

    def journal(value, path):
        def directory(value, path):
            _string(value, path)
            if not value or "\0" in value:
                raise ConfigError(path, f"expected a directory path, got {value!r}")
            found["journal_directory"] = os.path.abspath(value)

        def maxevents(value, path):
            _integer(value, path)
            if value < 1:
                raise ConfigError(path, f"must be at least 1, got {value}")
            found["journal_max_events"] = value

        _walk(value, path, {"directory": directory, "maxevents": maxevents})

    _walk(value, path, {"endpoints": endpoints, "events": events, "journal": journal})
    found.setdefault("journal_directory", os.path.abspath(DEFAULT_JOURNAL_DIRECTORY))
    return NotificationsConfig(**found)


def _parse_endpoint(value, path):
    """One notifications.endpoints[] entry, with Distribution's defaults."""
    found = {"ignored_media_types": [], "ignored_actions": []}

    def name(value, path):
        _string(value, path)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}", value):
            raise ConfigError(
                path, f"expected up to 100 letters, digits, '_', '.' or '-', got {value!r}"
            )
        found["name"] = value

    def url(value, path):
        found["url"] = _http_url(value, path)

    def headers(value, path):
        found["headers"] = _parse_headers(value, path)

    def timeout(value, path):
        found["timeout"] = _duration(value, path) or DEFAULT_ENDPOINT_TIMEOUT

    def threshold(value, path):
        found["threshold"] = _positive_or_zero(value, path) or DEFAULT_ENDPOINT_THRESHOLD

    def backoff(value, path):
        found["backoff"] = _duration(value, path) or DEFAULT_ENDPOINT_BACKOFF

    def media_types(value, path):
        for index, item in enumerate(_list(value, path)):
            found["ignored_media_types"].append(_string(item, f"{path}[{index}]"))

    def ignore(value, path):
        def actions(value, path):
            for index, item in enumerate(_list(value, path)):
                found["ignored_actions"].append(_choice(item, f"{path}[{index}]", EVENT_ACTIONS))

        _walk(value, path, {"mediatypes": media_types, "actions": actions})

    def disabled(value, path):
        found["disabled"] = _boolean(value, path)

    handlers = dict(
        name=name, url=url, headers=headers, timeout=timeout, threshold=threshold,
        backoff=backoff, ignoredmediatypes=media_types, ignore=ignore, disabled=disabled,
    )
    _walk(value, path, handlers)
    for required in ("name", "url"):
        if required not in found:
            raise ConfigError(_join(path, required), "required")
    return EndpointConfig(**found)


def _escape_endpoint_argument(text):
    """Quote a value for a Twisted endpoint string (``:``, ``=`` and ``\\``)."""
    return re.sub(r"([\\:=])", r"\\\1", text)


def addr_to_endpoint(addr, net="tcp", path="http.addr"):
    """Translate Distribution's Go-style listen address into a Twisted
    server endpoint string.

    ``":5000"`` -> ``"tcp:5000"``; ``"127.0.0.1:5000"`` ->
    ``"tcp:5000:interface=127.0.0.1"``; ``"[::1]:5000"`` ->
    ``"tcp6:5000:interface=\\:\\:1"``; with C{net} ``"unix"`` the address is
    a socket path: ``"/run/r.sock"`` -> ``"unix:/run/r.sock"``.

    Note that Go's ``":5000"`` also accepts IPv6 connections; ``tcp:5000``
    is IPv4 only (use ``--listen tcp6:5000`` for both on Linux).
    """
    if net == "unix":
        if not addr:
            raise ConfigError(path, "expected the path of a UNIX socket, got ''")
        return "unix:" + _escape_endpoint_argument(addr)
    match = re.fullmatch(r"\[([^\]]*)\]:([0-9]+)|([^:\[\]]*):([0-9]+)", addr)
    if match is None:
        raise ConfigError(
            path,
            f"expected HOST:PORT such as ':5000', '127.0.0.1:5000' or '[::1]:5000', got {addr!r}",
        )
    bracketed, host = match.group(1) is not None, match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ConfigError(path, f"port {port} is out of range (0-65535)")
    if not host:
        return f"tcp:{port}"
    kind = "tcp"
    try:
        if ipaddress.ip_address(host.split("%", 1)[0]).version == 6:
            kind = "tcp6"
    except ValueError:
        if bracketed:
            raise ConfigError(path, f"expected an IPv6 address inside [], got {host!r}")
    return f"{kind}:{port}:interface={_escape_endpoint_argument(host)}"


def _parse_host(value, path):
    """http.host: the absolute URL clients reach the registry at."""
    _string(value, path)
    try:
        url = urlsplit(value)
        url.port  # raises ValueError for a bad port
    except ValueError as error:
        raise ConfigError(path, f"expected an absolute http(s) URL, got {value!r}: {error}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(
            path, f"expected an absolute http(s) URL such as https://registry.example.com, got {value!r}"
        )
    if url.query or url.fragment:
        raise ConfigError(path, f"expected a URL without query or fragment, got {value!r}")
    return value


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _http_url(value, path):
    """An absolute http or https URL."""
    _string(value, path)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, f"expected an absolute http(s) URL, got {value!r}")
    return value


def _tcp_address(value, path):
    """``host:port`` (``[v6]:port`` for IPv6), as (host, port)."""
    _string(value, path)
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(path, f"expected host:port, got {value!r}")
    return host, int(port)


def _parse_headers(value, path):
    """http.headers: header name -> list of values, added to every response."""
    headers = {}
    for name, values in _mapping(value, path).items():
        key_path = _join(path, name)
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigError(key_path, "not a valid HTTP header name")
        if not isinstance(values, list):
            raise ConfigError(
                key_path, f"expected a list of strings such as [nosniff], got {_describe(values)}"
            )
        for index, item in enumerate(values):
            item_path = f"{key_path}[{index}]"
            _string(item, item_path)
            if re.search(r"[\r\n\0]", item):
                raise ConfigError(item_path, "header values cannot contain CR, LF or NUL")
        headers[name] = list(values)
    return headers

"""Configuration: a YAML file in CNCF Distribution's ``config.yml`` format,
turned into validated, immutable attrs objects.

registryd reads Distribution's keys where the features overlap, so an
existing ``config.yml`` works unchanged, and refuses everything else at
start-up.  Nothing is silently ignored: a key for a feature registryd lacks
(``auth``, ``health``, ``http.tls``...) would otherwise leave an operator
believing a registry is protected, monitored or encrypted when it is not.
The few keys that only tune Distribution internals (``storage.cache``,
``http.secret``, ``log.fields``...) are type-checked and accepted, because
they change nothing a client can observe.

Every error is a :class:`ConfigError` whose message starts with the dotted
path of the offending key, so one line tells the operator what to fix.  Keys
are checked in document order, so the first problem in the file is the one
reported.

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


@attr.s(frozen=True, slots=True)
class LogConfig:
    """Logging: only the level has an effect (formatting is twistd's)."""

    level = attr.ib(default="info")  # one of LOG_LEVELS


@attr.s(frozen=True, slots=True)
class StorageConfig:
    """The one storage driver, its parameters, and what the model allows."""

    driver = attr.ib(default="filesystem")
    parameters = attr.ib(factory=lambda: {"rootdirectory": DEFAULT_ROOT_DIRECTORY})
    delete_enabled = attr.ib(default=False)


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


@attr.s(frozen=True, slots=True)
class ValidationConfig:
    """What a pushed manifest must satisfy beyond its own syntax."""

    #: validation.manifests.indexes.platforms (Distribution 3's key):
    #: "all" (default) requires every child manifest of an index to be in
    #: the repository; "none" accepts sparse indexes, as mirrors of single
    #: platforms need.
    accept_sparse_manifests = attr.ib(default=False)


@attr.s(frozen=True, slots=True)
class Config:
    """A whole, validated configuration."""

    log = attr.ib(factory=LogConfig)
    storage = attr.ib(factory=StorageConfig)
    http = attr.ib(factory=HTTPConfig)
    validation = attr.ib(factory=ValidationConfig)

    def with_listen(self, endpoints):
        """This configuration listening on C{endpoints} instead (``--listen``)."""
        return attr.evolve(self, http=attr.evolve(self.http, listen=tuple(endpoints)))


# --- reading YAML ------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys.

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


def _walk(value, path, handlers, distribution_keys=()):
    """Hand each key of the mapping C{value} to its handler, in document order.

    A key without a handler is refused: with "not supported by registryd
    yet" if it is one of Distribution's (C{distribution_keys}), as an unknown
    key otherwise.  Either way the message lists what is supported here.
    """
    for key, item in _mapping(value, path).items():
        key_path = _join(path, key)
        if not isinstance(key, str):
            raise ConfigError(key_path, "keys must be strings")
        handler = handlers.get(key)
        if handler is None:
            raise _unsupported(key_path, key in distribution_keys, handlers)
        handler(item, key_path)


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

_TOP_DISTRIBUTION_KEYS = frozenset(
    "auth catalog compatibility health middleware notifications policy proxy "
    "redis reporting tags".split()
)


def parse_config(mapping):
    """Validate an already-parsed YAML document (a dict) into a L{Config}.

    @raise ConfigError: naming the first key, in document order, that is
        unsupported or has a bad value.
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

    def version(value, path):
        pass  # checked above

    def log(value, path):
        found["log"] = _parse_log(value, path)

    def loglevel(value, path):
        # Distribution's deprecated spelling of log.level; log.level wins.
        found["loglevel"] = _choice(value, path, LOG_LEVELS)

    def storage(value, path):
        found["storage"] = _parse_storage(value, path)

    def http(value, path):
        found["http"] = _parse_http(value, path)

    def validation(value, path):
        found["validation"] = _parse_validation(value, path)

    handlers = dict(
        version=version, log=log, loglevel=loglevel, storage=storage, http=http,
        validation=validation,
    )
    _walk(mapping, "", handlers, _TOP_DISTRIBUTION_KEYS)
    if "storage" not in found:
        raise ConfigError(
            "storage", "required: configure exactly one storage driver (e.g. storage.filesystem)"
        )
    log_config = found.get("log", {})
    level = log_config.get("level") or found.get("loglevel") or "info"
    return Config(
        log=LogConfig(level=level), storage=found["storage"], http=found.get("http", HTTPConfig()),
        validation=found.get("validation", ValidationConfig()),
    )


def _parse_validation(value, path):
    found = {}

    def platforms(value, path):
        choice = _choice(value, path, ("all", "none"))
        found["accept_sparse_manifests"] = choice == "none"

    def indexes(value, path):
        _walk(value, path, {"platforms": platforms}, {"platformlist"})

    def manifests(value, path):
        _walk(value, path, {"indexes": indexes}, {"urls"})

    _walk(value, path, {"manifests": manifests}, {"disabled", "enabled"})
    return ValidationConfig(**found)


def _parse_log(value, path):
    found = {}

    def level(value, path):
        found["level"] = _choice(value, path, LOG_LEVELS)

    def accesslog(value, path):
        _walk(value, path, {"disabled": _accept(_boolean)})

    def formatter(value, path):
        _choice(value, path, ("text", "json", "logstash"))

    handlers = dict(level=level, accesslog=accesslog, formatter=formatter, fields=_accept(_mapping))
    _walk(value, path, handlers, {"hooks", "reportcaller"})
    return found


#: Keys under ``storage`` that are not driver sections.
_STORAGE_SETTINGS = frozenset({"delete", "cache", "maintenance", "redirect", "tag"})


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

    handlers = {"delete": delete, "cache": cache}
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
    return StorageConfig(driver=name, parameters=parameters, delete_enabled=found["delete_enabled"])


_HTTP_DISTRIBUTION_KEYS = frozenset(
    "debug draintimeout h2c http2 prefix relativeurls tls".split()
)


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

    handlers = dict(
        addr=addr, net=net, host=host, headers=headers, secret=_accept(_string)
    )
    _walk(value, path, handlers, _HTTP_DISTRIBUTION_KEYS)
    if "addr" in found:
        address, addr_path = found["addr"]
        listen = (addr_to_endpoint(address, found.get("net", "tcp"), addr_path),)
    elif found.get("net", "tcp") != "tcp":
        raise ConfigError(_join(path, "addr"), "required when http.net is unix: the socket's path")
    else:
        listen = DEFAULT_LISTEN
    return HTTPConfig(listen=listen, host=found.get("host"), headers=found.get("headers", {}))


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

"""The ``http`` section: listeners, URLs, headers, TLS and the debug listener.

Listen addresses are Distribution's Go-style ``host:port``, turned into
Twisted endpoint strings here; certificate files are read (and their
problems reported under these key paths) when the listeners are made, by
``registryd.http.tls``.
"""

import ipaddress
import re

import attr

from registryd.config.errors import ConfigError
from registryd.config.schema import (
    ListOf,
    SectionOf,
    as_tuple,
    extra,
    ignored,
    not_yet,
    section,
    setting,
)
from registryd.config.types import (
    Boolean,
    Choice,
    Custom,
    Duration,
    Headers,
    HostURL,
    String,
)

#: The http.addr Distribution's own sample config uses, as an endpoint string.
DEFAULT_LISTEN = ("tcp:5000",)


def _escape_endpoint_argument(text):
    """Quote a value for a Twisted endpoint string (``:``, ``=`` and ``\\``)."""
    return re.sub(r"([\\:=])", r"\\\1", text)


def addr_to_endpoint(addr, net="tcp", path="http.addr"):
    """Translate Distribution's Go-style listen address into a Twisted
    server endpoint string.

    ``":5000"`` -> ``"tcp:5000"``; ``"127.0.0.1:5000"`` ->
    ``"tcp:5000:interface=127.0.0.1"``; ``"[::1]:5000"`` ->
    ``"tcp6:5000:interface=\\:\\:1"``; with ``net`` ``"unix"`` the address is
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
            raise ConfigError(path, f"expected an IPv6 address inside [], got {host!r}") from None
    return f"{kind}:{port}:interface={_escape_endpoint_argument(host)}"


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

_CLIENT_AUTH_MODES = ("require-and-verify-client-cert", "verify-client-cert-if-given")


def _client_auth(value, path):
    String().check(value, path)
    if value not in _CLIENT_AUTH_MODES:
        raise ConfigError(
            path,
            f"expected one of {', '.join(_CLIENT_AUTH_MODES)}, got {value!r} (modes that accept "
            "unverified client certificates are not supported)",
        )
    return value


def _minimum_tls(value, path):
    String().check(value, path)
    if value in ("tls1.0", "tls1.1"):
        raise ConfigError(path, f"{value} is not supported: registryd speaks TLS 1.2 or later")
    return Choice("tls1.2", "tls1.3").check(value, path)


def _cipher_suite(name, path):
    String().check(name, path)
    if name not in CIPHER_SUITES:
        raise ConfigError(
            path,
            f"unknown cipher suite {name!r} (use Go's names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
        )
    return name


@section(not_yet("letsencrypt"))
@attr.s(frozen=True, slots=True)
class TLSConfig:
    """http.tls: the server certificate and optional client certificates."""

    certificate = setting(
        "certificate",
        String(nonempty=True),
        "PEM file: the certificate, then any chain.",
        required="required",
    )
    key = setting("key", String(nonempty=True), "PEM file: the private key.", required="required")
    #: PEM files of CAs whose client certificates are accepted; empty: no
    #: client certificates asked for.
    clientcas = setting(
        "clientcas",
        ListOf(String(), "expected a list of CA certificate files, got {got}", nonempty=True),
        "CAs whose client certificates are required.",
        default=(),
        converter=as_tuple,
    )
    clientauth = setting(
        "clientauth",
        Custom(_client_auth, " | ".join(_CLIENT_AUTH_MODES)),
        "Whether client certificates are required or only checked when given.",
        default="require-and-verify-client-cert",
    )
    minimumtls = setting(
        "minimumtls",
        Custom(_minimum_tls, "tls1.2 | tls1.3"),
        "Oldest TLS version spoken.",
        default="tls1.2",
    )
    #: http.tls.ciphersuites: Go (IANA) names of the TLS 1.2 suites offered,
    #: or empty for the default (Twisted's: forward-secret AEAD suites).
    #: TLS 1.3 suites are always on, as in Go.
    ciphersuites = setting(
        "ciphersuites",
        ListOf(Custom(_cipher_suite, "cipher suite")),
        "TLS 1.2 suites offered (Go's names); TLS 1.3 suites are always on.",
        default=(),
        converter=as_tuple,
    )


def _debug_addr(value, path):
    return (addr_to_endpoint(String().check(value, path), "tcp", path),)


def _metrics_path(value, path):
    String().check(value, path)
    if not value.startswith("/") or value.rstrip("/") == "" or "?" in value:
        raise ConfigError(path, f"expected an absolute path such as /metrics, got {value!r}")
    return value


@section(not_yet("tls"))
@attr.s(frozen=True, slots=True)
class DebugConfig:
    """http.debug: a second, private listener for /health and /metrics."""

    #: Twisted server endpoint strings (from http.debug.addr).
    listen = setting(
        "addr",
        Custom(_debug_addr, "host:port"),
        "Where /health and /metrics listen.",
        required="required: where the debug listener listens, e.g. localhost:5001",
        converter=as_tuple,
    )
    prometheus_enabled = setting(
        "prometheus.enabled", Boolean(), "Serve Prometheus metrics.", default=False
    )
    prometheus_path = setting(
        "prometheus.path",
        Custom(_metrics_path, "path"),
        "Where the metrics are served.",
        default="/metrics",
    )


def _prefix(value, path):
    String().check(value, path)
    if not (value.startswith("/") and value.endswith("/")) or "//" in value:
        raise ConfigError(
            path,
            f"expected a path with leading and trailing slashes, such as /registry/, got {value!r}",
        )
    if any(part in (".", "..") for part in value.split("/")) or "?" in value or "#" in value:
        raise ConfigError(path, f"expected a plain path, got {value!r}")
    return value if value != "/" else None


def _http2_disabled(value, path):
    # registryd speaks HTTP/1.1 (HTTP/2 adds nothing for blob streaming);
    # a configuration that turns HTTP/2 off is what it does.
    if not Boolean().check(value, path):
        raise ConfigError(path, "false is not supported: registryd speaks HTTP/1.1 only")
    return value


def _h2c_enabled(value, path):
    if Boolean().check(value, path):
        raise ConfigError(path, "true is not supported: registryd speaks HTTP/1.1 only")
    return value


def _finish_http(found):
    net = found.extras.get("net", "tcp")
    if "listen" in found.values:
        listen = (addr_to_endpoint(found.values["listen"], net, found.path_of("addr")),)
    elif net != "tcp":
        raise ConfigError(
            found.path_of("addr"), "required when http.net is unix: the socket's path"
        )
    else:
        listen = DEFAULT_LISTEN
    return found.build(listen=listen)


@section(
    extra(
        "net", Choice("tcp", "unix"), "unix: http.addr is the path of a UNIX socket.", default="tcp"
    ),
    ignored("secret", String(), "Distribution signs upload state with it; registryd keeps none."),
    extra(
        "http2.disabled",
        Custom(_http2_disabled, "true"),
        "Must be true: registryd speaks HTTP/1.1.",
        required="required: true (registryd speaks HTTP/1.1 only)",
    ),
    extra(
        "h2c.enabled", Custom(_h2c_enabled, "false"), "Must be false: registryd speaks HTTP/1.1."
    ),
    finish=_finish_http,
)
@attr.s(frozen=True, slots=True)
class HTTPConfig:
    """The HTTP side: where to listen and what responses carry."""

    #: Twisted server endpoint strings (from http.addr, or --listen).
    listen = setting(
        "addr",
        String(),
        "Where to listen, Go style (:5000, 127.0.0.1:5000, [::1]:5000).",
        default=DEFAULT_LISTEN,
        converter=as_tuple,
        shown=":5000",
    )
    #: Absolute base URL for generated URLs (http.host), or None to derive
    #: it from each request.
    host = setting("host", HostURL(), "The URL clients reach the registry at.", default=None)
    #: Extra response headers: name -> list of values (http.headers).
    headers = setting("headers", Headers(), "Headers added to every response.", factory=dict)
    #: The debug listener (http.debug), or None.
    debug = setting(
        "debug",
        SectionOf(DebugConfig),
        "A private listener for /health and /metrics.",
        default=None,
    )
    #: http.tls (a :class:`TLSConfig`), or None: every listener except ``ssl:``
    #: endpoints then speaks plain HTTP.
    tls = setting("tls", SectionOf(TLSConfig), "TLS on every listener.", default=None)
    #: http.relativeurls: Location headers without scheme and host.
    relative_urls = setting(
        "relativeurls", Boolean(), "Location headers as paths only.", default=False
    )
    #: http.prefix: the path the routes are served below ("/path/"), or None.
    prefix = setting(
        "prefix", Custom(_prefix, "path"), "Serve the API below this path.", default=None
    )
    #: http.draintimeout: seconds a stopping registry lets requests in
    #: progress finish (0: stop at once, closing connections).
    drain_timeout = setting(
        "draintimeout",
        Duration(),
        "How long requests in progress may finish on SIGTERM.",
        default=0.0,
    )

"""The value types of configuration keys: each checks one YAML value and
turns it into what the rest of registryd uses.

A type is an object with ``read(value, path, parser)``, raising
:class:`ConfigError` naming ``path``, and a ``name`` for the key reference
(``python -m registryd.config.reference``).  Types that hold other values
(lists, sections) live in ``registryd.config.schema``, because they hand
their items back to the parser, which collects every error of a file.

There is one rule for durations (:class:`Duration`), used by every key
that takes one, so that ``10s`` means the same everywhere.
"""

import os
import re
from urllib.parse import urlsplit

from registryd.config.errors import ConfigError, describe, join


class ValueType:
    """A scalar type: ``check(value, path)`` is all there is to it."""

    name = "value"

    def read(self, value, path, parser=None):
        return self.check(value, path)

    def check(self, value, path):
        raise NotImplementedError


class String(ValueType):
    """A string; with ``nonempty``, "" is refused too."""

    name = "string"

    def __init__(self, nonempty=False, empty="must not be empty"):
        self.nonempty = nonempty
        self.empty = empty

    def check(self, value, path):
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {describe(value)}")
        if self.nonempty and not value:
            raise ConfigError(path, self.empty)
        return value


class Boolean(ValueType):
    name = "boolean"

    def check(self, value, path):
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {describe(value)}")
        return value


class Integer(ValueType):
    """An integer (YAML's, not a string of digits) of at least ``minimum``."""

    name = "integer"

    def __init__(self, minimum=None, too_small="must be at least {minimum}, got {value}"):
        self.minimum = minimum
        self.too_small = too_small

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {describe(value)}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(path, self.too_small.format(minimum=self.minimum, value=value))
        return value


#: Integers >= 0 and >= 1, with the messages Distribution users know.
NON_NEGATIVE = Integer(0, "must not be negative, got {value}")
POSITIVE = Integer(1)


class Choice(ValueType):
    """One of ``choices``, case-insensitively; the lower-case spelling is kept."""

    def __init__(self, *choices):
        self.choices = choices
        self.name = " | ".join(choices)

    def check(self, value, path):
        String().check(value, path)
        if value.lower() not in self.choices:
            raise ConfigError(path, f"expected one of {', '.join(self.choices)}, got {value!r}")
        return value.lower()


class Mapping(ValueType):
    """Any mapping, as a copy; an empty section (``inmemory:``) is null in YAML."""

    name = "mapping"

    def check(self, value, path):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {describe(value)}")
        return dict(value)


#: Go's longest time.Duration (int64 nanoseconds, about 292 years), in
#: seconds; Distribution refuses longer ones, and an infinite float would
#: break timers later.
_MAX_NANOSECONDS = 2**63 - 1
MAX_DURATION = _MAX_NANOSECONDS / 1e9

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*")


def go_duration(text):
    """Seconds in a Go duration string (``500ms``, ``1h30m``, ``0``), or
    None if ``text`` is not one.  Like Go's time.ParseDuration, without sign."""
    text = text.strip()
    if text == "0":
        return 0.0
    if not text:
        return None
    seconds, position = 0.0, 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None or match.group(1) in ("", "."):
            return None
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return seconds


def format_go_duration(seconds):
    """``seconds`` as a Go duration string, as a file would say it
    (``1h``, ``5m30s``, ``250ms``): :func:`go_duration` reads it back."""
    if seconds == 0:
        return "0"
    text, rest = "", float(seconds)
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            text += f"{int(count)}{unit}"  # not :g, which says 2.56205e+06h
    if rest:
        text += f"{rest * 1000:g}ms"
    return text


class Duration(ValueType):
    """registryd's one duration rule, as float seconds of at least ``minimum``.

    A string is a Go duration (``500ms``, ``10s``, ``1m30s``, ``0``).  A
    number is read in the key's own unit: nanoseconds for Distribution's
    keys (Go's YAML decoder stores an integer into a time.Duration as
    nanoseconds, so Distribution's files mean that), seconds for the keys
    registryd documented in seconds (``numbers="seconds"``), where a
    number-only string (``"30"``) and a fraction are seconds too.
    ``whole`` gives an integer number of seconds (token lifetimes, which go
    into JSON as integers).
    """

    name = "duration"

    def __init__(self, minimum=0.0, numbers="nanoseconds", whole=False):
        assert numbers in ("nanoseconds", "seconds")
        self.minimum = minimum
        self.numbers = numbers
        self.whole = whole
        if numbers == "seconds":
            self.name = "duration (a number: seconds)"

    def check(self, value, path):
        seconds = self._seconds(value, path)
        if not seconds <= MAX_DURATION:  # also NaN
            got = f", got {value[:100]!r}" if isinstance(value, str) else ""
            raise ConfigError(path, f"duration out of range (at most {MAX_DURATION:.0f}s){got}")
        if seconds < 0 and (self.numbers == "nanoseconds" or not self.minimum):
            raise ConfigError(path, f"must not be negative, got {value!r}")
        if seconds < self.minimum:
            if self.numbers == "seconds":
                raise ConfigError(path, f"expected at least {self.minimum:g} seconds, got {value}")
            raise ConfigError(
                path,
                f"must be at least {self.minimum:g}s, got {value!r}"
                + (" (a number without unit is nanoseconds)" if isinstance(value, int) else ""),
            )
        return round(seconds) if self.whole else seconds

    def _seconds(self, value, path):
        by_seconds = self.numbers == "seconds"
        accepted = (str, int, float) if by_seconds else (str, int)
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ConfigError(
                path, f"expected a duration such as 10s or 500ms, got {describe(value)}"
            )
        if isinstance(value, int) and abs(value) > _MAX_NANOSECONDS:
            return float("inf")  # refused as out of range (float() would overflow)
        if not isinstance(value, str):
            return float(value) if by_seconds else value * 1e-9
        if by_seconds:
            match = _NUMBER.fullmatch(value)
            if match:
                return float(match.group(1))
        seconds = go_duration(value)
        if seconds is None:
            if not value.strip():
                raise ConfigError(path, "expected a duration such as 10s or 500ms, got ''")
            raise ConfigError(
                path, f"expected a duration such as 10s, 500ms or 1m30s, got {value!r}"
            )
        return seconds


def zero_is(default):
    """A key's convert where 0 means the default, as Distribution reads its
    timeouts, intervals and thresholds."""
    return lambda value: value or default


def parse_duration(value, path):
    """A Distribution duration key's value as seconds (:class:`Duration`'s rule)."""
    return Duration().check(value, path)


class Pattern(String):
    """A string matching ``regex`` in full, else ``message`` (formatted with
    ``value``)."""

    def __init__(self, regex, message, name="string"):
        super().__init__()
        self.regex = re.compile(regex)
        self.message = message
        self.name = name

    def check(self, value, path):
        super().check(value, path)
        if not self.regex.fullmatch(value):
            raise ConfigError(path, self.message.format(value=value))
        return value


class FilePath(String):
    """A file or directory path, made absolute against the start-up
    directory now (as the filesystem driver's root is)."""

    def __init__(self, what="file"):
        super().__init__()
        self.what = what
        self.name = f"{what} path"

    def check(self, value, path):
        super().check(value, path)
        if not value or "\0" in value:
            raise ConfigError(path, f"expected a {self.what} path, got {value!r}")
        return os.path.abspath(value)


class HTTPURL(String):
    """An absolute http or https URL."""

    name = "http(s) URL"

    def check(self, value, path):
        super().check(value, path)
        try:
            parts = urlsplit(value)
        except ValueError as error:  # "http://[::1": Invalid IPv6 URL
            raise ConfigError(
                path, f"expected an absolute http(s) URL, got {value!r}: {error}"
            ) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(path, f"expected an absolute http(s) URL, got {value!r}")
        return value


class BaseURL(HTTPURL):
    """An absolute http(s) URL with a valid port and no query or fragment,
    without its trailing "/" (a base that paths are appended to)."""

    def check(self, value, path):
        super().check(value, path)
        parts = urlsplit(value)
        try:
            _ = parts.port  # raises ValueError for a bad port
        except ValueError as error:
            raise ConfigError(
                path, f"expected an absolute http(s) URL, got {value!r}: {error}"
            ) from None
        if parts.query or parts.fragment:
            raise ConfigError(path, f"expected a URL without query or fragment, got {value!r}")
        return value.rstrip("/")


class HostURL(String):
    """http.host: the absolute URL clients reach the registry at."""

    name = "http(s) URL"

    def check(self, value, path):
        super().check(value, path)
        try:
            url = urlsplit(value)
            _ = url.port  # raises ValueError for a bad port
        except ValueError as error:
            raise ConfigError(
                path, f"expected an absolute http(s) URL, got {value!r}: {error}"
            ) from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(
                path,
                f"expected an absolute http(s) URL such as https://registry.example.com, got {value!r}",
            )
        if url.query or url.fragment:
            raise ConfigError(path, f"expected a URL without query or fragment, got {value!r}")
        return value


class TCPAddress(String):
    """``host:port`` (``[v6]:port`` for IPv6), kept as written; ``split``
    gives (host, port)."""

    name = "host:port"

    def check(self, value, path):
        self.split(value, path)
        return value

    def split(self, value, path):
        super().check(value, path)
        host, _, port = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(path, f"expected host:port, got {value!r}")
        return host, int(port)


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Headers(ValueType):
    """HTTP headers: name -> list of values (http.headers and the like)."""

    name = "mapping of header name to list of strings"

    def check(self, value, path):
        headers = {}
        for name, values in Mapping().check(value, path).items():
            key_path = join(path, name)
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise ConfigError(key_path, "not a valid HTTP header name")
            if not isinstance(values, list):
                raise ConfigError(
                    key_path,
                    f"expected a list of strings such as [nosniff], got {describe(values)}",
                )
            for index, item in enumerate(values):
                item_path = f"{key_path}[{index}]"
                String().check(item, item_path)
                if re.search(r"[\r\n\0]", item):
                    raise ConfigError(item_path, "header values cannot contain CR, LF or NUL")
            headers[name] = list(values)
        return headers


class Regexp(String):
    """A Python regular expression, kept as its source."""

    name = "regular expression"

    def check(self, value, path):
        super().check(value, path)
        try:
            re.compile(value)
        except re.error as error:
            raise ConfigError(path, f"not a regular expression: {error}") from None
        return value


class Custom(ValueType):
    """A type given by a function ``check(value, path)``, for keys whose
    rule is theirs alone (http.prefix, workers...)."""

    def __init__(self, check, name):
        self.check = check
        self.name = name

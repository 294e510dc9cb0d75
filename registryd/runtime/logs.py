"""Log line formats: twistd's text, or one JSON object per line.

twistd decides where log lines go (stdout, ``--logfile``...) and formats
them as text.  Log shippers and the systemd journal do better with JSON, so
with ``log.formatter: json`` (or ``logstash``), or when no formatter is
configured and stdout is the systemd journal (``JOURNAL_STREAM`` names
stdout's device and inode), :class:`LogFormat` switches every file
observer twistd installed to one JSON object per line.

A JSON line carries the time, level, namespace and formatted message,
``log.fields`` from the configuration, and every plain value of the event
(so an access-log line has ``method``, ``path``, ``status``... as keys).
Under the journal each line starts with a ``<N>`` syslog priority prefix,
which journald strips and uses as the entry's priority.

Switching uses ``FileLogObserver.formatEvent``, a public attribute of the
observers twistd makes; other observers (``--syslog``, custom
``--logger``) keep their own format.

:class:`LogLevelFilter` applies ``log.level`` to the same observers.
Both find twistd's observers through :func:`registryd.compat.log_observers`.
"""

import json
import os
from datetime import datetime, timezone

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    Logger,
    LogLevel,
    PredicateResult,
    formatEvent,
    globalLogPublisher,
)
from zope.interface import implementer

from registryd import compat

_log = Logger()

_PRIORITY = {
    LogLevel.critical: 2,
    LogLevel.error: 3,
    LogLevel.warn: 4,
    LogLevel.info: 6,
    LogLevel.debug: 7,
}

_PLAIN = (str, int, float, bool, type(None))


def journal_is_stdout(environ=None):
    """True when stdout or stderr is the systemd journal's stream, as
    systemd documents for JOURNAL_STREAM ("<device>:<inode>")."""
    environ = os.environ if environ is None else environ
    value = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
    except ValueError:
        return False
    for descriptor in (1, 2):
        try:
            info = os.fstat(descriptor)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (device, inode):
            return True
    return False


def choose_format(formatter, environ=None):
    """ "text", "json" or "logstash" for ``log.formatter`` (None: not set)."""
    if formatter is not None:
        return formatter
    return "json" if journal_is_stdout(environ) else "text"


class JSONLineFormatter:
    """Formats a twisted.logger event as one JSON line (a ``formatEvent``
    for ``FileLogObserver``)."""

    def __init__(self, fields=None, style="json", priority_prefix=False):
        self.fields = dict(fields or {})
        self.style = style
        self.priority_prefix = priority_prefix

    def record(self, event):
        """The event as a dict of JSON values."""
        level = event.get("log_level")
        when = datetime.fromtimestamp(event.get("log_time") or 0, timezone.utc)
        timestamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        message = formatEvent(event)
        record = dict(self.fields)
        for key, value in event.items():
            if not key.startswith("log_") and isinstance(value, _PLAIN) and key != "format":
                record[key] = value
        if self.style == "logstash":
            record.update({"@timestamp": timestamp, "@version": "1", "message": message})
        else:
            record.update({"time": timestamp, "msg": message})
        record["level"] = level.name if level is not None else "info"
        if event.get("log_namespace"):
            record["namespace"] = event["log_namespace"]
        failure = event.get("log_failure")
        if failure is not None:
            try:
                record["traceback"] = failure.getTraceback()
            except Exception:  # a broken failure must not break logging
                record["traceback"] = repr(failure)
        return record

    def __call__(self, event):
        line = json.dumps(self.record(event), default=str, ensure_ascii=False)
        if self.priority_prefix:
            line = f"<{_PRIORITY.get(event.get('log_level'), 6)}>{line}"
        return line + "\n"


class LogFormat:
    """Applies a format to the file observers of a log publisher, and
    takes it back (tests, embedding)."""

    def __init__(self, formatter=None, fields=None, publisher=globalLogPublisher, environ=None):
        self.style = choose_format(formatter, environ)
        under_journal = formatter is None and self.style == "json"
        self.formatter = (
            None
            if self.style == "text"
            else JSONLineFormatter(fields, self.style, priority_prefix=under_journal)
        )
        self._publisher = publisher
        self._replaced = []  # [(observer, its previous formatEvent)]

    def install(self):
        """Call before observers get wrapped (LogLevelFilter): only bare
        FileLogObservers are switched."""
        if self.formatter is None or self._replaced:
            return
        try:
            observers = compat.log_observers(self._publisher)
        except compat.TwistedChanged as error:
            _log.warn(
                "log.formatter {style} cannot be applied: {error}",
                style=self.style,
                error=str(error),
            )
            return
        for observer in list(observers):
            if isinstance(observer, FileLogObserver):
                self._replaced.append((observer, observer.formatEvent))
                observer.formatEvent = self.formatter

    def uninstall(self):
        for observer, previous in self._replaced:
            observer.formatEvent = previous
        self._replaced = []


@implementer(ILogFilterPredicate)
class _AtLeast:
    """Passes events of ``level`` or above, and any event without a level.

    (``LogLevelFilterPredicate`` also drops events lacking a namespace, which
    would hide raw events some libraries emit.)
    """

    def __init__(self, level):
        self.level = level

    def __call__(self, event):
        level = event.get("log_level")
        if level is not None and level < self.level:
            return PredicateResult.no
        return PredicateResult.maybe


class LogLevelFilter:
    """Applies ``log.level`` to every observer of the global log publisher.

    twistd chooses the observers (stdout, ``--logfile``, ``--syslog``,
    ``--logger``) and adds them before any service starts, without handing
    them to the application.  Wrapping each of them in place while the
    registry runs is the one way to honour the level whatever twistd chose
    (:func:`registryd.compat.log_observers`); if a Twisted ever makes that
    impossible the level is not applied and a warning says so, rather than
    start-up failing.
    """

    def __init__(self, level, publisher=globalLogPublisher):
        self.level = level
        self._publisher = publisher
        self._wrapped = None  # {id(wrapper): original} while installed

    def install(self):
        if self._wrapped is not None or self.level == LogLevel.debug:
            return  # already installed; or nothing to filter
        try:
            observers = compat.log_observers(self._publisher)
        except compat.TwistedChanged as error:
            _log.warn(
                "log.level {level} cannot be applied: {error}",
                level=self.level.name,
                error=str(error),
            )
            return
        predicate = self._predicate = _AtLeast(self.level)
        self._wrapped = {}
        for index, observer in enumerate(observers):
            wrapper = FilteringLogObserver(observer, [predicate])
            self._wrapped[id(wrapper)] = (wrapper, observer)
            observers[index] = wrapper

    def set_level(self, level):
        """Change the level while installed (SIGHUP)."""
        self.level = level
        if self._wrapped is not None:
            self._predicate.level = level
        else:
            self.install()

    def uninstall(self):
        if self._wrapped is None:
            return
        observers = compat.log_observers(self._publisher)
        for index, observer in enumerate(observers):
            if id(observer) in self._wrapped:
                observers[index] = self._wrapped[id(observer)][1]
        self._wrapped = None

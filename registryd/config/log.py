"""The ``log`` section: level, line format, extra fields and the access log.

twistd chooses where log lines go (stdout, ``--logfile``...);
``registryd.runtime.logs`` applies the level and the format to whatever it chose.
"""

import operator

import attr

from registryd.config.schema import not_yet, section, setting
from registryd.config.types import Boolean, Choice, Mapping

#: Distribution's log levels, which are also twisted.logger level names.
LOG_LEVELS = ("error", "warn", "info", "debug")


@section(not_yet("hooks"), not_yet("reportcaller"))
@attr.s(frozen=True, slots=True)
class LogConfig:
    """log: what is logged, and how lines look."""

    level = setting(
        "level", Choice(*LOG_LEVELS), "How much to log; reloadable (SIGHUP).", default="info"
    )
    #: None: JSON lines when stdout is the systemd journal (JOURNAL_STREAM), text otherwise.
    formatter = setting(
        "formatter",
        Choice("text", "json", "logstash"),
        "Line format; unset: JSON lines under systemd, text otherwise.",
        default=None,
    )
    fields = setting("fields", Mapping(), "Added to every JSON line.", factory=dict)
    #: False when log.accesslog.disabled is true.
    accesslog = setting(
        "accesslog.disabled",
        Boolean(),
        "No structured event per request; reloadable.",
        default=True,
        convert=operator.not_,
        shown=False,
    )

"""The ``ui`` section (registryd's own): the web interface
(``registryd.ui``), served under ``/ui/`` unless turned off."""

import attr

from registryd.config.errors import ConfigError
from registryd.config.schema import section, setting
from registryd.config.types import Boolean, Custom, String

#: The shortest ui.sessionkey accepted: 32 characters.
MIN_SESSION_KEY = 32


def _session_key(value, path):
    text = String().check(value, path)
    if len(text) < MIN_SESSION_KEY:
        raise ConfigError(
            path,
            f"expected at least {MIN_SESSION_KEY} characters "
            f"(e.g. the output of: openssl rand -hex 32), got {len(text)}",
        )
    return text


@section()
@attr.s(frozen=True, slots=True)
class UIConfig:
    """ui: the web interface."""

    enabled = setting("enabled", Boolean(), "Serve the web interface under /ui/.", default=True)
    #: the key sessions are signed with; None: one made at start-up (a
    #: restart signs everyone out; worker processes share it)
    session_key = setting(
        "sessionkey",
        Custom(_session_key, "string of 32+ characters"),
        "Signs session cookies; set it to keep sessions across restarts and nodes.",
        default=None,
        secret=True,
    )

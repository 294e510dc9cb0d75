"""The ``notifications`` section: Distribution's webhook endpoints and
events, plus registryd's journal (where undelivered events wait)."""

import os

import attr

from registryd.config.errors import ConfigError
from registryd.config.schema import ListOf, SectionOf, as_tuple, extra, section, setting
from registryd.config.types import (
    HTTPURL,
    NON_NEGATIVE,
    POSITIVE,
    Boolean,
    Choice,
    Duration,
    FilePath,
    Headers,
    Pattern,
    String,
    zero_is,
)

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


def _finish_endpoint(found):
    """ignoredmediatypes and ignore.mediatypes say the same; both count."""
    media_types = list(found.extras.get("ignoredmediatypes", ()))
    media_types += found.values.get("ignored_media_types", [])
    return found.build(ignored_media_types=media_types)


@section(
    extra("ignoredmediatypes", ListOf(String()), "Media types whose events are not sent."),
    finish=_finish_endpoint,
)
@attr.s(frozen=True, slots=True)
class EndpointConfig:
    """notifications.endpoints[]: one webhook receiver."""

    name = setting(
        "name",
        Pattern(
            r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}",
            "expected up to 100 letters, digits, '_', '.' or '-', got {value!r}",
        ),
        "Names the endpoint and its journal.",
        required="required",
    )
    url = setting("url", HTTPURL(), "Where events are POSTed.", required="required")
    headers = setting("headers", Headers(), "Request headers.", factory=dict)
    timeout = setting(
        "timeout",
        Duration(),
        "Per attempt.",
        default=DEFAULT_ENDPOINT_TIMEOUT,
        convert=zero_is(DEFAULT_ENDPOINT_TIMEOUT),
    )
    threshold = setting(
        "threshold",
        NON_NEGATIVE,
        "Failures in a row before backing off.",
        default=DEFAULT_ENDPOINT_THRESHOLD,
        convert=zero_is(DEFAULT_ENDPOINT_THRESHOLD),
    )
    backoff = setting(
        "backoff",
        Duration(),
        "Then one attempt per backoff.",
        default=DEFAULT_ENDPOINT_BACKOFF,
        convert=zero_is(DEFAULT_ENDPOINT_BACKOFF),
    )
    #: ignoredmediatypes and ignore.mediatypes together
    ignored_media_types = setting(
        "ignore.mediatypes",
        ListOf(String()),
        "Media types whose events are not sent.",
        default=(),
        converter=as_tuple,
    )
    ignored_actions = setting(
        "ignore.actions",
        ListOf(Choice(*EVENT_ACTIONS)),
        "Actions whose events are not sent.",
        default=(),
        converter=as_tuple,
    )
    disabled = setting("disabled", Boolean(), "Send nothing to this endpoint.", default=False)


def _finish_notifications(found):
    names = set()
    for index, endpoint in enumerate(found.values.get("endpoints", ())):
        if endpoint.name in names:
            raise ConfigError(
                f"{found.path_of('endpoints')}[{index}].name",
                f"duplicate endpoint name {endpoint.name!r}",
            )
        names.add(endpoint.name)
    directory = found.values.get("journal_directory") or os.path.abspath(DEFAULT_JOURNAL_DIRECTORY)
    return found.build(journal_directory=directory)


@section(finish=_finish_notifications)
@attr.s(frozen=True, slots=True)
class NotificationsConfig:
    """notifications: webhook endpoints and registryd's persisted queue."""

    endpoints = setting(
        "endpoints",
        ListOf(SectionOf(EndpointConfig)),
        "Webhook receivers.",
        default=(),
        converter=as_tuple,
    )
    #: notifications.events.includereferences
    include_references = setting(
        "events.includereferences",
        Boolean(),
        "List a manifest's references in its events.",
        default=False,
    )
    #: notifications.journal.directory (absolute)
    journal_directory = setting(
        "journal.directory",
        FilePath("directory"),
        "Where undelivered events wait.",
        default=None,
        own=True,
        shown=DEFAULT_JOURNAL_DIRECTORY,
    )
    #: notifications.journal.maxevents
    journal_max_events = setting(
        "journal.maxevents",
        POSITIVE,
        "Events kept per endpoint; newer ones are dropped beyond.",
        default=DEFAULT_JOURNAL_MAX_EVENTS,
        own=True,
    )

    @property
    def enabled_endpoints(self):
        return tuple(endpoint for endpoint in self.endpoints if not endpoint.disabled)

"""Distribution's notification events, built from what a handler did.

Handlers call one method of the app's ``events`` object per action
(``blob_pulled``, ``manifest_pushed``...).  The :class:`Notifier` builds
the event once, encodes it once as a JSON line, and hands that line to
every endpoint whose ignore rules let it through.  It returns at once:
persistence and delivery happen elsewhere (``journal``, ``delivery``), so
a slow or dead endpoint never slows a request.

What sends what (Distribution 2.8's listener, with two deliberate
differences noted):

============================  ========  =====================================
request                       action    target
============================  ========  =====================================
GET manifest                  pull      mediaType, digest, size, length,
                                        repository, url, tag (when by tag)
PUT manifest                  push      same; one event per tag (``?tag=``)
DELETE manifest by digest     delete    digest, repository; then for each
                                        tag deleted with it: repository, tag
DELETE manifest by tag        delete    repository, tag
GET blob (after it was sent)  pull      mediaType application/octet-stream,
                                        digest, size, length, repository, url
blob upload completed         push      same as blob pull
POST ?mount= that mounted     mount     same, plus fromRepository
DELETE blob                   delete    digest, repository
DELETE repository (also the   delete    repository
web interface's and the
manhole's delete_repository)
============================  ========  =====================================

A repository delete is Distribution 3's ``RepoDeleted``: action
``delete`` with only ``repository`` in the target (no digest, no tag), one
event for the whole repository, not one per manifest or tag removed with
it.  The manhole's has no request: its ``request`` and ``actor`` are empty.

HEAD requests send nothing (Distribution sends pulls for some of them:
they move no content, and clients issue many).  With
``notifications.events.includereferences``, manifest events list the
manifest's references (``target.references``), as in Distribution 3.
"""

import json
import socket
import uuid
from datetime import datetime, timezone

from twisted.logger import Logger

log = Logger()

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"

#: What Distribution's blob store reports as a blob's media type.
BLOB_MEDIA_TYPE = "application/octet-stream"

PUSH, PULL, MOUNT, DELETE = "push", "pull", "mount", "delete"


def _timestamp(now=None):
    now = now or datetime.now(timezone.utc)
    return now.isoformat().replace("+00:00", "Z")


def request_record(request):
    """Distribution's RequestRecord for a twisted.web request."""
    # Not at module level: registryd.runtime.workers imports this module before
    # share_metrics() may let anything import prometheus_client (accesslog
    # imports registryd.ops.metrics).
    from registryd.http.accesslog import client_address

    def header(name):
        value = request.getHeader(name)
        return value.decode("latin-1") if isinstance(value, bytes) else (value or "")

    return {
        "id": request.context.request_id or "",
        # As Distribution's RemoteAddr: the first X-Forwarded-For entry, else
        # X-Real-Ip (a proxy in front says who the client is), else the peer.
        "addr": (
            header(b"x-forwarded-for").split(",")[0].strip()
            or header(b"x-real-ip").strip()
            or client_address(request)
        ),
        "host": header(b"host"),
        "method": request.method.decode("latin-1"),
        "useragent": header(b"user-agent"),
    }


def build_event(action, target, request=None, actor=None, source=None, event_id=None, now=None):
    """One event, as Distribution's ``notifications.Event`` encodes it.

    :param target: the target dict (see the module docstring).
    :param request: a RequestRecord dict (:func:`request_record`).
    :param actor: the user name, or None.
    :param source: a SourceRecord dict: ``{"addr": ..., "instanceID": ...}``.
    """
    return {
        "id": event_id or str(uuid.uuid4()),
        "timestamp": _timestamp(now),
        "action": action,
        "target": target,
        "request": request or {},
        "actor": {"name": actor} if actor else {},
        "source": source or {},
    }


def encode_event(event):
    """An event as one line of compact JSON (no newline inside), the unit
    the journal stores and envelopes are made of."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def envelope(lines):
    """The request body for encoded events: ``{"events": [...]}``."""
    return b'{"events":[' + b",".join(lines) + b"]}"


def blob_target(name, digest, size, url, from_repository=None):
    target = {
        "mediaType": BLOB_MEDIA_TYPE,
        "digest": str(digest),
        "size": size,
        "length": size,
        "repository": name,
        "url": url,
    }
    if from_repository:
        target["fromRepository"] = from_repository
    return target


def manifest_target(name, stored, url, tag=None, include_references=False):
    size = len(stored.body)
    target = {
        "mediaType": stored.media_type,
        "digest": str(stored.digest),
        "size": size,
        "length": size,
        "repository": name,
        "url": url,
    }
    if tag:
        target["tag"] = tag
    if include_references:
        target["references"] = [ref.to_dict() for ref in stored.manifest.references]
    return target


class IgnoreRules:
    """An endpoint's ``ignoredmediatypes`` and ``ignore: {mediatypes,
    actions}``: an event matching either list is not sent (OR)."""

    def __init__(self, media_types=(), actions=()):
        self.media_types = frozenset(media_types)
        self.actions = frozenset(action.lower() for action in actions)

    def ignores(self, event):
        if event.get("action") in self.actions:
            return True
        media_type = event.get("target", {}).get("mediaType")
        return media_type is not None and media_type in self.media_types


class NullEvents:
    """The events object of an app without notification endpoints."""

    enabled = False

    def emit(self, request, action, target):
        pass

    def blob_pulled(self, request, name, blob):
        pass

    def blob_pushed(self, request, name, blob):
        pass

    def blob_mounted(self, request, name, blob, source):
        pass

    def blob_deleted(self, request, name, digest):
        pass

    def manifest_pulled(self, request, name, stored, reference):
        pass

    def manifest_pushed(self, request, name, stored, tags=()):
        pass

    def manifest_deleted(self, request, name, reference, removed_tags=()):
        pass

    def repository_deleted(self, request, name):
        pass


NO_EVENTS = NullEvents()


class Notifier(NullEvents):
    """Builds events for handlers and fans them out to endpoints.

    Endpoints need ``rules`` (an :class:`IgnoreRules`), ``name`` and
    ``enqueue(line)``; the set can be replaced while running
    (``set_endpoints``, on SIGHUP).
    """

    def __init__(
        self, urls, endpoints=(), include_references=False, source_addr=None, instance_id=None
    ):
        self.urls = urls
        self.include_references = include_references
        self.source = {
            "addr": source_addr or socket.gethostname(),
            "instanceID": instance_id or str(uuid.uuid4()),
        }
        self.set_endpoints(endpoints)

    def set_endpoints(self, endpoints):
        self.endpoints = list(endpoints)

    @property
    def enabled(self):
        return bool(self.endpoints)

    def emit(self, request, action, target):
        """Queue one event for every endpoint that does not ignore it
        (``request`` None: an operator's action, from no request).
        Never raises: a notification problem must not fail a request."""
        if not self.endpoints:
            return
        try:
            event = build_event(
                action,
                target,
                request_record(request) if request is not None else None,
                request.context.user if request is not None else None,
                self.source,
            )
            line = None
            for endpoint in self.endpoints:
                if endpoint.rules.ignores(event):
                    endpoint.ignored()
                    continue
                if line is None:
                    line = encode_event(event)
                endpoint.enqueue(line)
        except Exception:
            log.failure("could not queue a {action} notification", action=action)

    # one method per kind of event, for the handlers

    def blob_pulled(self, request, name, blob):
        if not self.endpoints:
            return
        self.emit(
            request,
            PULL,
            blob_target(name, blob.digest, blob.size, self.urls.blob(request, name, blob.digest)),
        )

    def blob_pushed(self, request, name, blob):
        if not self.endpoints:
            return
        self.emit(
            request,
            PUSH,
            blob_target(name, blob.digest, blob.size, self.urls.blob(request, name, blob.digest)),
        )

    def blob_mounted(self, request, name, blob, source):
        if not self.endpoints:
            return
        self.emit(
            request,
            MOUNT,
            blob_target(
                name, blob.digest, blob.size, self.urls.blob(request, name, blob.digest), source
            ),
        )

    def blob_deleted(self, request, name, digest):
        self.emit(request, DELETE, {"digest": str(digest), "repository": name})

    def manifest_pulled(self, request, name, stored, reference):
        tag = None if ":" in reference else reference
        self._manifest(request, PULL, name, stored, [tag])

    def manifest_pushed(self, request, name, stored, tags=()):
        self._manifest(request, PUSH, name, stored, list(tags) or [None])

    def _manifest(self, request, action, name, stored, tags):
        if not self.endpoints:
            return
        url = self.urls.manifest(request, name, stored.digest)
        for tag in tags:
            self.emit(
                request, action, manifest_target(name, stored, url, tag, self.include_references)
            )

    def manifest_deleted(self, request, name, reference, removed_tags=()):
        """A manifest deleted by digest (then one tag delete per tag that
        went with it, as Distribution sends), or a tag deleted by name."""
        if ":" in str(reference):
            self.emit(request, DELETE, {"digest": str(reference), "repository": name})
            for tag in removed_tags:
                self.emit(request, DELETE, {"repository": name, "tag": tag})
        else:
            self.emit(request, DELETE, {"repository": name, "tag": reference})

    def repository_deleted(self, request, name):
        """A whole repository removed; ``request`` None from the manhole."""
        self.emit(request, DELETE, {"repository": name})

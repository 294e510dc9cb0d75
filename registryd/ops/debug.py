"""The debug listener (``http.debug.addr``): ``/health`` and ``/metrics``.

A second, private HTTP site, apart from the registry API so that it can
listen on a loopback or management address, never behind the API's
proxy, and never be reached by registry clients.  It is a plain
twisted.web resource (no klein, no auth, no streaming): three paths.

- ``/health`` (and Distribution's ``/debug/health``): 200 and ``{}`` when
  every check passes; 503 and ``{"<check>": "<reason>", ...}`` otherwise
  (see ``registryd.ops.health``).
- the Prometheus path (``http.debug.prometheus.path``, ``/metrics`` by
  default), when ``http.debug.prometheus.enabled`` is true: everything in
  ``registryd.ops.metrics`` plus the client library's process metrics.
"""

import json

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from registryd.ops.metrics import exposition_registry

log = Logger()

HEALTH_PATHS = (b"/health", b"/debug/health")


class DebugResource(Resource):
    """The whole debug site: dispatches on the request path."""

    isLeaf = True

    def __init__(self, health, metrics_path=None, registry=REGISTRY):
        super().__init__()
        self.health = health
        self.metrics_path = metrics_path.rstrip("/").encode("utf-8") if metrics_path else None
        self.registry = registry

    def render(self, request):
        request.setHeader(b"Cache-Control", b"no-cache")
        path = request.path.rstrip(b"/") or b"/"
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return self._text(request, 405, b"method not allowed\n")
        if path in HEALTH_PATHS:
            return self._health(request)
        if self.metrics_path is not None and path == self.metrics_path:
            return self._metrics(request)
        return self._text(request, 404, b"not found\n")

    def _text(self, request, status, body, content_type=b"text/plain; charset=utf-8"):
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body

    def _metrics(self, request):
        return self._text(
            request, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode()
        )

    def _health(self, request):
        # The checks run to the end even if the client leaves (a cancelled
        # probe would count as a failed one).
        gone = []
        request.notifyFinish().addErrback(gone.append)

        def answer(status, body):
            if not gone:
                request.write(self._text(request, status, body, b"application/json"))
                request.finish()

        def passed_or_failed(failing):
            body = json.dumps(failing, sort_keys=True).encode("utf-8") + b"\n"
            answer(503 if failing else 200, body)

        def broken(failure):
            log.failure("health status failed", failure)
            answer(500, b'{"health": "internal error"}\n')

        checking = defer.ensureDeferred(self.health.status())
        checking.addCallbacks(passed_or_failed, broken)
        return server.NOT_DONE_YET


def debug_site(health, debug_config):
    """The Site for a :class:`registryd.config.DebugConfig`."""
    metrics_path = debug_config.prometheus_path if debug_config.prometheus_enabled else None

    site = server.Site(DebugResource(health, metrics_path, registry=exposition_registry()))
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # scrapes and probes every few seconds: no access log
    return site

"""One access-log event and one set of metric updates per request.

``registryd.http.web.StreamingRequest`` calls an :class:`AccessLog` exactly once
per request that reached the application, when its response is complete
or its connection is lost.  That single place feeds both the structured
``registryd.access`` log event (method, path, status, bytes in and out,
duration, user, request id, client, user agent, route) and the HTTP
metrics in ``registryd.ops.metrics``, so the two always agree.

Metrics are labelled by route (the klein endpoint name that
``registryd.http.app``'s route table records in ``request.context``; ``other``
for requests no route matched), never by path.
"""

import time

from twisted.logger import Logger

from registryd.ops import metrics

log = Logger(namespace="registryd.access")

#: Methods that get their own label value; anything else is "OTHER".
_METHODS = frozenset(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"])

#: The status recorded for a request whose client left before any answer
#: (nginx's convention; never sent on the wire).
CLIENT_CLOSED = 499

ACCESS_FORMAT = (
    '{client} {user} "{method} {path}" {status} {bytes_out} in={bytes_in} '
    '{duration:.3f}s id={request_id} "{user_agent}"'
)


def _text(value):
    return value.decode("latin-1") if isinstance(value, bytes) else value


def route_name(request):
    """The klein endpoint name of the route that matches ``request`` (a
    metrics label with few values, unlike the path), or None."""
    from klein.interfaces import IKleinRequest

    try:
        rule, _ = IKleinRequest(request).mapper.match(return_rule=True)
    except Exception:  # no mapper, or no match: not a routed request
        return None
    return rule.endpoint


def client_address(request):
    """The peer's address as ``host:port`` (or the UNIX socket's description)."""
    peer = request.getClientAddress()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if host is None:
        return "-"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _RequestMetrics:
    """The HTTP metrics' children for each (route, method, status), made
    once: prometheus_client's ``labels()`` validates and joins its label
    values on every call, a cost every request would otherwise pay.  The
    keys are bounded (routes, methods and statuses are few), so is this."""

    def __init__(self):
        self._children = {}
        #: route -> (received bytes child, sent bytes child)
        self._bytes = {}

    def record_bytes(self, route, received, sent):
        children = self._bytes.get(route)
        if children is None:
            children = self._bytes[route] = (
                metrics.HTTP_RECEIVED_BYTES.labels(route),
                metrics.HTTP_SENT_BYTES.labels(route),
            )
        if received:
            children[0].inc(received)
        if sent:
            children[1].inc(sent)

    def record(self, route, method, status, duration):
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            labels = (route, method, str(status))
            children = self._children[key] = (
                metrics.HTTP_REQUESTS.labels(*labels),
                metrics.HTTP_REQUEST_DURATION.labels(*labels),
            )
        children[0].inc()
        children[1].observe(duration)


class AccessLog:
    """Records finished requests: metrics always, the log event if enabled."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self._metrics = _RequestMetrics()

    def __call__(self, request, aborted=False):
        duration = time.monotonic() - request.started
        context = request.context
        route = context.route or route_name(request) or "other"
        method = _text(request.method or b"-")
        label_method = method if method in _METHODS else "OTHER"
        status = int(request.code)
        if aborted and not request.startedWriting:
            status = CLIENT_CLOSED  # no answer was sent: not the default 200
        bytes_in = context.bytes_received
        bytes_out = request.sentLength
        self._metrics.record(route, label_method, status, duration)
        self._metrics.record_bytes(route, bytes_in, bytes_out)
        if aborted:
            metrics.HTTP_REQUESTS_ABORTED.labels(route, label_method).inc()
        if not self.enabled:
            return
        log.info(
            ACCESS_FORMAT + (" aborted" if aborted else ""),
            method=method,
            path=_text(request.uri or b"-"),
            status=status,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            duration=round(duration, 6),
            user=context.user or "-",
            request_id=context.request_id or "-",
            client=client_address(request),
            user_agent=_text(request.getHeader(b"user-agent") or b"-"),
            route=route,
            aborted=aborted,
        )

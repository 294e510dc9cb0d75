"""What registryd knows about one request, in one typed place.

``registryd.http.web.StreamingRequest`` makes a :class:`RequestContext` when the
request is created (``request.context``, always there); the web layer puts
the body and its byte count in it, the route decorator
(``registryd.http.api.routing``) the request id, route and grant, and the access
log and notifications read it back.  Nothing else is hung on the
twisted.web request.
"""

from random import getrandbits

import attrs


def new_request_id():
    """A request id for logs, error details and notifications: 16 random
    hex digits (64 bits, as uuid4().hex[:16] gave).  It only tells
    requests apart, so it comes from :mod:`random` (reseeded in every
    forked process), not from a ``getrandom`` system call per request."""
    return f"{getrandbits(64):016x}"


@attrs.define(slots=True, eq=False)
class RequestContext:
    #: the id logged for the request and sent in a 500's detail; None
    #: until the application takes the request
    request_id: str | None = None
    #: the klein endpoint name (the metrics label), None for a request no
    #: route took
    route: str | None = None
    #: registryd.interfaces.IGrant: what the caller may do (set once
    #: authorized)
    grant: object = None
    #: the authenticated user name; also set for a known user refused an
    #: action, so the access log names them
    user: str | None = None
    #: request body bytes received, streamed or buffered
    bytes_received: int = 0
    #: the body: a registryd.http.web.RequestBody read while it arrives for a
    #: route that streams it (uploads), else a registryd.http.web.LimitedBuffer
    body: object = None

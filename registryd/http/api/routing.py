"""The route table: each route declares, per method, what its handler needs.

Every route of ``registryd.http.app`` is one :meth:`RouteTable.add` call naming,
for each HTTP method, an :class:`Endpoint`: the handler, the accesses it
needs on the route's repository, its body mode (streamed while it arrives,
or buffered up to the manifest size limit) and whether it runs to
completion when its client leaves.  From that one declaration:

* klein gets the route, with a view that records the route on the
  request's context, passes the request through the application's
  admission step (common headers, health, path and name checks,
  authorization, read-only and proxy refusals) and then runs the handler;
* the web layer learns the body mode (:meth:`RouteTable.body_mode`) as
  soon as a request's headers are in, so an upload is dispatched before its
  body and nothing else is;
* the fast dispatch (``registryd.http.fast_dispatch``) gets the same
  routes precompiled (:meth:`RouteTable.exact_routes`), for the plain
  request targets that make up most of the traffic.
"""

from collections.abc import Callable
from urllib.parse import unquote_to_bytes

import attrs
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from registryd.http.api.base import shielded
from registryd.http.context import new_request_id
from registryd.http.fast_dispatch import ExactRoutes, FastRoute, compile_pattern
from registryd.http.web import BUFFERED, STREAMED, BodyConnectionLost


@attrs.frozen
class Endpoint:
    """What one method of a route runs and needs.

    :ivar handler: ``async (app, request, **route parameters)``, answering
        the response body.
    :ivar needs: the actions the caller needs on the route's repository
        (``name``); for a route without one, the ``Access`` values themselves
        (none: just a known caller, as for ``/v2/``).
    :ivar body: :data:`STREAMED` or :data:`BUFFERED`.
    :ivar completes: run the handler to the end when its client leaves (an
        upload stores the bytes that arrived; the client resumes from them).
    """

    handler: Callable
    needs: tuple = ()
    body: str = BUFFERED
    completes: bool = False


def endpoint(handler, *needs, body=BUFFERED, completes=False):
    """An :class:`Endpoint` needing ``needs`` (actions or accesses)."""
    return Endpoint(handler, needs, body, completes)


async def run_to_completion(work):
    """Await ``work`` (a coroutine) so that a client disconnect does not
    cancel it.

    klein cancels a handler when its client goes away.  An upload handler
    must instead go on: the body bytes that arrived before the disconnect
    are to be stored (the client resumes from them), and that can only
    happen once the handler reaches the point where it reads the body.
    """
    result = shielded(
        defer.ensureDeferred(work), (BodyConnectionLost, CancelledError), "upload handler"
    )
    try:
        return await result
    except BodyConnectionLost:
        return None  # nobody is left to answer


def _path_info(path):
    """The request target ``path`` (bytes) as klein matches it: without the
    query, each segment percent-decoded (as twisted.web's ``postpath``), as
    text."""
    segments = path.split(b"?", 1)[0].split(b"/")
    return b"/".join(unquote_to_bytes(segment) for segment in segments).decode("utf-8")


class RouteTable:
    """The routes of one klein app, with what each method needs.

    :param klein: the :class:`klein.Klein` the routes are added to.
    """

    def __init__(self, klein):
        self._klein = klein
        #: endpoint name -> {method (bytes): Endpoint}
        self._routes = {}
        #: the methods some route streams: only these need a route lookup
        #: for their body mode
        self._streaming_methods = set()
        #: every route but the branches, for the fast dispatch
        self._fast_routes = []
        #: the branches' URLs: paths below them are klein's alone
        self._branches = []

    def add(self, url, name, methods, api=True, branch=False):
        """Route ``url`` (a werkzeug pattern) as klein endpoint ``name`` (the
        metrics label) to ``methods``, a {method (bytes): :class:`Endpoint`}.

        An ``api`` route (everything under ``/v2/``) passes the application's
        admission step (``app.admit``) before its handler; the token server
        and the web interface do not (they answer for themselves).

        A ``branch`` route also takes every path below ``url``; its handler
        answers a resource (another klein app) that routes the rest.
        """
        table = dict(methods)
        if b"GET" in table:
            table.setdefault(b"HEAD", table[b"GET"])  # werkzeug takes HEAD wherever GET is
        self._routes[name] = table
        if branch:
            self._routes[name + "_branch"] = table  # klein's endpoint for the paths below
        self._streaming_methods.update(m for m, e in table.items() if e.body == STREAMED)

        allowed = sorted(m.decode("ascii") for m in table)

        async def view(app, request, **params):
            context = request.context
            context.route = name
            needed = table.get(request.method)
            if needed is None:
                # werkzeug matched the method ignoring case; HTTP's methods
                # are case-sensitive (RFC 9110), and Distribution's router
                # answers "get" 405 too.
                raise MethodNotAllowed(valid_methods=allowed)
            if api:
                await app.admit(request, params.get("name"), needed.needs)
            else:
                context.request_id = new_request_id()
            work = needed.handler(app, request, **params)
            if needed.completes:
                return await run_to_completion(work)
            return await work

        view.__name__ = name
        if branch:
            self._branches.append(url)
        else:
            self._fast_routes.append(
                FastRoute(
                    name,
                    url,
                    compile_pattern(url),
                    frozenset(table),
                    view,
                    # what klein moves from postpath to prepath for the route
                    url.count("/") - (1 if url.endswith("/") else 0),
                )
            )
        self._klein.route(
            url,
            methods=[m.decode("ascii") for m in methods],
            endpoint=name,
            branch=branch,
        )(view)
        return view

    def exact_routes(self):
        """The routes as :class:`registryd.http.fast_dispatch.ExactRoutes`
        match them."""
        return ExactRoutes(self._fast_routes, self._branches)

    def body_mode(self, method, path):
        """:data:`STREAMED` or :data:`BUFFERED`: how the route that takes ``method``
        on ``path`` (the raw request target, bytes) reads its body."""
        if method not in self._streaming_methods:
            return BUFFERED
        try:
            name, _ = self._klein.url_map.bind("registryd").match(
                _path_info(path), method=method.decode("latin-1")
            )
        except (HTTPException, UnicodeDecodeError):
            return BUFFERED  # no route takes it: it is answered without its body
        return self._routes[name][method].body

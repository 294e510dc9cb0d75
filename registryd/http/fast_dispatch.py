"""The hot /v2/ routes dispatched without klein's per-request machinery.

klein routes a request by extracting and decoding the URL's parts,
binding werkzeug's map to them and running its matcher, then wraps the
view in a chain of Deferreds (its result processing, each error handler in
turn, the response writer) and adapts the request to ``IKleinRequest``: for a
manifest pull that was a sixth of the server's CPU.  Most /v2/ request
targets are plain ASCII (a name, ``manifests``/``blobs``/``tags``, a tag or
a digest), and for those the route table's own patterns, precompiled here
as regular expressions, say which view takes the request:
:class:`ExactRoutes` answers the route only when exactly one pattern
matches the whole path and the route takes the method, and
:class:`FastDispatch` then runs the view and the application's error
handlers as klein would.  Everything else (a percent-encoded or non-ASCII
path, ``//``, an unknown method, a path outside /v2/, a Host that is
not plain ASCII) goes through klein unchanged, which stays the one router:
the patterns come from the route table (``registryd.http.api.routing``),
and ``tests/unit/test_fast_dispatch.py`` checks with hypothesis that every
answer here is werkzeug's.
"""

import re

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from registryd import compat

log = Logger()

#: The werkzeug converters the route table uses, as werkzeug matches them:
#: ``path`` is ``[^/].*?`` and the default (``string``) ``[^/]+``.  A route
#: with any other converter is refused when the table is built, so that
#: nothing is matched differently from werkzeug.
_CONVERTER = re.compile(r"<(?:(path|string):)?([A-Za-z_]\w*)>")
_ANY_CONVERTER = re.compile(r"<[^>]*>")

#: A /v2/ path the patterns may match as they are: ASCII letters, digits and
#: the separators of names, tags and digests, no empty segment but the last
#: (werkzeug would redirect ``//``), no percent-encoding (klein matches the
#: decoded path) and no query (``request.path`` has none).
_PLAIN_PATH = re.compile(rb"/v2/(?:[A-Za-z0-9._:+=@~-]+/)*[A-Za-z0-9._:+=@~-]*")

#: A host name werkzeug takes as it is, once klein appended the port:
#: ASCII labels of at most 63 characters (57 and ``:65535``), none empty
#: (``str.encode("idna")``, which werkzeug's ``Map.bind`` runs, refuses
#: anything else with BadHost).
_PLAIN_HOST = re.compile(r"(?:[A-Za-z0-9_:-]{1,57}\.)*[A-Za-z0-9_:-]{1,57}\.?")


def plain_host(host):
    """Whether ``host`` (bytes, the request's host name without its port) is
    one werkzeug takes with any port appended: then the fast dispatch need
    not ask it."""
    try:
        return _PLAIN_HOST.fullmatch(host.decode("ascii")) is not None
    except UnicodeDecodeError:
        return False


def compile_pattern(url):
    """The regular expression matching what werkzeug's rule ``url`` matches
    (with ``strict_slashes``), its converters as named groups."""
    parts = []
    position = 0
    for converter in _CONVERTER.finditer(url):
        parts.append(re.escape(url[position : converter.start()]))
        shape = r"[^/].*?" if converter.group(1) == "path" else r"[^/]+"
        parts.append(f"(?P<{converter.group(2)}>{shape})")
        position = converter.end()
    tail = url[position:]
    if _ANY_CONVERTER.search(tail) or _ANY_CONVERTER.search(_CONVERTER.sub("", url)):
        raise ValueError(f"route {url!r} uses a converter the fast dispatch cannot match")
    parts.append(re.escape(tail))
    return re.compile("".join(parts), re.DOTALL)


@attrs.frozen
class FastRoute:
    """One route of the table, as the fast dispatch matches it.

    :ivar name: the klein endpoint name.
    :ivar url: its werkzeug pattern.
    :ivar pattern: :func:`compile_pattern` of its URL.
    :ivar methods: the methods it takes (bytes; HEAD wherever GET).
    :ivar view: the route table's view, ``async (app, request, **params)``.
    :ivar segment_count: the path segments klein moves from ``postpath`` to
        ``prepath`` for it.
    """

    name: str
    url: str
    pattern: re.Pattern
    methods: frozenset
    view: object
    segment_count: int


class ExactRoutes:
    """The route table's /v2/ routes, matched without werkzeug where that
    gives werkzeug's answer."""

    def __init__(self, routes, branches=()):
        """:param routes: :class:`FastRoute` values, every route of the table
            but its branches (a path is matched only when exactly one of
            them matches).
        :param branches: the branch routes' URLs: no path at or below one
            is matched here."""
        self._branches = tuple(branch.rstrip("/").encode("ascii") for branch in branches)
        # Each route is tried only on paths that have its literal last (or,
        # before a one-segment converter, second to last) segment, or that
        # are its whole URL: a dozen regular expressions per request would
        # cost more than the rest of the matching.
        self._whole = {}
        self._by_last = {}
        self._by_second_last = {}
        self._always = []
        for route in routes:
            index, key = _literal_segment(route.url)
            if index == "whole":
                self._whole.setdefault(key, []).append(route)
            elif index == "last":
                self._by_last.setdefault(key, []).append(route)
            elif index == "second_last":
                self._by_second_last.setdefault(key, []).append(route)
            else:
                self._always.append(route)
        for index in (self._whole, self._by_last, self._by_second_last):
            for key, found in index.items():
                index[key] = tuple(found)
        self._always = tuple(self._always)

    def _candidates(self, text):
        segments = text.rsplit("/", 2)
        return (
            self._whole.get(text, ())
            + self._by_last.get(segments[-1], ())
            + self._by_second_last.get(segments[-2], ())
            + self._always
        )

    def match(self, method, path):
        """``(route, params)`` for ``method`` on ``path`` (bytes, without the
        query), or None: klein routes it."""
        if not _PLAIN_PATH.fullmatch(path) or path.startswith(self._branches):
            return None
        text = path.decode("ascii")
        found = None
        for route in self._candidates(text):
            matched = route.pattern.fullmatch(text)
            if matched is not None:
                if found is not None:
                    return None  # two patterns match: werkzeug's order decides
                found = route, matched.groupdict()
        if found is None or method not in found[0].methods:
            return None
        return found


def _literal_segment(url):
    """Which segment of a path ``url`` (a werkzeug pattern) matches is a
    literal one, as ``(where, text)``: ``("whole", url)`` without converters,
    ``("last", ...)`` when it ends with a literal segment, ``("second_last",
    ...)`` when a one-segment converter follows a literal segment, else
    ``("none", None)``."""
    converters = list(_CONVERTER.finditer(url))
    if not converters:
        return "whole", url
    last = converters[-1]
    tail = url[last.end() :]
    if "/" in tail:
        return "last", tail.rsplit("/", 1)[1]
    if tail or last.group(1) == "path":
        return "none", None
    before = url[: last.start()]
    start = converters[-2].end() if len(converters) > 1 else 0
    literal = before[start:]
    if literal.endswith("/") and literal[:-1].count("/") >= 1:
        return "second_last", literal[:-1].rsplit("/", 1)[1]
    return "none", None


class FastDispatch:
    """Runs a matched route's view for a klein resource, as klein would: the
    view's result written and the request finished, its failure through the
    application's error handlers in their order (a handler that fails
    passes its failure to the ones after it), the view cancelled when the
    client leaves."""

    def __init__(self, routes, instance, error_handlers):
        """:param routes: the :class:`ExactRoutes`.
        :param instance: what klein binds views and handlers to (the
            application object).
        :param error_handlers: ``[(exception types, handler)]`` in the order
            klein was given them (``handler(instance, request, failure)``).
        """
        self._routes = routes
        self._instance = instance
        self._error_handlers = tuple(error_handlers)
        self._hosts = set()

    def match(self, request):
        """The ``(route, params)`` that takes ``request``, or None (klein
        routes it)."""
        found = self._routes.match(request.method, request.path)
        if found is None or not self._plain_host(request):
            return None
        return found

    def _plain_host(self, request):
        host = request.getRequestHostname()
        if host in self._hosts:
            return True
        plain = plain_host(host)
        if plain:
            if len(self._hosts) >= 64:
                self._hosts.clear()  # bounded: a client may send any Host
            self._hosts.add(host)
        return plain

    def render(self, request, route, params):
        """Start the view; twisted.web's ``NOT_DONE_YET`` contract (the
        response is written and finished here)."""
        count = route.segment_count
        if count:
            request.prepath.extend(request.postpath[:count])
            request.postpath = request.postpath[count:]
        state = _Running(self, request)
        view = route.view(self._instance, request, **params)
        # Most views finish without waiting (storage answered from what is
        # kept, authorization from a verified token): run the coroutine's
        # first step here, and wrap it in a Deferred (5 us) only when it
        # waits for something.
        try:
            awaited = view.send(None)
        except StopIteration as done:
            state.settle(done.value, None)
            return
        except Exception:
            state.settle(None, Failure())
            return
        request.notifyFinish().addBoth(state.request_finished)
        running = defer.Deferred.fromCoroutine(_resume(view, awaited))
        state.running = running
        running.addCallbacks(state.write, state.failed)
        running.addErrback(state.write_failed)

    def handle_failure(self, request, failure, finished):
        """The response body the error handlers give for ``failure`` (None:
        nothing more to write)."""
        if finished:
            if not failure.check(defer.CancelledError):
                log.failure("unhandled error processing a request", failure)
            return None
        handlers = self._error_handlers
        while handlers:
            (types, handler), handlers = handlers[0], handlers[1:]
            if failure.check(*types):
                try:
                    return handler(self._instance, request, failure)
                except Exception:
                    failure = Failure()
        request.processingFailed(failure)
        return _NOTHING


async def _resume(view, awaited):
    """Go on with ``view``, a coroutine whose first step yielded ``awaited``
    (a Deferred): what ``Deferred.fromCoroutine`` would have done with it
    from the start, cancellation included (cancelling this cancels what
    the view waits for, and the view sees the CancelledError)."""
    while True:
        try:
            result = await awaited
        except BaseException as error:
            step = view.throw, error
        else:
            step = view.send, result
        try:
            awaited = step[0](step[1])
        except StopIteration as done:
            return done.value


#: A result meaning "the request is answered already" (twisted.web's
#: ``processingFailed`` finished it).
_NOTHING = object()


class _Running:
    """One request's dispatch in progress."""

    __slots__ = ("dispatch", "request", "finished", "running")

    def __init__(self, dispatch, request):
        self.dispatch = dispatch
        self.request = request
        self.finished = False
        self.running = None

    def request_finished(self, result):
        self.finished = True
        if isinstance(result, Failure) and self.running is not None:
            self.running.cancel()  # the client left: klein cancels the view
        return None

    def settle(self, result, failure):
        """The view finished in its first step, with ``result`` or
        ``failure``: answer as the Deferred's callbacks would have."""
        try:
            if failure is None:
                self.write(result)
            else:
                self.failed(failure)
        except Exception:
            self.write_failed(Failure())

    def _over(self):
        """Whether the request is finished or its client gone (klein's
        ``request_finished``, without waiting for notifyFinish)."""
        request = self.request
        return self.finished or bool(request.finished) or compat.request_disconnected(request)

    def failed(self, failure):
        return self.write(self.dispatch.handle_failure(self.request, failure, self._over()))

    def write(self, result):
        if result is _NOTHING:
            return None
        if isinstance(result, str):
            result = result.encode("utf-8")
        if isinstance(result, bytes):
            self.request.write(result)
        if not self._over():
            self.request.finish()
        return None

    def write_failed(self, failure):
        log.failure("unhandled error writing a response", failure)

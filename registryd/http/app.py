"""The klein application: the route table, common headers, one error handler.

Handlers live in ``registryd.http.api``; each gets this app (for the registry
model and the URL builder), the request and the route's parameters.
Every error a client can cause is a ``registryd.errors.RegistryError``,
rendered here and nowhere else as the spec's JSON body and status.
Anything else is a bug: logged with a request id and answered 500 without
internals.
"""

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import BadHost, MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from registryd import compat, errors
from registryd.auth.authorizers import OpenAuthorizer
from registryd.auth.scope import DELETE, PULL, PUSH, Access
from registryd.http.api import (
    base,
    blobs,
    details,
    listing,
    manifests,
    referrers,
    repository,
    token,
    uploads,
    usage,
)
from registryd.http.api.routing import RouteTable, endpoint
from registryd.http.context import new_request_id
from registryd.http.fast_dispatch import FastDispatch
from registryd.http.urls import URLBuilder
from registryd.http.web import STREAMED
from registryd.lifecycle.pulls import NO_PULLS
from registryd.names import check_repository_name
from registryd.notifications.events import NO_EVENTS

log = Logger()

#: the API version header's name as twisted.web keys it
_API_VERSION = base.header_name(base.API_VERSION_HEADER[0])


async def _version_check(app, request):
    """``GET /v2/``: the API is here (and the caller is known to it)."""
    return base.respond(request, 200, body=b"{}", content_type="application/json")


def _token_issuer(app, request):
    if app.token_issuer is None:
        raise errors.NotFound(detail={"path": request.path.decode("latin-1")})
    return app.token_issuer


async def _get_token(app, request):
    """registryd's own token server (registryd.auth.issuer): Docker's form."""
    return await token.get_token(_token_issuer(app, request), request)


async def _post_token(app, request):
    """registryd's own token server: the OAuth2 form."""
    return await token.post_token(_token_issuer(app, request), request)


def _browser_wants_html(request):
    accept = request.getHeader("accept") or ""
    return "text/html" in accept.lower()


async def _root(app, request):
    """``/``: a browser is led to the web interface; an API client gets the
    404 it always got."""
    if app.ui is not None and request.method in (b"GET", b"HEAD") and _browser_wants_html(request):
        request.setResponseCode(302)
        request.setHeader("Location", app.urls.local("/ui/"))
        request.setHeader("Content-Length", "0")
        return b""
    request.setHeader(*base.API_VERSION_HEADER)
    raise errors.NotFound(detail={"path": request.path.decode("latin-1")})


async def _ui(app, request, **params):
    """``/ui/...``: the web interface (registryd.ui), which routes the rest
    of the path and answers for itself (HTML, its own sign-in)."""
    if app.ui is None:
        request.setHeader(*base.API_VERSION_HEADER)
        raise errors.NotFound(detail={"path": request.path.decode("latin-1")})
    return app.ui_resource


async def _ui_without_slash(app, request):
    """``/ui``: where a person types it, the interface is at ``/ui/``."""
    if app.ui is None:
        request.setHeader(*base.API_VERSION_HEADER)
        raise errors.NotFound(detail={"path": request.path.decode("latin-1")})
    request.setResponseCode(301)
    request.setHeader("Location", app.urls.local("/ui/"))
    request.setHeader("Content-Length", "0")
    return b""


def _request_id(request):
    """The request's id: the one its route gave it, or (a request no route
    took) one made now, with the API version header it did not get."""
    context = request.context
    if context.request_id is None:
        context.request_id = new_request_id()
        request.setHeader(*base.API_VERSION_HEADER)
    return context.request_id


class _RegistryResource(KleinResource):
    """klein's resource, refusing URLs it cannot route with the spec's error.

    klein decodes the path and host as UTF-8, and werkzeug encodes the
    host as IDNA, before any route or error handler runs: on failure klein
    logs a traceback and answers text/plain, and werkzeug's ``BadHost``
    becomes Twisted's HTML 500.  A client's bad URL or Host header is no
    server failure: it gets a JSON 400 here.

    Also tells the site each request's body mode, from the route table
    (``body_mode``, registryd.http.web.StreamingSite), and hands the plain
    request targets of the hot routes to the fast dispatch
    (:mod:`registryd.http.fast_dispatch`), which runs the same views and error
    handlers without klein's per-request routing work.
    """

    def __init__(self, klein_app, registry_app):
        super().__init__(klein_app)
        self._registry_app = registry_app
        self.body_mode = registry_app.routes.body_mode
        self._fast = FastDispatch(
            registry_app.exact_routes, registry_app, registry_app.error_handlers
        )

    def render(self, request):
        found = self._fast.match(request)
        if found is not None:
            self._fast.render(request, *found)
            return NOT_DONE_YET
        try:
            b"/".join(request.prepath + request.postpath).decode("utf-8")
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(request, "the request's path or Host header is not UTF-8")
        try:
            return super().render(request)  # routing happens later, in a Deferred
        except BadHost:
            return self._refuse(request, "the Host header is not a valid host name")

    def _refuse(self, request, message):
        return self._registry_app._render_error(request, errors.MalformedRequest(message))


class RegistryApp:
    """The Docker Registry HTTP API V2 / OCI distribution API over a Registry."""

    app = Klein()

    def __init__(
        self,
        registry,
        urls=None,
        headers=None,
        events=None,
        health=None,
        authorizer=None,
        token_issuer=None,
        listing=None,
        ui=None,
        pulls=None,
    ):
        """Collaborators are made by :func:`registryd.runtime.composition.compose`.

        :param registry: what the API serves: the :class:`registryd.storage.registry.Registry`,
            or the pull-through cache around it (:mod:`registryd.proxy`).
        """
        self.registry = registry
        #: registryd.config.ListingConfig: catalog.maxentries, tags.maxtags
        self.listing = listing
        #: registryd.http.urls.URLBuilder: Location headers and event URLs
        self.urls = urls if urls is not None else URLBuilder()
        self.set_headers(headers)
        #: where handlers report pushes, pulls, mounts and deletes
        #: (registryd.notifications.Notifier); a no-op without endpoints
        self.events = events if events is not None else NO_EVENTS
        #: where manifest pulls are counted (registryd.lifecycle.pulls)
        self.pulls = pulls if pulls is not None else NO_PULLS
        #: registryd.ops.health.HealthChecks: while a periodic check fails,
        #: every request is answered 503, as Distribution does
        self.health = health
        #: registryd.interfaces.IAuthorizer: every route asks it, before
        #: any storage work, for the accesses the request needs
        self.authorizer = authorizer if authorizer is not None else OpenAuthorizer()
        #: registryd.auth.issuer.TokenIssuer when registryd is its own
        #: token server (/auth/token), else None
        self.token_issuer = token_issuer
        #: registryd.ui.app.UIApp, the web interface under /ui/, or None
        self.ui = ui
        self.ui_resource = ui.resource() if ui is not None else None

    async def admit(self, request, name, needs):
        """What every /v2/ request passes before its handler (the route
        table's views call it): the headers every response carries, the
        health gate, path and name checks, then authorization.

        Refuses the request (401/403) unless the caller may do ``needs`` on
        repository ``name`` (no name: ``needs`` are the accesses themselves;
        none at all: just a known caller, for /v2/).  Records the request
        id, the grant and the user on the request's context."""
        context = request.context
        context.request_id = new_request_id()
        table = compat.response_header_table(request)
        table[_API_VERSION] = [base.API_VERSION_HEADER[1]]
        for header, value in self._headers:
            table.setdefault(header, []).append(value)
        if self.health is not None and not self.health.healthy:
            raise errors.Unavailable("health checks failing", detail=self.health.failing())
        base.check_raw_path(request)
        if name is None:
            needed = list(needs)
        else:
            check_repository_name(name)  # before it can appear in a challenge
            needed = [Access.repository(name, *needs)]
        try:
            grant = await self.authorizer.authorize(request, needed)
        except errors.Denied as error:
            context.user = error.user  # a known user refused is still worth a log line
            raise
        context.grant = grant
        context.user = grant.user
        if request.method not in (b"GET", b"HEAD"):
            # The one place writes are refused (read-only mode, a
            # pull-through cache): every /v2/ route passes here, after
            # authentication (as in Distribution: 401 first) and before any
            # storage work or body.
            refusal = self.registry.write_refusal()
            if refusal is not None:
                raise refusal

    def set_headers(self, headers):
        """The extra response headers (http.headers); reloadable.  Kept as
        twisted.web keys and sends them (the configuration refused names
        that are not tokens and values with line breaks), so each request
        adds them without encoding them again."""
        self._headers = [
            (base.header_name(name), value if isinstance(value, bytes) else value.encode("utf-8"))
            for name, values in (headers or {}).items()
            for value in values
        ]

    def resource(self):
        """The resource registryd.http.web.StreamingSite serves (it must be
        that site: the route table's views read the request's context)."""
        return _RegistryResource(self.app, self)

    # routes: one declaration each (registryd.http.api.routing)

    routes = RouteTable(app)
    routes.add("/v2/", "api_base", {b"GET": endpoint(_version_check)})
    routes.add(
        "/v2",
        "api_base_no_slash",
        {
            b"GET": endpoint(_version_check),
            b"HEAD": endpoint(_version_check),
        },
    )
    routes.add(
        "/v2/<path:name>/blobs/<digest>",
        "blob",
        {
            b"GET": endpoint(blobs.get_blob, PULL),
            b"HEAD": endpoint(blobs.get_blob, PULL),
            b"DELETE": endpoint(blobs.delete_blob, DELETE),
        },
    )
    # Uploads authorize before their body is read, and finish what they
    # started when the client leaves.
    routes.add(
        "/v2/<path:name>/blobs/uploads/",
        "upload_start",
        {
            b"POST": endpoint(uploads.start_upload, PULL, PUSH, body=STREAMED, completes=True),
        },
    )
    routes.add(
        "/v2/<path:name>/blobs/uploads/<upload_id>",
        "upload",
        {
            b"GET": endpoint(uploads.upload_status, PULL, PUSH, completes=True),
            b"PATCH": endpoint(uploads.patch_upload, PULL, PUSH, body=STREAMED, completes=True),
            b"PUT": endpoint(uploads.finish_upload, PULL, PUSH, body=STREAMED, completes=True),
            b"DELETE": endpoint(uploads.cancel_upload, PULL, PUSH, completes=True),
        },
    )
    routes.add(
        "/v2/<path:name>/manifests/<reference>",
        "manifest",
        {
            b"GET": endpoint(manifests.get_manifest, PULL),
            b"HEAD": endpoint(manifests.get_manifest, PULL),
            b"PUT": endpoint(manifests.put_manifest, PULL, PUSH),
            b"DELETE": endpoint(manifests.delete_manifest, DELETE),
        },
    )
    routes.add("/v2/<path:name>/tags/list", "tags", {b"GET": endpoint(listing.list_tags, PULL)})
    routes.add("/v2/_catalog", "catalog", {b"GET": endpoint(listing.catalog, Access.catalog())})
    routes.add(
        "/v2/<path:name>/referrers/<digest>",
        "referrers",
        {
            b"GET": endpoint(referrers.list_referrers, PULL),
        },
    )
    # registryd's extensions (issue 12): "_registryd" is never a name component
    routes.add(
        "/v2/<path:name>/_registryd/tags",
        "tag_details",
        {
            b"GET": endpoint(details.list_tag_details, PULL),
        },
    )
    routes.add(
        "/v2/<path:name>/_registryd/usage",
        "repository_usage",
        {
            b"GET": endpoint(usage.repository_usage, PULL),
        },
    )
    routes.add(
        "/v2/<path:name>/_registryd/repository",
        "delete_repository",
        {
            b"DELETE": endpoint(repository.delete_repository, DELETE),
        },
    )
    for token_path in ("/auth/token", "/auth/token/"):
        routes.add(
            token_path,
            "auth_token",
            {
                b"GET": endpoint(_get_token),
                b"POST": endpoint(_post_token),
            },
            api=False,
        )
    del token_path
    # Every method, so that what API clients got at / before the web
    # interface (a JSON 404, never a 405) stays the same.
    routes.add(
        "/",
        "root",
        {
            method: endpoint(_root)
            for method in (b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS")
        },
        api=False,
    )
    routes.add("/ui", "ui_no_slash", {b"GET": endpoint(_ui_without_slash)}, api=False)
    routes.add(
        "/ui/", "ui", {b"GET": endpoint(_ui), b"POST": endpoint(_ui)}, api=False, branch=True
    )
    #: the routes precompiled for the fast dispatch (registryd.http.fast_dispatch)
    exact_routes = routes.exact_routes()

    # errors

    def registry_error(self, request, failure):
        return self._render_error(request, failure.value)

    # werkzeug's router answers a path it would spell differently (a
    # missing trailing slash, '//') with a redirect; Distribution answers
    # 404 for every path that is not exactly an endpoint's, and so do we.
    def not_found(self, request, failure):
        try:
            base.check_unrouted_path(request)  # a decoded '/' or newline may be why
        except errors.NameInvalid as error:
            return self._render_error(request, error)
        return self._render_error(
            request, errors.NotFound(detail={"path": request.path.decode("latin-1")})
        )

    def method_not_allowed(self, request, failure):
        allowed = failure.value.valid_methods or []
        return self._render_error(request, errors.method_not_allowed(request.method, allowed))

    def unexpected_error(self, request, failure):
        if failure.check(CancelledError):
            return None  # the client went away; nothing to answer
        request_id = _request_id(request)
        log.failure(
            "request {request_id} {method} {path} failed",
            failure,
            request_id=request_id,
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
        )
        error = errors.RegistryError(
            "internal server error", detail={"request_id": request_id}, status=500
        )
        return self._render_error(request, error)

    #: The error handlers, in the order they are tried: klein's, and the
    #: fast dispatch's (registryd.http.fast_dispatch) from this one list.
    error_handlers = (
        ((errors.RegistryError,), registry_error),
        ((NotFound, RequestRedirect), not_found),
        ((MethodNotAllowed,), method_not_allowed),
        ((Exception,), unexpected_error),
    )
    for _types, _handler in error_handlers:
        app.handle_errors(*_types)(_handler)
    del _types, _handler

    def _render_error(self, request, error):
        if request.startedWriting:
            # Headers are gone already (a blob was being sent): all we can
            # do is cut the connection so the client sees a short body.
            request.transport.abortConnection()
            return None
        _request_id(request)
        for name, value in error.headers.items():
            request.setHeader(name, value)
        body = error.body()
        request.setResponseCode(error.status)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Content-Length", str(len(body)))
        return b"" if request.method == b"HEAD" else body

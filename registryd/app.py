"""The klein application: the route table, common headers, one error handler.

Handlers live in ``registryd.api``; each gets this app (for the registry
model and the URL builder), the request and the route's parameters.
Every error a client can cause is a ``registryd.errors.RegistryError``,
rendered here and nowhere else as the spec's JSON body and status.
Anything else is a bug: logged with a request id and answered 500 without
internals.
"""

import uuid

from klein import Klein
from klein.resource import KleinResource
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from werkzeug.exceptions import BadHost, MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from registryd import errors
from registryd.api import (
    base, blobs, details, listing, manifests, referrers, repository, token, uploads, usage,
)
from registryd.auth.authorizers import OpenAuthorizer
from registryd.auth.scope import DELETE, PULL, PUSH, Access
from registryd.names import check_repository_name
from registryd.accesslog import route_name
from registryd.lifecycle.pulls import NO_PULLS
from registryd.notifications.events import NO_EVENTS
from registryd.urls import URLBuilder
from registryd.web import BodyConnectionLost

log = Logger()


async def _run_to_completion(work):
    """Await C{work} (a coroutine) so that a client disconnect does not
    cancel it.

    klein cancels a handler when its client goes away.  An upload handler
    must instead go on: the body bytes that arrived before the disconnect
    are to be stored (the client resumes from them), and that can only
    happen once the handler reaches the point where it reads the body.
    """
    result = base.shielded(
        defer.ensureDeferred(work), (BodyConnectionLost, CancelledError), "upload handler"
    )
    try:
        return await result
    except BodyConnectionLost:
        return None  # nobody is left to answer


class _RegistryResource(KleinResource):
    """klein's resource, refusing URLs it cannot route with the spec's error.

    klein decodes the path and host as UTF-8, and werkzeug encodes the
    host as IDNA, before any route or error handler runs: on failure klein
    logs a traceback and answers text/plain, and werkzeug's C{BadHost}
    becomes Twisted's HTML 500.  A client's bad URL or Host header is no
    server failure: it gets a JSON 400 here.
    """

    def __init__(self, klein_app, registry_app):
        super().__init__(klein_app)
        self._registry_app = registry_app

    def render(self, request):
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

    def __init__(self, registry, host=None, headers=None, events=None, health=None,
                 relative_urls=False, prefix=None, listing=None, pulls=None):
        self.registry = registry
        #: registryd.config.ListingConfig: catalog.maxentries, tags.maxtags
        self.listing = listing
        self.urls = URLBuilder(host, relative=relative_urls, prefix=prefix)
        self.set_headers(headers)
        #: where handlers report pushes, pulls, mounts and deletes
        #: (registryd.notifications.Notifier); a no-op without endpoints
        self.events = events if events is not None else NO_EVENTS
        #: where manifest pulls are counted (registryd.lifecycle.pulls)
        self.pulls = pulls if pulls is not None else NO_PULLS
        #: registryd.health.HealthChecks: while a periodic check fails,
        #: every request is answered 503, as Distribution does
        self.health = health
        #: registryd.interfaces.IAuthorizer: every route asks it, before
        #: any storage work, for the accesses the request needs
        self.authorizer = OpenAuthorizer()
        #: registryd.auth.issuer.TokenIssuer when registryd is its own
        #: token server (/auth/token), else None
        self.token_issuer = None

    async def _authorize(self, request, name, *actions):
        """Refuse the request (401/403) unless the caller may do
        C{actions} on repository C{name} (no name: C{actions} are the
        accesses themselves; none at all: just a known caller, for /v2/).
        Sets C{request.grant} (an IGrant) and C{request.authenticated_user}."""
        if name is None:
            needed = list(actions)
        else:
            check_repository_name(name)  # before it can appear in a challenge
            needed = [Access.repository(name, *actions)]
        try:
            grant = await self.authorizer.authorize(request, needed)
        except errors.RegistryError:
            # A known user refused an action is still worth a log line.
            request.authenticated_user = getattr(getattr(request, "grant", None), "user", None)
            raise
        request.grant = grant
        request.authenticated_user = grant.user
        if request.method not in (b"GET", b"HEAD"):
            # The one place writes are refused (read-only mode, a
            # pull-through cache): every /v2/ route passes here, after
            # authentication (as in Distribution: 401 first) and before any
            # storage work or body.
            refusal = self.registry.write_refusal()
            if refusal is not None:
                raise refusal
        return grant

    def set_headers(self, headers):
        """The extra response headers (http.headers); reloadable."""
        self._headers = [
            (name, value) for name, values in (headers or {}).items() for value in values
        ]

    def resource(self):
        return _RegistryResource(self.app, self)

    def _prepare(self, request):
        """Headers every /v2/ response carries, and path sanity checks."""
        request.request_id = uuid.uuid4().hex[:16]
        request.route = route_name(request)
        request.setHeader(*base.API_VERSION_HEADER)
        for name, value in self._headers:
            request.responseHeaders.addRawHeader(name, value)
        if self.health is not None and not self.health.healthy:
            raise errors.Unavailable("health checks failing", detail=self.health.failing())
        base.check_raw_path(request)

    # routes

    @app.route("/v2/", methods=["GET"])
    async def api_base(self, request):
        self._prepare(request)
        await self._authorize(request, None)
        return base.respond(request, 200, body=b"{}", content_type="application/json")

    @app.route("/v2/<path:name>/blobs/<digest>", methods=["GET", "HEAD", "DELETE"])
    async def blob(self, request, name, digest):
        self._prepare(request)
        await self._authorize(request, name, DELETE if request.method == b"DELETE" else PULL)
        if request.method == b"DELETE":
            return await blobs.delete_blob(self, request, name, digest)
        return await blobs.get_blob(self, request, name, digest)

    @app.route("/v2/<path:name>/blobs/uploads/", methods=["POST"])
    async def upload_start(self, request, name):
        self._prepare(request)
        await self._authorize(request, name, PULL, PUSH)  # before the body is read
        return await _run_to_completion(uploads.start_upload(self, request, name))

    @app.route(
        "/v2/<path:name>/blobs/uploads/<upload_id>",
        methods=["GET", "PATCH", "PUT", "DELETE"],
    )
    async def upload(self, request, name, upload_id):
        self._prepare(request)
        await self._authorize(request, name, PULL, PUSH)  # before the body is read
        handler = {
            b"GET": uploads.upload_status,
            b"HEAD": uploads.upload_status,
            b"PATCH": uploads.patch_upload,
            b"PUT": uploads.finish_upload,
            b"DELETE": uploads.cancel_upload,
        }[request.method]
        return await _run_to_completion(handler(self, request, name, upload_id))

    @app.route("/v2/<path:name>/manifests/<reference>", methods=["GET", "HEAD", "PUT", "DELETE"])
    async def manifest(self, request, name, reference):
        self._prepare(request)
        needs = {b"PUT": (PULL, PUSH), b"DELETE": (DELETE,)}.get(request.method, (PULL,))
        await self._authorize(request, name, *needs)
        handler = {
            b"GET": manifests.get_manifest,
            b"HEAD": manifests.get_manifest,
            b"PUT": manifests.put_manifest,
            b"DELETE": manifests.delete_manifest,
        }[request.method]
        return await handler(self, request, name, reference)

    @app.route("/v2/<path:name>/tags/list", methods=["GET"])
    async def tags(self, request, name):
        self._prepare(request)
        await self._authorize(request, name, PULL)
        return await listing.list_tags(self, request, name)

    @app.route("/v2/_catalog", methods=["GET"])
    async def catalog(self, request):
        self._prepare(request)
        await self._authorize(request, None, Access.catalog())
        return await listing.catalog(self, request)

    @app.route("/v2/<path:name>/_registryd/tags", methods=["GET"])
    async def tag_details(self, request, name):
        self._prepare(request)
        await self._authorize(request, name, PULL)
        return await details.list_tag_details(self, request, name)

    @app.route("/v2/<path:name>/_registryd/usage", methods=["GET"])
    async def repository_usage(self, request, name):
        self._prepare(request)
        await self._authorize(request, name, PULL)
        return await usage.repository_usage(self, request, name)

    @app.route("/v2/<path:name>/_registryd/repository", methods=["DELETE"])
    async def delete_repository(self, request, name):
        self._prepare(request)
        await self._authorize(request, name, DELETE)
        return await repository.delete_repository(self, request, name)

    @app.route("/v2/<path:name>/referrers/<digest>", methods=["GET"])
    async def referrers(self, request, name, digest):
        self._prepare(request)
        await self._authorize(request, name, PULL)
        return await referrers.list_referrers(self, request, name, digest)

    @app.route("/v2", methods=["GET", "HEAD"])
    def api_base_no_slash(self, request):
        return self.api_base(request)

    @app.route("/auth/token", methods=["GET", "POST"])
    @app.route("/auth/token/", methods=["GET", "POST"])
    async def auth_token(self, request):
        """registryd's own token server (registryd.auth.issuer)."""
        request.request_id = uuid.uuid4().hex[:16]
        if self.token_issuer is None:
            raise errors.NotFound(detail={"path": request.path.decode("latin-1")})
        if request.method == b"POST":
            return await token.post_token(self.token_issuer, request)
        return await token.get_token(self.token_issuer, request)

    # errors

    @app.handle_errors(errors.RegistryError)
    def registry_error(self, request, failure):
        return self._render_error(request, failure.value)

    # werkzeug's router answers a path it would spell differently (a
    # missing trailing slash, '//') with a redirect; Distribution answers
    # 404 for every path that is not exactly an endpoint's, and so do we.
    @app.handle_errors(NotFound, RequestRedirect)
    def not_found(self, request, failure):
        try:
            base.check_unrouted_path(request)  # a decoded '/' or newline may be why
        except errors.NameInvalid as error:
            return self._render_error(request, error)
        return self._render_error(request, errors.NotFound(detail={"path": request.path.decode("latin-1")}))

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request, failure):
        allowed = failure.value.valid_methods or []
        return self._render_error(
            request,
            errors.Unsupported(
                f"method {request.method.decode('latin-1')} is not allowed here",
                headers={"Allow": ", ".join(allowed)},
            ),
        )

    @app.handle_errors(Exception)
    def unexpected_error(self, request, failure):
        if failure.check(CancelledError):
            return None  # the client went away; nothing to answer
        request_id = getattr(request, "request_id", None) or uuid.uuid4().hex[:16]
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

    def _render_error(self, request, error):
        if request.startedWriting:
            # Headers are gone already (a blob was being sent): all we can
            # do is cut the connection so the client sees a short body.
            request.transport.abortConnection()
            return None
        if not getattr(request, "request_id", None):
            request.request_id = uuid.uuid4().hex[:16]
            request.setHeader(*base.API_VERSION_HEADER)
        for name, value in error.headers.items():
            request.setHeader(name, value)
        body = error.body()
        request.setResponseCode(error.status)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Content-Length", str(len(body)))
        return b"" if request.method == b"HEAD" else body

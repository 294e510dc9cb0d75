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
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import MethodNotAllowed, NotFound

from registryd import errors
from registryd.api import base, blobs, listing, manifests, referrers, uploads
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
    running = defer.ensureDeferred(work)
    result = defer.Deferred()  # no canceller: cancelling it leaves `running` alone

    def finished(outcome):
        if not result.called:
            result.callback(outcome)
        elif isinstance(outcome, Failure) and not outcome.check(BodyConnectionLost, CancelledError):
            log.failure("upload handler failed after its client left", outcome)

    running.addBoth(finished)
    try:
        return await result
    except BodyConnectionLost:
        return None  # nobody is left to answer


class RegistryApp:
    """The Docker Registry HTTP API V2 / OCI distribution API over a Registry."""

    app = Klein()

    def __init__(self, registry, host=None, headers=None):
        self.registry = registry
        self.urls = URLBuilder(host)
        self._headers = [
            (name, value) for name, values in (headers or {}).items() for value in values
        ]

    def resource(self):
        return self.app.resource()

    def _prepare(self, request):
        """Headers every /v2/ response carries, and path sanity checks."""
        request.request_id = uuid.uuid4().hex[:16]
        request.setHeader(*base.API_VERSION_HEADER)
        for name, value in self._headers:
            request.responseHeaders.addRawHeader(name, value)
        base.check_raw_path(request)

    # routes

    @app.route("/v2/", methods=["GET"])
    def api_base(self, request):
        self._prepare(request)
        return base.respond(request, 200, body=b"{}", content_type="application/json")

    @app.route("/v2/<path:name>/blobs/<digest>", methods=["GET", "HEAD", "DELETE"])
    async def blob(self, request, name, digest):
        self._prepare(request)
        if request.method == b"DELETE":
            return await blobs.delete_blob(self, request, name, digest)
        return await blobs.get_blob(self, request, name, digest)

    @app.route("/v2/<path:name>/blobs/uploads/", methods=["POST"])
    async def upload_start(self, request, name):
        self._prepare(request)
        return await _run_to_completion(uploads.start_upload(self, request, name))

    @app.route(
        "/v2/<path:name>/blobs/uploads/<upload_id>",
        methods=["GET", "PATCH", "PUT", "DELETE"],
    )
    async def upload(self, request, name, upload_id):
        self._prepare(request)
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
        return await listing.list_tags(self, request, name)

    @app.route("/v2/_catalog", methods=["GET"])
    async def catalog(self, request):
        self._prepare(request)
        return await listing.catalog(self, request)

    @app.route("/v2/<path:name>/referrers/<digest>", methods=["GET"])
    async def referrers(self, request, name, digest):
        self._prepare(request)
        return await referrers.list_referrers(self, request, name, digest)

    @app.route("/v2", methods=["GET", "HEAD"])
    def api_base_no_slash(self, request):
        return self.api_base(request)

    # errors

    @app.handle_errors(errors.RegistryError)
    def registry_error(self, request, failure):
        return self._render_error(request, failure.value)

    @app.handle_errors(NotFound)
    def not_found(self, request, failure):
        try:
            base.check_raw_path(request)  # a decoded '/' may be why no route matched
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

"""The web interface's routes: a klein app mounted under ``/ui/``.

Pages are rendered on the server from the registry model, in-process (no
HTTP to the registry itself), for the user of the session
(registryd.ui.session) with the grant the API would give them
(registryd.ui.access).  Every page and file carries a strict
Content-Security-Policy (``default-src 'self'``, no inline script or
style), so the browser fetches nothing from anywhere else; the only script
is ``static/ui.js``.

State changes (sign-in, sign-out, deletes) are ``POST`` only, and each
must come from a page of this origin (the ``Origin`` header) and carry the
session's CSRF token; the session cookie is also ``SameSite=Strict``.  A
delete is confirmed on a page of its own before its ``POST``.

Errors a request can cause are the registry's typed errors
(registryd.errors), rendered here as an HTML page with their status.
"""

import hmac

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from registryd import errors
from registryd.auth.headers import client_host
from registryd.digest import Digest
from registryd.http.api.base import query_arg
from registryd.http.context import new_request_id
from registryd.lifecycle.pulls import NO_PULLS
from registryd.names import check_repository_name
from registryd.storage.manifest_store import is_digest_reference
from registryd.storage.tags import check_tag
from registryd.ui import browse
from registryd.ui.pages import Templates, load_static
from registryd.ui.session import COOKIE, SessionCodec

log = Logger()

#: Every UI response: nothing but this origin, no inline script or style,
#: never inside a frame, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
#: Static files are named by their content hash: cache them for a year.
_STATIC_CACHE = "public, max-age=31536000, immutable"


def _origin_of(request):
    """This request's own origin, as a browser on a page of it sends it
    in ``Origin`` (behind a TLS-terminating proxy: X-Forwarded-*)."""

    def first(name):
        value = request.getHeader(name)
        return value.split(",")[0].strip() if value else None

    scheme = first("x-forwarded-proto") or ("https" if request.isSecure() else "http")
    host = first("x-forwarded-host") or first("host")
    return f"{scheme.lower()}://{host}" if host else None


class UIApp:
    """The web interface over a registry.

    :param registry: what the API serves (the registry model, or the
        pull-through cache around it), read in-process.
    :param access: a :class:`registryd.ui.access.UIAccess`.
    :param urls: the API's :class:`registryd.http.urls.URLBuilder` (http.prefix, http.host).
    :param events: where deletes are reported (registryd.notifications),
        as the API's deletes are.
    :param session_key: the key sessions are signed with
        (:func:`registryd.ui.session.process_key`).
    :param pulls: the pulls this process has not written yet
        (registryd.lifecycle.pulls), for the tags' last-pulled times.
    """

    app = Klein()

    def __init__(self, registry, access, urls, events, session_key, pulls=NO_PULLS):
        self.registry = registry
        self.pulls = pulls
        self.access = access
        self.urls = urls
        self.events = events
        self.sessions = SessionCodec(session_key)
        self.static = load_static()
        self.templates = Templates(self.static)

    def resource(self):
        return self.app.resource()

    # sessions and the page frame

    def _link(self, path=""):
        return self.urls.local("/ui/" + path)

    def _session(self, request):
        """The visitor's session; a new anonymous one (with its cookie)
        for a visitor without a valid one."""
        session = self.sessions.decode(request.getCookie(COOKIE))
        if session is None:
            session = self.sessions.new()
            self._set_session(request, session)
        return session

    def _set_session(self, request, session):
        request.addCookie(
            COOKIE,
            self.sessions.encode(session),
            path=self._link(),
            httpOnly=True,
            secure=request.isSecure() or None,
            sameSite="strict",
        )

    def _viewer(self, request):
        """(session, user, grant) of the request."""
        session = self._session(request)
        user = self.access.current_user(session)
        request.context.user = user
        return session, user, self.access.grant(user)

    def _check_form(self, request, session):
        """A POST's guard against cross-site requests: sent by a page of
        this origin, with this session's CSRF token."""
        origin = request.getHeader("origin")
        if origin is None or origin != _origin_of(request):
            raise errors.Denied("this form must be sent from a page of this registry (Origin)")
        token = query_arg(request, "csrf") or ""
        if not hmac.compare_digest(token.encode("utf-8"), session.csrf.encode("utf-8")):
            raise errors.Denied("the form has expired; load the page again")

    def _page(self, request, template, status=200, session=None, user=None, **values):
        request.setResponseCode(status)
        for name, value in _SECURITY_HEADERS:
            request.setHeader(name, value)
        request.setHeader("Cache-Control", "no-store")
        request.setHeader("Content-Type", "text/html; charset=utf-8")
        body = self.templates.render(
            template,
            ui=self._link(),
            user=user,
            session=session,
            can_sign_in=self.access.can_sign_in,
            **values,
        )
        request.setHeader("Content-Length", str(len(body)))
        return b"" if request.method == b"HEAD" else body

    def _redirect(self, request, location):
        request.setResponseCode(303)
        for name, value in _SECURITY_HEADERS:
            request.setHeader(name, value)
        request.setHeader("Location", location)
        request.setHeader("Content-Length", "0")
        return b""

    def _pull_host(self, request):
        """The registry's host as ``docker pull`` names it."""
        base = self.urls.base(request)
        return base.split("://", 1)[-1].split("/", 1)[0] or (request.getHeader("host") or "")

    def _may_delete(self, grant, name):
        return (
            self.registry.delete_enabled
            and self.registry.write_refusal() is None
            and browse.may_delete(grant, name)
        )

    def _readable(self, grant, name):
        """Repository ``name``, if the user may pull it; to anyone else it
        does not exist (NAME_UNKNOWN, as for a name never pushed)."""
        check_repository_name(name)
        if not browse.may_pull(grant, name):
            raise errors.NameUnknown(detail={"name": name})
        return self.registry.repository(name)

    # pages

    @app.route("/", methods=["GET"])
    async def repositories(self, request):
        session, user, grant = self._viewer(request)
        query = (query_arg(request, "q") or "")[:256]
        last = query_arg(request, "last")
        if last is not None:
            last = last[:256]
        page = await browse.repositories(self.registry, grant, query, last)
        usage = await browse.usage(self.registry, page.rows)
        return self._page(
            request,
            "repositories.html",
            session=session,
            user=user,
            page=page,
            query=query,
            usage=usage,
        )

    @app.route("/repositories/<path:name>", methods=["GET"])
    async def repository(self, request, name):
        session, user, grant = self._viewer(request)
        repository = self._readable(grant, name)
        last = query_arg(request, "last")
        page = await browse.tags(
            repository, self.pulls, self.registry.immutable_tags, last[:256] if last else None
        )
        return self._page(
            request,
            "repository.html",
            session=session,
            user=user,
            name=repository.name,
            page=page,
            host=self._pull_host(request),
            may_delete=self._may_delete(grant, repository.name),
        )

    @app.route("/repositories/<path:name>/-/manifests/<reference>", methods=["GET"])
    async def manifest(self, request, name, reference):
        session, user, grant = self._viewer(request)
        repository = self._readable(grant, name)
        _check_reference(reference)
        details = await browse.manifest(repository, reference)
        return self._page(
            request,
            "manifest.html",
            session=session,
            user=user,
            name=repository.name,
            reference=reference,
            manifest=details,
            host=self._pull_host(request),
            may_delete=self._may_delete(grant, repository.name),
        )

    @app.route("/repositories/<path:name>/-/delete", methods=["GET"])
    async def confirm_delete(self, request, name):
        session, user, grant = self._viewer(request)
        repository = self._readable(grant, name)
        reference = self._deletable(grant, repository.name, request)
        if is_digest_reference(reference):
            await repository.manifests.resolve(reference)  # 404 for an unknown one
            details = await browse.manifest(repository, reference)
            tags_going = details.tags
        else:
            await repository.manifests.resolve(reference)
            tags_going = []
        return self._page(
            request,
            "delete.html",
            session=session,
            user=user,
            name=repository.name,
            reference=reference,
            tags_going=tags_going,
        )

    @app.route("/repositories/<path:name>/-/delete", methods=["POST"])
    async def delete(self, request, name):
        session, user, grant = self._viewer(request)
        self._check_form(request, session)
        repository = self._readable(grant, name)
        reference = self._deletable(grant, repository.name, request)
        removed_tags = []
        await repository.manifests.delete(reference, removed_tags=removed_tags)
        self.events.manifest_deleted(request, repository.name, reference, removed_tags)
        log.info(
            "ui: {user} deleted {name}:{reference}",
            user=user or "-",
            name=repository.name,
            reference=reference,
        )
        return self._redirect(request, self._link(f"repositories/{repository.name}"))

    @app.route("/repositories/<path:name>/-/remove", methods=["GET"])
    async def confirm_remove(self, request, name):
        session, user, grant = self._viewer(request)
        repository = self._readable(grant, name)
        self._check_may_delete(grant, repository.name)
        await browse.tag_names(repository)  # NAME_UNKNOWN for a repository without manifests
        return self._page(request, "remove.html", session=session, user=user, name=repository.name)

    @app.route("/repositories/<path:name>/-/remove", methods=["POST"])
    async def remove(self, request, name):
        """The whole repository, as ``DELETE /v2/<name>/_registryd/repository``
        removes it: refused (DENIED, shown on the error page) while an
        immutable tag is in it."""
        session, user, grant = self._viewer(request)
        self._check_form(request, session)
        repository = self._readable(grant, name)
        self._check_may_delete(grant, repository.name)
        await browse.tag_names(repository)
        await repository.check_removable()
        await repository.remove()
        self.events.repository_deleted(request, repository.name)
        log.info("ui: {user} removed repository {name}", user=user or "-", name=repository.name)
        return self._redirect(request, self._link())

    def _deletable(self, grant, name, request):
        """The tag or digest the delete form names, if the user may delete it."""
        self._check_may_delete(grant, name)
        reference = query_arg(request, "reference", unique=True)
        if not reference:
            raise errors.BadRequest("which tag or manifest to delete (reference) is missing")
        _check_reference(reference)
        return reference

    def _check_may_delete(self, grant, name):
        """Nothing, if the user may delete in ``name``; else why not."""
        if not self._may_delete(grant, name):
            refusal = self.registry.write_refusal()  # read-only mode, a pull-through cache
            if refusal is not None:
                raise refusal
            if not self.registry.delete_enabled:
                raise errors.Unsupported("deletes are disabled (storage.delete.enabled is false)")
            raise errors.Denied(f"you may not delete in {name}")

    # signing in and out

    @app.route("/login", methods=["GET"])
    def login_form(self, request):
        session, user, _ = self._viewer(request)
        return self._page(
            request, "login.html", session=session, user=user, error=None, username=""
        )

    @app.route("/login", methods=["POST"])
    async def login(self, request):
        session, user, _ = self._viewer(request)
        self._check_form(request, session)
        username = query_arg(request, "username") or ""
        password = query_arg(request, "password") or ""
        try:
            fingerprint = await self.access.sign_in(username, password, client_host(request))
        except (errors.Unauthorized, errors.TooManyRequests) as error:
            for name, value in error.headers.items():
                request.setHeader(name, value)
            return self._page(
                request,
                "login.html",
                status=error.status,
                session=session,
                user=None,
                error=error.message,
                username=username[:256],
            )
        # A new session (and CSRF token) at sign-in: nothing set before it
        # carries over.
        self._set_session(request, self.sessions.new(username, fingerprint))
        log.info("ui: {user} signed in from {client}", user=username, client=client_host(request))
        return self._redirect(request, self._link())

    @app.route("/logout", methods=["POST"])
    def logout(self, request):
        session = self._session(request)
        self._check_form(request, session)
        self._set_session(request, self.sessions.new())
        return self._redirect(request, self._link())

    # static files

    @app.route("/static/<file>", methods=["GET"])
    def static_file(self, request, file):
        found = self.static.get(file)
        if found is None:
            raise errors.NotFound(detail={"path": request.path.decode("latin-1")})
        for name, value in _SECURITY_HEADERS:
            request.setHeader(name, value)
        request.setHeader("Content-Type", found.content_type)
        request.setHeader("Cache-Control", _STATIC_CACHE)
        request.setHeader("ETag", f'"{found.version}"')
        request.setHeader("Content-Length", str(len(found.body)))
        return b"" if request.method == b"HEAD" else found.body

    # errors: a page with the status, never a traceback

    @app.handle_errors(errors.RegistryError)
    def registry_error(self, request, failure):
        return self._error_page(request, failure.value)

    # werkzeug answers a path it would spell differently ('//') with a
    # redirect; such a path is no page, as in the API.
    @app.handle_errors(NotFound, RequestRedirect)
    def not_found(self, request, failure):
        return self._error_page(request, errors.NotFound("no such page"))

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request, failure):
        allowed = failure.value.valid_methods or []
        return self._error_page(request, errors.method_not_allowed(request.method, allowed))

    @app.handle_errors(Exception)
    def unexpected_error(self, request, failure):
        if failure.check(CancelledError):
            return None  # the client went away
        request_id = request.context.request_id or new_request_id()
        log.failure(
            "ui request {request_id} {method} {path} failed",
            failure,
            request_id=request_id,
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
        )
        return self._error_page(
            request,
            errors.RegistryError(f"internal server error (request {request_id})", status=500),
        )

    def _error_page(self, request, error):
        if request.startedWriting:
            request.transport.abortConnection()
            return None
        for name, value in error.headers.items():
            if name.lower() != "www-authenticate":  # a browser would pop up its own dialog
                request.setHeader(name, value)
        session = self.sessions.decode(request.getCookie(COOKIE))
        user = self.access.current_user(session)
        return self._page(
            request, "error.html", status=error.status, session=session, user=user, error=error
        )


def _check_reference(reference):
    """A tag or a digest, or 400 (TAG_INVALID, DIGEST_INVALID)."""
    if is_digest_reference(reference):
        Digest.parse(reference)
    else:
        check_tag(reference)

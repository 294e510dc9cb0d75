"""Every error a client can get, as one exception class per spec error code.

Handlers and the registry model raise these; one klein error handler
(``registryd.http.app``) renders them as the spec's body::

    {"errors": [{"code": "BLOB_UNKNOWN", "message": "...", "detail": {...}}]}

with the class's HTTP status and any extra headers.  Storage errors are
translated into these in the model layer, never in handlers.
"""

import json


class RegistryError(Exception):
    """Base of all client-visible errors.

    Subclasses set ``code`` (the spec's error code), ``status`` (HTTP
    status) and ``message`` (the spec's short description).  An instance may
    carry a more specific message, a JSON-able ``detail`` and extra response
    ``headers`` (e.g. the current ``Range`` on a 416 for an upload).
    """

    code = "UNKNOWN"
    status = 500
    message = "unknown error"

    def __init__(self, message=None, detail=None, headers=None, status=None):
        super().__init__(message or self.message)
        if message is not None:
            self.message = message
        self.detail = detail
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status

    def to_dict(self):
        error = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return error

    def body(self):
        return json.dumps({"errors": [self.to_dict()]}).encode("utf-8")

    def __repr__(self):
        return f"{type(self).__name__}({self.message!r}, detail={self.detail!r})"


class BlobUnknown(RegistryError):
    code, status, message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    code, status, message = "BLOB_UPLOAD_INVALID", 400, "blob upload invalid"


class BlobUploadUnknown(RegistryError):
    code, status, message = "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"


class DigestInvalid(RegistryError):
    code, status = "DIGEST_INVALID", 400
    message = "provided digest did not match uploaded content"


class ManifestBlobUnknown(RegistryError):
    code, status = "MANIFEST_BLOB_UNKNOWN", 400
    message = "manifest references a manifest or blob unknown to registry"


class ManifestInvalid(RegistryError):
    code, status, message = "MANIFEST_INVALID", 400, "manifest invalid"


class ManifestUnverified(RegistryError):
    """A Docker schema 1 manifest whose JWS signatures are missing or fail."""

    code, status, message = "MANIFEST_UNVERIFIED", 400, "manifest failed signature verification"


class TagInvalid(RegistryError):
    code, status, message = "TAG_INVALID", 400, "manifest tag did not match URI"


class ManifestUnknown(RegistryError):
    code, status, message = "MANIFEST_UNKNOWN", 404, "manifest unknown to registry"


class NameInvalid(RegistryError):
    code, status, message = "NAME_INVALID", 400, "invalid repository name"


class NameUnknown(RegistryError):
    code, status, message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class SizeInvalid(RegistryError):
    code, status, message = "SIZE_INVALID", 400, "provided length did not match content length"


class Unauthorized(RegistryError):
    code, status, message = "UNAUTHORIZED", 401, "authentication required"


class Denied(RegistryError):
    """A known caller lacking an action.  Carries the caller's ``user`` name
    so the access log names who was refused."""

    code, status, message = "DENIED", 403, "requested access to the resource is denied"

    def __init__(self, message=None, detail=None, headers=None, user=None):
        super().__init__(message, detail=detail, headers=headers)
        self.user = user


class Unsupported(RegistryError):
    code, status, message = "UNSUPPORTED", 405, "the operation is unsupported"


def method_not_allowed(method, allowed):
    """The 405 for a request whose ``method`` (bytes) the route does not
    take, naming the ``allowed`` ones in ``Allow`` (the API and the web
    interface render it each in their own way)."""
    return Unsupported(
        f"method {method.decode('latin-1')} is not allowed here",
        headers={"Allow": ", ".join(allowed)},
    )


class BadRequest(RegistryError):
    """A request registryd cannot read: a query parameter that is not UTF-8
    or given twice, a token request missing a field or naming another
    service, malformed HTTP (:class:`MalformedRequest`).  The spec has no code
    for these; ``UNSUPPORTED`` with status 400 is what registryd has always
    answered (Distribution's token server answers its own codes with the
    same status, which clients read)."""

    code, status, message = "UNSUPPORTED", 400, "bad request"


class NotFound(Unsupported):
    """A path under /v2/ that names no API endpoint."""

    status = 404
    message = "no such API endpoint"


class MalformedRequest(BadRequest):
    """A request that is not well-formed HTTP, or whose path or Host is not
    UTF-8 or no host name: answered before it reaches any route
    (``registryd.http.web`` for the request line, headers and chunked body,
    ``registryd.http.app`` for the URL)."""

    message = "malformed request"


class RequestURITooLong(MalformedRequest):
    status, message = 414, "request line too long"


class RequestHeadersTooLarge(MalformedRequest):
    status, message = 431, "request header fields too large"


class PaginationNumberInvalid(RegistryError):
    code, status, message = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"


class TooManyRequests(RegistryError):
    code, status, message = "TOOMANYREQUESTS", 429, "too many requests"


class RangeInvalid(RegistryError):
    """A chunk that does not start at the upload's current offset, or a
    ``Content-Range`` that is malformed or disagrees with the body."""

    code, status, message = "RANGE_INVALID", 416, "invalid content range"


class RangeNotSatisfiable(RegistryError):
    """A blob ``Range`` request that lies outside the blob."""

    code, status, message = "RANGE_INVALID", 416, "requested range not satisfiable"


class PayloadTooLarge(RegistryError):
    code, status, message = "SIZE_INVALID", 413, "request body too large"


class Unavailable(RegistryError):
    """The storage backend failed; the client may retry.

    Every 503 carries ``Retry-After`` (RFC 9110 15.6.4), so a client that
    honours it waits a little rather than retrying at once against a full
    disk or a store that is down.
    """

    code, status = "UNAVAILABLE", 503
    message = "storage backend unavailable, retry later"
    #: seconds, for ``Retry-After``
    retry_after = 10

    def __init__(self, message=None, detail=None, headers=None, status=None):
        super().__init__(message, detail, headers, status)
        self.headers.setdefault("Retry-After", str(self.retry_after))


class UpstreamUnavailable(Unavailable):
    """The registry a pull-through cache mirrors (proxy.remoteurl) cannot be
    reached, failed (5xx, 429), or sent content that does not match its
    digest; the client may retry."""

    message = "upstream registry unavailable, retry later"


class UpstreamUnauthorized(Unauthorized):
    """The mirrored registry refused the cache's credentials (or wants some
    and proxy.username/password are not configured).  No challenge is sent:
    the client's own credentials would not help."""

    message = "the upstream registry refused the pull-through cache's credentials"

"""Absolute URLs for ``Location`` headers.

Distribution builds them from ``http.host`` when configured, else from the
request: ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (set by a TLS
terminating proxy) win over the request's own scheme and ``Host``.  Clients
follow these URLs, so getting them right behind a proxy matters.
"""

from urllib.parse import quote

import hyperlink


def _first(request, name):
    value = request.getHeader(name)
    if not value:
        return None
    return value.split(",")[0].strip() or None


class URLBuilder:
    def __init__(self, host=None, relative=False, prefix=None):
        # http.host: "https://registry.example.com" (a path prefix is kept)
        self._host = hyperlink.URL.from_text(host.rstrip("/")) if host else None
        #: http.relativeurls: paths only; the client resolves them
        self.relative = relative
        #: http.prefix ("/path/"): where the routes are, below the host
        self._prefix = (prefix or "/").rstrip("/")

    def base(self, request):
        """The registry's base URL as the client should see it, http.prefix
        included (no trailing /); with http.relativeurls only its path."""
        return self._origin(request) + self._prefix

    def _origin(self, request):
        if self.relative:
            if self._host is None or not any(self._host.path):
                return ""
            return "/" + "/".join(segment for segment in self._host.path if segment)
        if self._host is not None:
            return self._host.to_text()
        scheme = _first(request, "x-forwarded-proto") or ("https" if request.isSecure() else "http")
        host = _first(request, "x-forwarded-host") or _first(request, "host")
        if host is None:
            address = request.getHost()
            host = f"{address.host}:{address.port}"
        return f"{scheme.lower()}://{host}"

    def local(self, path):
        """``path`` (from /v2/...) as the client addresses it on this host:
        with http.prefix, for links relative to the host."""
        return self._prefix + path

    def _path(self, *parts):
        return "/v2/" + "/".join(quote(part, safe="/:@") for part in parts)

    def blob(self, request, name, digest):
        return self.base(request) + self._path(name, "blobs", str(digest))

    def upload(self, request, name, upload_id):
        return self.base(request) + self._path(name, "blobs", "uploads", upload_id)

    def manifest(self, request, name, reference):
        return self.base(request) + self._path(name, "manifests", str(reference))

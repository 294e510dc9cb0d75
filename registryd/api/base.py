"""What every handler needs: query arguments, headers, responses."""

import re

from registryd import errors

API_VERSION_HEADER = (b"Docker-Distribution-API-Version", b"registry/2.0")

# Encoded '/', '\' or NUL in a /v2/ path: twisted.web decodes path segments,
# which would let them change a name's structure.  Refused outright.
_ENCODED_SEPARATORS = re.compile(rb"%(?:2f|5c|00)", re.IGNORECASE)


def check_raw_path(request):
    if _ENCODED_SEPARATORS.search(request.path):
        raise errors.NameInvalid("encoded '/', '\\' or NUL in the request path")


def arg(request, name):
    """The first value of query argument C{name} as str, or None."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise errors.Unsupported(f"query parameter {name!r} is not UTF-8", status=400) from None


def respond(request, status, headers=(), body=b"", content_type=None):
    """Set status, headers and Content-Length; return the body for klein."""
    request.setResponseCode(status)
    for name, value in headers:
        request.setHeader(name, value)
    if content_type is not None:
        request.setHeader("Content-Type", content_type)
    request.setHeader("Content-Length", str(len(body)))
    return body


def upload_headers(request, urls, upload):
    return [
        ("Location", urls.upload(request, upload.name, upload.id)),
        ("Range", upload.range_header()),
        ("Docker-Upload-UUID", upload.id),
    ]


def request_body(request):
    """The streaming body of an upload request (see registryd.web)."""
    body = getattr(request, "body", None)
    if body is None:
        # Not dispatched by StreamingSite (cannot happen for upload routes
        # when served by registryd): refuse rather than buffer.
        raise errors.RegistryError("request body is not streamed", status=500)
    return body

"""The entry point for a pushed manifest: size limit, JSON, media type, schema.

Which schema a body is checked against is decided here, once, from the
request's Content-Type and the body's own ``mediaType``; the two must agree
when both are given, so that the type the registry stores (and later serves)
is never different from what the client declared.
"""

from registryd.errors import PayloadTooLarge
from registryd.manifests import fields, mediatypes
from registryd.manifests.image import parse_docker_manifest, parse_oci_manifest
from registryd.manifests.index import parse_docker_manifest_list, parse_oci_index
from registryd.manifests.schema1 import parse_schema1

#: The largest manifest registryd takes, pushed or fetched from upstream, and
#: so the largest request body it buffers (registryd.http.web): the distribution
#: spec asks registries to accept manifests of at least 4 MiB.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024

_PARSERS = {
    mediatypes.OCI_MANIFEST: parse_oci_manifest,
    mediatypes.OCI_INDEX: parse_oci_index,
    mediatypes.DOCKER_MANIFEST: parse_docker_manifest,
    mediatypes.DOCKER_MANIFEST_LIST: parse_docker_manifest_list,
    mediatypes.DOCKER_SCHEMA1: parse_schema1,
    mediatypes.DOCKER_SCHEMA1_SIGNED: parse_schema1,
}


def _same_type(a, b):
    # Schema 1 is pushed under either of its two names; both mean the same.
    return a == b or (mediatypes.is_schema1(a) and mediatypes.is_schema1(b))


def _detect(doc):
    """The type of a body that names none, from its shape: schemaVersion 1
    is signed schema 1; ``manifests`` is an OCI index and ``config`` an OCI
    image manifest (the OCI types are the ones whose ``mediaType`` is
    optional).  A document that looks like both is refused."""
    version = doc.get("schemaVersion")
    if version == 1 and not isinstance(version, bool):
        return mediatypes.DOCKER_SCHEMA1_SIGNED
    if "manifests" in doc and ("config" in doc or "layers" in doc):
        raise fields.invalid(
            "manifest is ambiguous: it has both 'manifests' and 'config'/'layers', and no mediaType"
        )
    if "manifests" in doc:
        return mediatypes.OCI_INDEX
    if "config" in doc:
        return mediatypes.OCI_MANIFEST
    raise fields.invalid(
        "cannot determine the manifest's media type: no Content-Type, no mediaType, "
        "and neither 'config' nor 'manifests'"
    )


def resolve_media_type(doc, content_type):
    """The media type ``doc`` is to be parsed and stored as."""
    declared = mediatypes.normalize(content_type)
    if declared in mediatypes.GENERIC_CONTENT_TYPES:
        declared = None
    in_body = fields.get_string(doc, "mediaType")
    if declared is not None and in_body is not None and not _same_type(in_body, declared):
        raise fields.invalid(
            f"media type in body {in_body} does not match Content-Type {declared}",
            "mediaType",
            mediaType=in_body,
            contentType=declared,
        )
    media_type = declared or in_body or _detect(doc)
    if media_type not in _PARSERS:
        raise fields.invalid(
            f"unsupported manifest media type {media_type!r}",
            mediaType=media_type,
            supported=sorted(_PARSERS),
        )
    return media_type


def parse_manifest(body, content_type, max_size=MAX_MANIFEST_SIZE):
    """Parse and validate a pushed manifest; return a ``Manifest``.

    :param body: the exact bytes of the request body.
    :param content_type: the request's Content-Type header (str, or None).
    :raises PayloadTooLarge: the body exceeds ``max_size`` (413).
    :raises ManifestInvalid, DigestInvalid, ManifestUnverified: see the schema
        modules for each rule.
    """
    if not isinstance(body, bytes):
        raise TypeError(f"manifest body must be bytes, not {type(body).__name__}")
    if len(body) > max_size:
        raise PayloadTooLarge(
            f"manifest is {len(body)} bytes; the limit is {max_size}",
            detail={"size": len(body), "limit": max_size},
        )
    doc = fields.load_object(body)
    media_type = resolve_media_type(doc, content_type)
    return _PARSERS[media_type](body, doc)

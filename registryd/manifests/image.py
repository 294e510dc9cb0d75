"""Single-image manifests: OCI image manifest and Docker schema 2.

Both are a ``config`` descriptor plus a list of ``layers``; they differ in
what they may carry (OCI 1.1 adds ``artifactType``, ``subject`` and
``annotations``) and in whether the body must name its own ``mediaType``
(Docker schema 2 must; OCI only SHOULD).
"""

from registryd.manifests import fields, mediatypes
from registryd.manifests.model import Manifest


def _check_not_index(doc, media_type):
    # CVE-2021-41190: a document that is both a manifest and an index could
    # be read differently by the registry and by a client.
    if "manifests" in doc:
        raise fields.invalid(
            f"a {media_type} must not have a 'manifests' field (that is an index)",
            "manifests",
        )


def _blobs(config, layers):
    """(blobs the repository must hold, external layers)."""
    blobs, external = [config], []
    for i, layer in enumerate(layers):
        if fields.is_external(layer):
            fields.check_external_urls(layer, f"layers[{i}]")
            external.append(layer)
        else:
            blobs.append(layer)
    return fields.dedupe(blobs), external


def parse_oci_manifest(body, doc):
    """An ``application/vnd.oci.image.manifest.v1+json`` (manifest.md)."""
    fields.check_schema_version(doc, 2)
    fields.check_body_media_type(doc, mediatypes.OCI_MANIFEST, required=False)
    _check_not_index(doc, mediatypes.OCI_MANIFEST)
    config = fields.parse_descriptor(fields.get_object(doc, "config", required=True), "config")
    # manifest.md (1.1) no longer calls layers REQUIRED and artifacts may
    # have none; Distribution accepts the field's absence too.
    layers = fields.parse_descriptors(doc, "layers", required=False) or []
    subject = fields.parse_descriptor(doc["subject"], "subject") if "subject" in doc else None
    artifact_type = fields.get_media_type(doc, "artifactType")
    blobs, external = _blobs(config, layers)
    return Manifest(
        media_type=mediatypes.OCI_MANIFEST,
        body=body,
        blobs=blobs,
        external=external,
        manifests=[],
        subject=subject,
        # distribution spec, "Listing Referrers": artifactType, else the
        # config's media type.
        artifact_type=artifact_type or config.media_type,
        annotations=fields.get_annotations(doc),
        config=config,
    )


def parse_docker_manifest(body, doc):
    """An ``application/vnd.docker.distribution.manifest.v2+json``.

    Docker schema 2 has no subject, artifactType or annotations; any such
    fields are ignored like every other unknown field, as Distribution does.
    """
    fields.check_schema_version(doc, 2)
    fields.check_body_media_type(doc, mediatypes.DOCKER_MANIFEST, required=True)
    _check_not_index(doc, mediatypes.DOCKER_MANIFEST)
    config = fields.parse_descriptor(fields.get_object(doc, "config", required=True), "config")
    layers = fields.parse_descriptors(doc, "layers")
    blobs, external = _blobs(config, layers)
    return Manifest(
        media_type=mediatypes.DOCKER_MANIFEST,
        body=body,
        blobs=blobs,
        external=external,
        manifests=[],
        config=config,
    )

"""Multi-manifest documents: OCI image index and Docker manifest list.

Each entry is a descriptor.  Entries whose media type is a manifest type are
child manifests, which must exist as manifests in the repository; any other
entry (the OCI spec requires unknown types to be accepted) can only be
stored as a blob, so it is required to exist as one.
"""

from registryd.manifests import fields, mediatypes
from registryd.manifests.model import Manifest


def _check_not_manifest(doc, media_type):
    # CVE-2021-41190: refuse documents that are both index and manifest.
    for key in ("config", "layers"):
        if key in doc:
            raise fields.invalid(
                f"a {media_type} must not have a {key!r} field (that is an image manifest)",
                key,
            )


def _split(entries):
    """(child manifests, blobs, external entries) of an index."""
    children, blobs, external = [], [], []
    for i, entry in enumerate(entries):
        if mediatypes.is_manifest_type(entry.media_type):
            children.append(entry)
        elif fields.is_external(entry):
            fields.check_external_urls(entry, f"manifests[{i}]")
            external.append(entry)
        else:
            blobs.append(entry)
    return fields.dedupe(children), fields.dedupe(blobs), external


def parse_oci_index(body, doc):
    """An ``application/vnd.oci.image.index.v1+json`` (image-index.md)."""
    fields.check_schema_version(doc, 2)
    fields.check_body_media_type(doc, mediatypes.OCI_INDEX, required=False)
    _check_not_manifest(doc, mediatypes.OCI_INDEX)
    children, blobs, external = _split(fields.parse_descriptors(doc, "manifests"))
    subject = fields.parse_descriptor(doc["subject"], "subject") if "subject" in doc else None
    return Manifest(
        media_type=mediatypes.OCI_INDEX,
        body=body,
        blobs=blobs,
        manifests=children,
        external=external,
        subject=subject,
        # "Listing Referrers": an index without artifactType has none.
        artifact_type=fields.get_media_type(doc, "artifactType"),
        annotations=fields.get_annotations(doc),
    )


def parse_docker_manifest_list(body, doc):
    """An ``application/vnd.docker.distribution.manifest.list.v2+json``."""
    fields.check_schema_version(doc, 2)
    fields.check_body_media_type(doc, mediatypes.DOCKER_MANIFEST_LIST, required=True)
    _check_not_manifest(doc, mediatypes.DOCKER_MANIFEST_LIST)
    children, blobs, external = _split(fields.parse_descriptors(doc, "manifests"))
    return Manifest(
        media_type=mediatypes.DOCKER_MANIFEST_LIST,
        body=body,
        blobs=blobs,
        manifests=children,
        external=external,
    )

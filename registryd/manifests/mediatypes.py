"""Media types registryd knows, and what each one means to the registry.

The registry cares about media types for three reasons: to decide how to
parse and validate a pushed manifest, to decide whether a descriptor inside
an index names a *manifest* (which must exist as a manifest in the
repository) or a *blob*, and to negotiate the ``Accept`` header on pulls.
Layer and config types are listed so that code and tests share one spelling;
the registry never parses that content.
"""

# Manifests (OCI image spec media-types.md; Docker distribution manifest-v2-2).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# Configs.
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json"

# Layers.
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
#: What Distribution reports for a schema 1 ``fsLayers[].blobSum``.
DOCKER_SCHEMA1_LAYER = "application/vnd.docker.container.image.rootfs.diff+x-gtar"

#: Manifest types registryd accepts on push and stores as manifests.  A
#: descriptor of one of these types inside an index names a child manifest.
MANIFEST_MEDIA_TYPES = frozenset(
    {
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_SCHEMA1,
        DOCKER_SCHEMA1_SIGNED,
    }
)

#: Manifest types whose children are other manifests.
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

#: Blob types: content referenced by manifests that is stored as a blob.
#: Informative only: any type not in MANIFEST_MEDIA_TYPES is treated as a blob
#: (the OCI spec requires unknown types to be accepted).
BLOB_MEDIA_TYPES = frozenset(
    {
        OCI_EMPTY,
        OCI_IMAGE_CONFIG,
        DOCKER_IMAGE_CONFIG,
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_NONDISTRIBUTABLE,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
        DOCKER_LAYER,
        DOCKER_FOREIGN_LAYER,
        DOCKER_SCHEMA1_LAYER,
    }
)

#: Manifest types a client may name in a GET's Accept header, in order of
#: preference when it names several.  A schema 1 manifest is always stored
#: and served as DOCKER_SCHEMA1_SIGNED (as Distribution does); accepting
#: DOCKER_SCHEMA1 counts as accepting it.
ACCEPTED_MANIFEST_MEDIA_TYPES = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
)

#: Content-Types that say nothing about which manifest a body is: with these
#: (or none) the type is taken from the body.
GENERIC_CONTENT_TYPES = frozenset({"application/json", "application/octet-stream"})


def normalize(content_type):
    """The bare, lower-case media type of a Content-Type header value.

    The distribution spec says the registry SHOULD ignore parameters
    (``; charset=utf-8``).  Returns None for a missing or blank value.
    """
    if content_type is None:
        return None
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    bare = content_type.split(";", 1)[0].strip().lower()
    return bare or None


def is_manifest_type(media_type):
    return media_type in MANIFEST_MEDIA_TYPES


def is_index_type(media_type):
    return media_type in INDEX_MEDIA_TYPES


def is_schema1(media_type):
    return media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)


def is_non_distributable(media_type):
    """Layers that clients fetch from their ``urls`` and never push: OCI's
    (deprecated) non-distributable layers and Docker's foreign layers."""
    return "nondistributable" in media_type or media_type == DOCKER_FOREIGN_LAYER

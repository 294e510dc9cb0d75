"""The parsed, validated form of a manifest: what the rest of registryd needs.

Handlers and the registry model never look inside manifest JSON again: they
store ``body`` verbatim, name it by ``digest()``, check that ``blobs`` and
``manifests`` exist, and feed ``subject``/``artifact_type``/``annotations``
to the referrers index.  Keeping that in one small value object is what lets
the parsers stay pure functions.
"""

import attr

from registryd.digest import DEFAULT_ALGORITHM, Digest


@attr.s(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor (descriptor.md), validated.

    ``size`` is None only for Docker schema 1 ``blobSum`` references, which
    carry no size.  ``urls`` is a tuple (or None); ``annotations`` and
    ``platform`` are plain dicts as found in the manifest (or None).
    """

    media_type = attr.ib()
    digest = attr.ib(validator=attr.validators.instance_of(Digest))
    size = attr.ib()
    urls = attr.ib(default=None)
    annotations = attr.ib(default=None)
    artifact_type = attr.ib(default=None)
    platform = attr.ib(default=None)

    def to_dict(self):
        """The descriptor as JSON-able data, omitting absent fields, in the
        field order the OCI specs use (e.g. for a referrers index entry)."""
        out = {"mediaType": self.media_type, "digest": str(self.digest)}
        if self.size is not None:
            out["size"] = self.size
        if self.urls is not None:
            out["urls"] = list(self.urls)
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        if self.annotations is not None:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform
        return out


@attr.s(frozen=True, slots=True)
class Manifest:
    """A pushed manifest, parsed and validated.

    - ``media_type``: the type to store and to serve it as.
    - ``body``: the exact bytes received; stored and served verbatim.
    - ``digest_body``: the bytes whose digest names the manifest.  The same
      as ``body`` except for Docker schema 1, which Distribution names by its
      signed payload (the manifest without its ``signatures``).
    - ``blobs``: descriptors that must exist as blobs in the repository
      (config and layers; index entries that are not manifests), without
      non-distributable layers that carry ``urls``, deduplicated by digest.
    - ``manifests``: child manifests of an index or manifest list.
    - ``external``: non-distributable layers (and index entries) that carry
      ``urls``: clients fetch them from there, the registry never holds
      them; only their URLs are checked (``validation.manifests.urls``).
    - ``subject``: the OCI 1.1 ``subject`` descriptor, never checked.
    - ``artifact_type``: the value for this manifest's referrers entry.
    - ``annotations``: the manifest's own annotations.
    - ``config``: the config descriptor of an image manifest.
    - ``name``, ``tag``: the repository and tag a schema 1 manifest names.
    """

    media_type = attr.ib()
    body = attr.ib(validator=attr.validators.instance_of(bytes))
    blobs: list = attr.ib(factory=list)
    manifests: list = attr.ib(factory=list)
    external: list = attr.ib(factory=list)
    subject = attr.ib(default=None)
    artifact_type = attr.ib(default=None)
    annotations = attr.ib(default=None)
    digest_body = attr.ib(
        default=attr.Factory(lambda self: self.body, takes_self=True),
        validator=attr.validators.instance_of(bytes),
    )
    config = attr.ib(default=None)
    name = attr.ib(default=None)
    tag = attr.ib(default=None)

    def digest(self, algorithm=DEFAULT_ALGORITHM):
        """The manifest's content digest (of ``digest_body``)."""
        return Digest.of(self.digest_body, algorithm)

    @property
    def references(self):
        """Everything the manifest depends on: ``blobs`` then ``manifests``."""
        return list(self.blobs) + list(self.manifests)

    def descriptor(self, algorithm=DEFAULT_ALGORITHM):
        """This manifest's entry in its subject's referrers index: its type,
        digest and size, plus ``artifactType`` and ``annotations`` as the
        distribution spec's "Listing Referrers" requires."""
        return Descriptor(
            media_type=self.media_type,
            digest=self.digest(algorithm),
            size=len(self.body),
            annotations=self.annotations,
            artifact_type=self.artifact_type,
        )

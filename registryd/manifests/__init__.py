"""Manifest parsing, validation and reference checking, with no I/O.

``parse_manifest`` turns a pushed body into a validated ``Manifest``;
``verify_references`` checks, through predicates the caller supplies, that
what it references is in the repository.  See ARCHITECTURE.md, "Manifests".
"""

from registryd.manifests.model import Descriptor, Manifest
from registryd.manifests.parse import MAX_MANIFEST_SIZE, parse_manifest
from registryd.manifests.schema1 import sign_schema1
from registryd.manifests.verify import verify_references

__all__ = [
    "MAX_MANIFEST_SIZE",
    "Descriptor",
    "Manifest",
    "parse_manifest",
    "sign_schema1",
    "verify_references",
]

"""Validation of the names that appear in URLs: repositories, tags, upload ids.

Everything here is checked before it is used to build a storage path, so a
name can never escape the repository tree (``..``, ``/`` in a tag, NUL...).
"""

import re
import uuid

from registryd.errors import BlobUploadUnknown, NameInvalid

# OCI distribution spec, "Pulling manifests": <name> components.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

#: Distribution's limit on a repository name's length.
MAX_NAME_LENGTH = 255


def check_repository_name(name):
    """Return C{name} if it is a valid repository name, else raise NAME_INVALID."""
    if not isinstance(name, str) or not name:
        raise NameInvalid("repository name is empty", detail={"name": name})
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalid(
            f"repository name longer than {MAX_NAME_LENGTH} characters",
            detail={"name": name[:MAX_NAME_LENGTH] + "..."},
        )
    if not _NAME.match(name):
        raise NameInvalid(
            "repository name must be lowercase path components of [a-z0-9] "
            "separated by '.', '_', '__' or '-', joined by '/'",
            detail={"name": name},
        )
    return name


def is_valid_tag(tag):
    return isinstance(tag, str) and bool(_TAG.match(tag))


_TAG_LINE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$", re.MULTILINE)


def valid_tags(names):
    """The valid tags among the C{str} C{names}, in order.

    A tag listing filters thousands of directory names: one regular
    expression pass over them all, one per line, instead of a call per
    name (unless a name itself holds a line break)."""
    if not names:
        return []
    joined = "\n".join(names)
    if joined.count("\n") != len(names) - 1:
        match = _TAG.match
        return [name for name in names if "\n" not in name and match(name)]
    return _TAG_LINE.findall(joined)


def check_upload_id(upload_id):
    """Return C{upload_id} if it has the form of an id registryd (or
    Distribution) issued, else raise BLOB_UPLOAD_UNKNOWN: a malformed id can
    only name an upload that does not exist."""
    if not isinstance(upload_id, str) or not _UUID.match(upload_id):
        raise BlobUploadUnknown(detail={"uuid": str(upload_id)[:100]})
    return upload_id


def new_upload_id():
    return str(uuid.uuid4())

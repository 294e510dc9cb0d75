"""Validation of the names that appear in URLs: repositories, tags, upload ids.

Everything here is checked before it is used to build a storage path, so a
name can never escape the repository tree (``..``, ``/`` in a tag, NUL...).
Every pattern matches the whole string (``fullmatch``): ``$`` would also
match before a trailing newline, and ``secret\n`` would become a tag
directory with a newline in its name.
"""

import re
import uuid

from registryd.errors import BlobUploadInvalid, NameInvalid

# OCI distribution spec, "Pulling manifests": <name> components.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_COMPONENT_RE = re.compile(_COMPONENT)
NAME_PATTERN = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_NAME = re.compile(NAME_PATTERN)
# OCI distribution spec: <reference> as a tag.
TAG_PATTERN = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
_TAG = re.compile(TAG_PATTERN)
# The ids registryd issues (uuid4's str) and Distribution does too.
UPLOAD_ID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID = re.compile(UPLOAD_ID_PATTERN)

#: Distribution's limit on a repository name's length.
MAX_NAME_LENGTH = 255


def check_repository_name(name):
    """Return ``name`` if it is a valid repository name, else raise NAME_INVALID."""
    if not isinstance(name, str) or not name:
        raise NameInvalid("repository name is empty", detail={"name": name})
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalid(
            f"repository name longer than {MAX_NAME_LENGTH} characters",
            detail={"name": name[:MAX_NAME_LENGTH] + "..."},
        )
    if not _NAME.fullmatch(name):
        raise NameInvalid(
            "repository name must be lowercase path components of [a-z0-9] "
            "separated by '.', '_', '__' or '-', joined by '/'",
            detail={"name": name},
        )
    return name


def is_name_component(text):
    """Whether ``text`` may be one ``/``-separated part of a repository name:
    what a walk of the repositories tree descends into (a directory named
    otherwise, say by an older registryd, can be no repository's part)."""
    return bool(_COMPONENT_RE.fullmatch(text))


def is_valid_tag(tag):
    return isinstance(tag, str) and bool(_TAG.fullmatch(tag))


# One tag per line of a joined listing.  In MULTILINE mode ``$`` matches
# before each ``\n``, which is the separator here; names holding one are
# filtered one by one instead (valid_tags).
_TAG_LINE = re.compile(rf"^{TAG_PATTERN}$", re.MULTILINE)


def valid_tags(names):
    """The valid tags among the ``str`` ``names``, in order.

    A tag listing filters thousands of directory names: one regular
    expression pass over them all, one per line, instead of a call per
    name (unless a name itself holds a line break)."""
    if not names:
        return []
    joined = "\n".join(names)
    if joined.count("\n") != len(names) - 1:
        return [name for name in names if is_valid_tag(name)]
    return _TAG_LINE.findall(joined)


def check_upload_id(upload_id):
    """Return ``upload_id`` if it has the form of an id registryd (or
    Distribution) issued, else raise BLOB_UPLOAD_INVALID (400): no server
    handed out such a URL, so the client altered it, as Distribution
    answers an upload URL whose id disagrees with its signed state.  A
    well-formed id of no upload is BLOB_UPLOAD_UNKNOWN (404), elsewhere."""
    if not isinstance(upload_id, str) or not _UUID.fullmatch(upload_id):
        raise BlobUploadInvalid(
            "malformed upload id: not one this registry issued",
            detail={"uuid": str(upload_id)[:100]},
        )
    return upload_id


def new_upload_id():
    return str(uuid.uuid4())

"""Reading stored manifests leniently: what garbage collection and the
referrers rebuild take a manifest to reference, whatever its media type.

The walking itself (repositories, revisions, tags, links, blobs) is the
storage model's (``registryd.storage``): its enumerators are the only way
these tools reach storage.
"""

import json

from registryd import errors
from registryd.digest import Digest


def references_in(body):
    """(referenced digests, subject digest or None) of a stored manifest.

    Lenient on purpose: every ``digest`` and ``blobSum`` anywhere in the
    JSON except under the top-level ``subject`` counts, so unknown media
    types and future fields protect what they name.  A body that is not
    JSON references nothing (and is reported by the caller).
    """
    doc = json.loads(body)
    found = set()
    subject = None

    def visit(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("digest", "blobSum") and isinstance(value, str):
                    try:
                        found.add(Digest.parse(value))
                    except errors.DigestInvalid:
                        pass
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "subject":
                if isinstance(value, dict) and isinstance(value.get("digest"), str):
                    try:
                        subject = Digest.parse(value["digest"])
                    except errors.DigestInvalid:
                        pass
                continue
            visit({key: value})
    else:
        visit(doc)
    return found, subject

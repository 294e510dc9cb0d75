"""Distribution's storage layout, in one place, private to the storage model.

registryd reads and writes exactly the tree CNCF Distribution uses under
``<root>/docker/registry/v2/``, so either can serve what the other wrote.
Every argument here must already be validated (``registryd.names``,
``registryd.digest``); drivers check paths again as a last defence.

Only ``registryd.storage`` imports this module: everything else (the HTTP
handlers, garbage collection, maintenance, the referrers rebuild, the
pull-through cache) reaches storage through the model's stores and
enumerators and deletes through its vacuum, so the layout can be known,
and changed, in one place (tests/unit/test_storage_model.py checks it).
Each ``*_dir`` names the directory a deletion removes, so no caller has
to cut a file path back to its directory.
"""

ROOT = "/docker/registry/v2"


def blob_data(digest):
    return f"{ROOT}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def blobs():
    return f"{ROOT}/blobs"


def blob_dir(digest):
    return f"{ROOT}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def repositories():
    return f"{ROOT}/repositories"


def repository(name):
    return f"{ROOT}/repositories/{name}"


def layer_link(name, digest):
    return f"{ROOT}/repositories/{name}/_layers/{digest.algorithm}/{digest.hex}/link"


def layer_link_dir(name, digest):
    return f"{ROOT}/repositories/{name}/_layers/{digest.algorithm}/{digest.hex}"


def layers(name):
    return f"{ROOT}/repositories/{name}/_layers"


def uploads(name):
    return f"{ROOT}/repositories/{name}/_uploads"


def upload_dir(name, upload_id):
    return f"{ROOT}/repositories/{name}/_uploads/{upload_id}"


def upload_data(name, upload_id):
    return f"{upload_dir(name, upload_id)}/data"


def upload_started_at(name, upload_id):
    return f"{upload_dir(name, upload_id)}/startedat"


def upload_hash_states(name, upload_id, algorithm):
    """Where an upload's running hash is stored at each offset a request
    of it ended at (Distribution's layout: either can resume the other's)."""
    return f"{upload_dir(name, upload_id)}/hashstates/{algorithm}"


def upload_hash_state(name, upload_id, algorithm, offset):
    return f"{upload_hash_states(name, upload_id, algorithm)}/{offset}"


def upload_algorithm(name, upload_id):
    """registryd's own note of the digest algorithm chosen at POST
    (``?digest-algorithm=``); Distribution has no such file and its uploads
    default to sha256, which is also what a missing file means here."""
    return f"{upload_dir(name, upload_id)}/registryd-algorithm"


def manifests(name):
    return f"{ROOT}/repositories/{name}/_manifests"


def manifest_revisions(name):
    return f"{ROOT}/repositories/{name}/_manifests/revisions"


def manifest_revision_link(name, digest):
    return f"{ROOT}/repositories/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}/link"


def manifest_revision_dir(name, digest):
    return f"{ROOT}/repositories/{name}/_manifests/revisions/{digest.algorithm}/{digest.hex}"


def tags(name):
    return f"{ROOT}/repositories/{name}/_manifests/tags"


def tag_dir(name, tag):
    return f"{ROOT}/repositories/{name}/_manifests/tags/{tag}"


def tag_current_link(name, tag):
    return f"{ROOT}/repositories/{name}/_manifests/tags/{tag}/current/link"


def tag_index(name, tag):
    return f"{ROOT}/repositories/{name}/_manifests/tags/{tag}/index"


def tag_index_dir(name, tag, digest):
    return f"{tag_index(name, tag)}/{digest.algorithm}/{digest.hex}"


def tag_index_link(name, tag, digest):
    return f"{ROOT}/repositories/{name}/_manifests/tags/{tag}/index/{digest.algorithm}/{digest.hex}/link"


def referrers_root(name):
    return f"{ROOT}/repositories/{name}/_referrers"


def referrers(name, subject):
    """registryd's referrers index: one link per manifest whose ``subject``
    is ``subject``.  Distribution has no such directory and ignores it; it
    can be rebuilt from the manifests' own ``subject`` fields."""
    return f"{ROOT}/repositories/{name}/_referrers/{subject.algorithm}/{subject.hex}"


def referrer_dir(name, subject, digest):
    return f"{referrers(name, subject)}/{digest.algorithm}/{digest.hex}"


def referrer_link(name, subject, digest):
    return f"{referrer_dir(name, subject, digest)}/link"


#: The directory under a repository that holds the pull-through cache's records.
PROXY_DIR = "_proxy"


def proxy_records(name):
    """A pull-through cache's records (registryd.proxy.expiry): when each
    cached manifest was fetched, and as what media type.  Distribution
    ignores ``_`` directories it does not know."""
    return f"{repository(name)}/{PROXY_DIR}/manifests"


def proxy_record_dir(name, digest):
    return f"{proxy_records(name)}/{digest.algorithm}/{digest.hex}"


def proxy_record(name, digest):
    return f"{proxy_record_dir(name, digest)}/fetched"


#: The directory under a repository that holds registryd's own records
#: (Distribution ignores ``_`` directories it does not know).
REGISTRYD_DIR = "_registryd"


def registryd_records(name):
    return f"{repository(name)}/{REGISTRYD_DIR}"


def clock_marker(name):
    """Written and removed at once by a removal or retention run as it
    starts: its modification time, in the storage's own clock and
    precision, tells links written since (a push on another node) from
    those the run is to take."""
    return f"{registryd_records(name)}/clock"


def pull_records(name):
    """When each tag and manifest of repository ``name`` was last pulled
    (registryd.storage.pulls)."""
    return f"{registryd_records(name)}/pulls.json"

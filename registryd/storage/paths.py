"""Distribution's storage layout, in one place.

registryd reads and writes exactly the tree CNCF Distribution uses under
``<root>/docker/registry/v2/``, so either can serve what the other wrote.
Every argument here must already be validated (``registryd.names``,
``registryd.digest``); drivers check paths again as a last defence.
"""

ROOT = "/docker/registry/v2"


def blob_data(digest):
    return f"{ROOT}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def blob_dir(digest):
    return f"{ROOT}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def repositories():
    return f"{ROOT}/repositories"


def repository(name):
    return f"{ROOT}/repositories/{name}"


def layer_link(name, digest):
    return f"{ROOT}/repositories/{name}/_layers/{digest.algorithm}/{digest.hex}/link"


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


def upload_algorithm(name, upload_id):
    """registryd's own note of the digest algorithm chosen at POST
    (``?digest-algorithm=``); Distribution has no such file and its uploads
    default to sha256, which is also what a missing file means here."""
    return f"{upload_dir(name, upload_id)}/registryd-algorithm"

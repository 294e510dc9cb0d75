"""Walking Distribution's storage layout: the listings that garbage
collection, the referrers rebuild and the manhole's ``stats()`` share.

Everything here reads the layout alone (``registryd.storage.paths``), so
it works on directories written by Distribution as well as by registryd,
and never holds more than a bounded number of storage requests in flight.
"""

import json

from twisted.internet import defer

from registryd import errors
from registryd.digest import ALGORITHMS, Digest
from registryd.storage import paths
from registryd.storage.errors import PathNotFound

#: Storage requests in flight at once while walking.
CONCURRENCY = 16


async def gather_limited(function, items, limit=CONCURRENCY):
    """C{[await function(item) for item in items]}, at most C{limit} at
    once (C{limit} workers share one iterator, so a million items cost a
    million results, not a million pending Deferreds).  The first failure
    stops the workers and is raised as itself."""
    items = list(items)
    results = [None] * len(items)
    queue = iter(enumerate(items))
    failed = []

    async def worker():
        for index, item in queue:
            if failed:
                return
            try:
                results[index] = await function(item)
            except BaseException as error:
                failed.append(error)
                return

    await defer.gatherResults(
        [defer.ensureDeferred(worker()) for _ in range(min(limit, len(items)))]
    )
    if failed:
        raise failed[0]
    return results


async def list_or_empty(driver, path):
    try:
        return await driver.list(path)
    except PathNotFound:
        return []


def _digest(algorithm, hex_digest):
    try:
        return Digest.parse(f"{algorithm}:{hex_digest}")
    except errors.DigestInvalid:
        return None


async def digest_tree(driver, base):
    """Digests named by ``<base>/<alg>/<hex>`` directories (revisions,
    layer links, tag history): one listing per algorithm, all in one call."""
    algorithms = [name for name in await list_or_empty(driver, base) if not name.endswith(".tmp")]
    listings = await driver.list_many([f"{base}/{algorithm}" for algorithm in algorithms])
    found = []
    for algorithm, names in zip(algorithms, listings):
        for name in names or []:
            digest = _digest(algorithm, name)
            if digest is not None:
                found.append(digest)
    return found


async def walk_blobs(driver):
    """Every blob directory ``blobs/<alg>/<hex[:2]>/<hex>`` as a Digest
    (whether or not its ``data`` is there; names that are not digests are
    skipped, never deleted)."""
    root = f"{paths.ROOT}/blobs"
    algorithms = [name for name in await list_or_empty(driver, root) if name in ALGORITHMS]
    prefix_dirs = []
    for algorithm, names in zip(algorithms, await driver.list_many([f"{root}/{a}" for a in algorithms])):
        prefix_dirs += [(algorithm, prefix) for prefix in names or [] if len(prefix) == 2]
    found = []
    listings = await driver.list_many([f"{root}/{a}/{p}" for a, p in prefix_dirs])
    for (algorithm, prefix), names in zip(prefix_dirs, listings):
        for name in names or []:
            digest = _digest(algorithm, name)
            if digest is not None and digest.hex[:2] == prefix:
                found.append(digest)
    return found


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


async def manifest_revisions(driver, name):
    """Digests of repository C{name}'s manifest revisions, sorted.

    A revision is its link file, not its directory: Distribution's manifest
    delete removes only the link."""
    named = await digest_tree(driver, f"{paths.manifests(name)}/revisions")

    async def linked(digest):
        try:
            await driver.stat(paths.manifest_revision_link(name, digest))
        except PathNotFound:
            return False
        return True

    found = [d for d, ok in zip(named, await gather_limited(linked, named)) if ok]
    return sorted(found, key=str)

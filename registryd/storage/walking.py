"""How the storage model's enumerators walk a driver: bounded concurrency,
directories that may be missing, ``<alg>/<hex>`` digest trees, link files.

These are the model's own tools (the stores and the vacuum use them); the
one meant for callers too is :func:`gather_limited`, which garbage collection
and the referrers rebuild use to keep their storage requests bounded.
"""

from twisted.internet import defer

from registryd import errors
from registryd.digest import Digest
from registryd.interfaces import IImmediateMetadata
from registryd.storage.errors import PathNotFound

#: Storage requests in flight at once while walking.
CONCURRENCY = 16


async def gather_limited(function, items, limit=CONCURRENCY):
    """``[await function(item) for item in items]``, at most ``limit`` at
    once (``limit`` workers share one iterator, so a million items cost a
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


async def stat_path(driver, path):
    """``driver.stat(path)``, answered at once where the driver can
    (:class:`registryd.interfaces.IImmediateMetadata`): the hot reads' way
    to stat."""
    if IImmediateMetadata.providedBy(driver):
        info = driver.stat_now(path)
        if info is not None:
            return info
    return await driver.stat(path)


async def list_or_empty(driver, path):
    """The names in directory ``path``; none when it does not exist."""
    try:
        if IImmediateMetadata.providedBy(driver):
            names = driver.list_now(path)
            if names is not None:
                return names
        return await driver.list(path)
    except PathNotFound:
        return []


async def modified_or_none(driver, path):
    """The modification time of ``path``, or None when it is not there."""
    try:
        return (await driver.stat(path)).modified
    except PathNotFound:
        return None


def parse_digest(algorithm, hex_digest):
    """The Digest ``<algorithm>:<hex_digest>`` names, or None for a
    directory name that is not one (never deleted, never followed)."""
    try:
        return Digest.parse(f"{algorithm}:{hex_digest}")
    except errors.DigestInvalid:
        return None


async def digest_tree(driver, base):
    """Digests named by ``<base>/<alg>/<hex>`` directories (revisions,
    layer links, tag history, referrers): one listing per algorithm, all
    in one call."""
    algorithms = [name for name in await list_or_empty(driver, base) if not name.endswith(".tmp")]
    listings = await driver.list_many([f"{base}/{algorithm}" for algorithm in algorithms])
    found = []
    for algorithm, names in zip(algorithms, listings):
        for name in names or []:
            digest = parse_digest(algorithm, name)
            if digest is not None:
                found.append(digest)
    return found


async def read_link(driver, path):
    """The digest a link file names; None when it is missing or does not
    hold a digest (a link is only ever trusted after it parses)."""
    try:
        text = await driver.get_content(path)
    except PathNotFound:
        return None
    try:
        return Digest.parse(text.strip())
    except errors.DigestInvalid:
        return None

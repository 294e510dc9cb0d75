"""The nodes' metadata cache: what tags name, which manifest revisions and
blob links a repository has, and blob sizes, kept in the nodes' shared
state (Redis) so that a hit needs no storage request at all.

The in-process caches (:mod:`registryd.storage.cache`) must ask storage on
every hit, since another node may have changed it; on S3 that ask is a
request.  Here every node trusts a hit because every write forgets the
entries it changes, through this one object, before its client is
answered: :class:`registryd.storage.tags.TagStore` when it points a tag,
:class:`registryd.storage.blobs.LinkedBlobStore` when it links a blob, and
:class:`registryd.storage.vacuum.Vacuum`, the one deleter, for every
removal (API deletes, repository deletes, GC, retention, the pull-through
cache's expiry).  Only what storage holds is stored (never an absence),
and a value read from storage is stored only if nothing forgot its entry
since the lookup before the read (the stamps of
:meth:`registryd.interfaces.ISharedState.cache_lookup`): a reader that read
the old value before a write cannot put it back after the write's forget.

When the shared state does not answer (Redis down, slow, or cut off),
lookups fall back to storage and the writes of this node forget nothing
there; so before this node trusts the cache again it starts a new epoch,
which hides every entry stored so far from every node.  Each node that
saw a failure does so as soon as Redis answers it again, before its next
lookup or write is done, so nothing written meanwhile is served stale
after Redis returns.  (A node cut off from Redis while the others still
reach it cannot make them forget; entries expire after ``ttl`` seconds,
which bounds that case.)
"""

import time

from twisted.internet import defer
from twisted.logger import Logger

from registryd.shared.errors import SharedStateUnavailable

log = Logger()


def tag_entry(repository, tag):
    return f"tag:{repository}:{tag}"


def revision_entry(repository, digest):
    return f"revision:{repository}:{digest}"


def link_entry(repository, digest):
    return f"link:{repository}:{digest}"


def blob_entry(digest):
    return f"blob:{digest}"


def shared_cache_for(state):
    """The metadata cache of a node using ``state``: shared when other
    nodes see the state (Redis); None for a node alone, whose per-process
    caches revalidate against storage instead (worker processes and nodes
    on one bucket without Redis share nothing else)."""
    return SharedMetadataCache(state) if state.shared else None


class SharedMetadataCache:
    """Entries of the nodes' metadata cache in ``state`` (an ISharedState
    that other nodes see), bypassed while it does not answer.

    :param ttl: seconds an entry lives after it was stored or forgotten
        (bounds what a node cut off from the others can leave stale, and
        Redis's memory).
    :param retry_after: seconds between tries to reach the state again
        from lookups while it is away (a write always tries).
    :param clock: seconds, monotonic.
    """

    def __init__(self, state, clock=time.monotonic, ttl=600.0, retry_after=1.0):
        self._state = state
        self._clock = clock
        self.ttl = ttl
        self.retry_after = retry_after
        #: False after a failure, until a new epoch has begun
        self.trusted = True
        self._renewing = None  # the Deferred of a new epoch being started
        self._last_try = None
        #: what the cache saved and cost (``/metrics``, the tests)
        self.hits = 0
        self.misses = 0
        self.bypassed = 0

    async def lookup(self, names):
        """``(value, stamp)`` per name (value None: a miss), or None while
        the cache is bypassed (ask storage and do not fill)."""
        if not self.trusted and not await self._renew(force=False):
            self.bypassed += 1
            return None
        try:
            found = await self._state.cache_lookup(names)
        except SharedStateUnavailable:
            self._distrust()
            self.bypassed += 1
            return None
        if all(value is not None for value, _ in found):
            self.hits += 1
        else:
            self.misses += 1
        return found

    async def through(self, name, load):
        """The value (str) of entry ``name``: the cache's, or else what
        ``await load()`` reads from storage (None: nothing to keep), kept
        for the next lookup on any node."""
        found = await self.lookup([name])
        if found is not None and found[0][0] is not None:
            return found[0][0].decode("utf-8")
        value = await load()
        if value is not None and found is not None:
            await self.fill(name, found[0][1], value)
        return value

    async def fill(self, name, stamp, value):
        """Store what storage said (``value``: str) for ``name``, read
        after the lookup that gave ``stamp``."""
        if not self.trusted:
            return
        try:
            await self._state.cache_fill(name, stamp, value.encode("utf-8"), self.ttl)
        except SharedStateUnavailable:
            self._distrust()

    async def forget(self, *names):
        """Make every node drop ``names`` (a write changed them), or, if
        the state cannot be reached, make sure nothing is trusted until a
        new epoch has begun."""
        if not self.trusted and not await self._renew(force=True):
            return
        try:
            await self._state.cache_forget(names, self.ttl)
        except SharedStateUnavailable:
            self._distrust()

    def _distrust(self):
        self.trusted = False

    def _renew(self, force):
        """Try to begin a new epoch (one try at a time, shared by whoever
        asks meanwhile; lookups try at most every ``retry_after`` seconds).
        :return: Deferred firing with whether the cache is trusted again."""
        if self._renewing is None:
            now = self._clock()
            if not force and self._last_try is not None and now - self._last_try < self.retry_after:
                return defer.succeed(False)
            self._last_try = now
            self._renewing = []
            self._state.cache_new_epoch().addCallbacks(self._renewed, self._not_renewed)
        waiting = defer.Deferred()
        self._renewing.append(waiting)
        return waiting

    def _renewed(self, _):
        self.trusted = True
        log.info("storage metadata cache: a new epoch began; shared cache entries trusted again")
        self._tell(True)

    def _not_renewed(self, reason):
        if not reason.check(SharedStateUnavailable):
            log.failure("storage metadata cache: starting a new epoch", reason)
        self._tell(False)

    def _tell(self, trusted):
        waiting, self._renewing = self._renewing, None
        for each in waiting:
            each.callback(trusted)

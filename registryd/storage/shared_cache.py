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
there; so before this node trusts the cache again it begins a new epoch,
which hides every entry stored so far from every node.  Each node that
saw a failure does so as soon as Redis answers it again, before its next
lookup or write is done, so nothing written meanwhile is served stale
after Redis returns.  A node cut off from Redis while the others still
reach it cannot make them forget; its membership of the cache, which it
can no longer renew, expires within ``lease`` seconds, and the first
lookup or renewal that finds it expired begins a new epoch for all.
"""

import uuid

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from registryd import errors
from registryd.interfaces import ILocalMetadata
from registryd.ops import metrics
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


def parsed(value, parse):
    """``parse`` of a cached value (bytes), or None when there is none or
    it does not parse: what Redis holds is not trusted to be well formed
    (another program may write it), and a bad entry is a miss."""
    if value is None:
        return None
    try:
        return parse(value.decode("utf-8"))
    except (ValueError, errors.RegistryError):
        return None


def consulted_for(setting, driver):
    """Whether reads consult the nodes' metadata cache, by
    ``redis.metadatacache`` (``auto``, ``on``, ``off``) and the storage
    driver: with ``auto``, only when its metadata reads are remote (no
    :class:`registryd.interfaces.ILocalMetadata` marker: S3, third-party
    drivers).  On a filesystem, shared by the nodes or not, one stat
    revalidates the per-process caches for less CPU than a Redis call,
    and is as fresh across nodes."""
    if setting == "auto":
        return not ILocalMetadata.providedBy(driver)
    return setting == "on"


def shared_cache_for(state, reactor, consulted=True):
    """The metadata cache of a node using ``state``: shared when other
    nodes see the state (Redis); None for a node alone, whose per-process
    caches revalidate against storage instead (worker processes and nodes
    on one bucket without Redis share nothing else).  Not ``consulted``
    (:func:`consulted_for`), it is still made: the node's writes make
    every node forget what they change, so nodes whose settings differ
    (a rolling change of ``redis.metadatacache``) never serve each other
    stale entries."""
    return SharedMetadataCache(state, reactor, consulted=consulted) if state.shared else None


def for_lookups(cache):
    """``cache`` if reads consult it, else None (reads then revalidate
    the per-process caches against storage)."""
    return cache if cache is not None and cache.consulted else None


class SharedMetadataCache(Service):
    """Entries of the nodes' metadata cache in ``state`` (an ISharedState
    that other nodes see), bypassed while it does not answer.

    Running (a service of the node), it holds a membership of the cache
    that it renews every ``lease / 3`` seconds; a node cut off from Redis
    stops renewing, and once its membership has expired the next lookup
    of any node begins a new epoch.  So what a node could not forget is
    trusted elsewhere for at most ``lease`` seconds, and never after the
    node reaches Redis again (it begins a new epoch before it trusts a
    hit or answers a write).  It begins one when it starts, too: a node
    that stopped while cut off may have left entries it never forgot.

    :param reactor: for ``callLater`` (renewals, and tries every
        ``retry_after`` seconds while the state does not answer).
    :param ttl: seconds an entry lives after it was stored or forgotten
        (Redis's memory).
    :param consulted: False: only forget (the stores' reads do not look
        entries up, :func:`for_lookups`); the membership is still held,
        since what a cut-off node could not forget must stop being trusted.
    """

    def __init__(self, state, reactor, ttl=600.0, lease=3.0, retry_after=0.5, consulted=True):
        self._state = state
        self._reactor = reactor
        #: whether reads look entries up (else this node only forgets)
        self.consulted = consulted
        self.ttl = ttl
        self.lease = lease
        self.retry_after = retry_after
        #: this node's name among the cache's members
        self.member = uuid.uuid4().hex
        #: False until a new epoch has begun after the last failure
        self.trusted = False
        self._failures = 0  # failures seen (a new epoch must begin after the last)
        self._renewing = None  # callers waiting for the new epoch being begun
        self._next = None  # the delayed call of the next renewal or try
        #: what the cache saved and cost, in this process (the tests;
        #: ``registryd_metadata_cache_lookups_total`` sums the node's processes)
        self.hits = 0
        self.misses = 0
        self.bypassed = 0
        self._counted = {
            result: metrics.METADATA_CACHE_LOOKUPS.labels(result)
            for result in ("hit", "miss", "bypassed")
        }

    def startService(self):
        super().startService()
        self._schedule(0)

    def stopService(self):
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self.trusted = False

    async def lookup(self, names):
        """``(value, stamp)`` per name (value None: a miss), or None while
        the cache is bypassed (ask storage and do not fill)."""
        if not self.trusted:
            self._count("bypassed")
            return None
        try:
            found = await self._state.cache_lookup(names)
        except SharedStateUnavailable:
            self._distrust()
            self._count("bypassed")
            return None
        self._count("hit" if all(value is not None for value, _ in found) else "miss")
        return found

    def _count(self, result):
        if result == "hit":
            self.hits += 1
        elif result == "miss":
            self.misses += 1
        else:
            self.bypassed += 1
        self._counted[result].inc()

    async def through(self, name, load, parse):
        """The value of entry ``name``: ``parse`` of the cache's text, or
        else of what ``await load()`` reads from storage (a str; None:
        nothing to keep, and the answer), kept for the next lookup on any
        node."""
        found = await self.lookup([name])
        if found is not None:
            value = parsed(found[0][0], parse)
            if value is not None:
                return value
        text = await load()
        if text is None:
            return None
        if found is not None:
            await self.fill(name, found[0][1], text)
        return parse(text)

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
        """Make every node drop ``names`` (a write changed them): at once,
        or, while the state is away, by a new epoch begun before this node
        trusts the cache again.  Waits (within the state's timeouts) for
        one try at that, so that a write answered once Redis is back has
        been forgotten."""
        if not self.trusted and not await self._renew():
            return
        try:
            await self._state.cache_forget(names, self.ttl)
        except SharedStateUnavailable:
            self._distrust()

    def _distrust(self):
        self._failures += 1
        if self.trusted:
            self.trusted = False
            self._schedule(self.retry_after)

    def _schedule(self, delay):
        if self._next is not None and self._next.active():
            if self._next.getTime() <= self._reactor.seconds() + delay:
                return
            self._next.cancel()
        self._next = self._reactor.callLater(delay, self._tick)

    def _tick(self):
        """Renew the membership, or (not trusted) try to begin a new epoch."""
        self._next = None
        if not self.running:
            return
        if not self.trusted:
            self._renew()
            return
        failures = self._failures
        renewing = self._state.cache_join(self.member, self.lease)
        renewing.addCallbacks(self._joined, self._failed, callbackArgs=(failures,))

    def _joined(self, _, failures):
        if failures == self._failures and self.trusted:
            self._schedule(self.lease / 3)

    def _failed(self, reason):
        if not reason.check(SharedStateUnavailable):
            log.failure("storage metadata cache: renewing its membership", reason)
        self._distrust()
        self._schedule(self.retry_after)

    def _renew(self):
        """Begin a new epoch (one try at a time, shared by whoever asks
        meanwhile).  :return: Deferred firing with whether the cache is
        trusted again."""
        waiting = defer.Deferred()
        if self._renewing is not None:
            self._renewing.append(waiting)
            return waiting
        self._renewing = [waiting]
        failures = self._failures
        began = self._state.cache_new_epoch(self.member, self.lease)  # may answer at once
        began.addCallbacks(self._renewed, self._not_renewed, callbackArgs=(failures,))
        return waiting

    def _renewed(self, _, failures):
        if failures == self._failures:  # nothing failed while it began
            if not self.trusted and self._failures:
                log.info("storage metadata cache: a new epoch began; shared entries trusted")
            self.trusted = True
        if self.running:
            self._schedule(self.lease / 3 if self.trusted else 0)
        self._tell()

    def _not_renewed(self, reason):
        if not reason.check(SharedStateUnavailable):
            log.failure("storage metadata cache: beginning a new epoch", reason)
        if self.running:
            self._schedule(self.retry_after)
        self._tell()

    def _tell(self):
        waiting, self._renewing = self._renewing, None
        for each in waiting:
            each.callback(self.trusted)

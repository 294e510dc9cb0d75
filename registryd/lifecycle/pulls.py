"""Counting pulls without slowing them: in memory first, into storage in
batches.

A manifest GET or HEAD that succeeded calls ``PullRecorder.record``: a dict
update on the reactor thread, nothing awaited.  Every ``FLUSH_INTERVAL``
seconds, as soon as ``FLUSH_ENTRIES`` entries are pending, and when the
service stops, the pending times are written: into the nodes' shared
state when there is one (``registryd.lifecycle.shared_pulls``: one merge
per repository, seen by every node at once, persisted to storage by one
node at a time), else (one node, or Redis not answering) merged into each
repository's pull record in storage (``registryd.storage.pulls``), which
every node and worker process merges into rather than overwrites.
A flush that fails keeps its entries for the next one; memory stays
bounded (``MAX_PENDING`` entries; beyond, new pulls are not counted until
a flush succeeds, and the log says so once).
"""

from twisted.internet import defer
from twisted.logger import Logger

from registryd.errors import RegistryError
from registryd.ops.maintenance import PeriodicService
from registryd.shared.errors import SharedStateUnavailable
from registryd.storage.errors import StorageError

log = Logger()

#: Seconds between writes of the pending pull times.
FLUSH_INTERVAL = 5.0
#: Pending entries that start a flush before the interval is up.
FLUSH_ENTRIES = 10_000
#: Most (repository, tag or digest) entries kept in memory between flushes.
MAX_PENDING = 100_000


class PullRecorder:
    """Pending pull times of every repository, and their flushing."""

    def __init__(self, registry, clock, max_pending=MAX_PENDING, flush_entries=FLUSH_ENTRIES):
        """
        :param registry: the ``registryd.storage.registry.Registry`` whose
            repositories' ``pulls`` records (or whose ``shared_pulls``, when
            the nodes share state) the times go to.
        :param clock: an IReactorTime (its ``seconds()`` stamps the pulls).
        :param flush_entries: pending entries that start a flush at once.
        """
        self._registry = registry
        self._clock = clock
        self._max_pending = max_pending
        self._flush_entries = flush_entries
        self._pending = {}  # name -> ({tag: time}, {digest: time})
        self._count = 0
        self._warned = False
        self._flushing = None

    def record(self, name, tag, digest):
        """Repository ``name``'s manifest ``digest`` was pulled, by ``tag``
        (or None: by digest), now."""
        now = self._clock.seconds()
        tags, manifests = self._pending.get(name, (None, None))
        if tags is None:
            tags, manifests = self._pending[name] = ({}, {})
        for entries, key in ((tags, tag), (manifests, str(digest))):
            if key is None:
                continue
            if key not in entries:
                if self._count >= self._max_pending:
                    if not self._warned:
                        log.warn(
                            "pull times: {count} pending, storage not taking them; "
                            "new pulls are not counted until it does",
                            count=self._count,
                        )
                        self._warned = True
                    continue
                self._count += 1
            entries[key] = now
        if self._count >= self._flush_entries and self._flushing is None:
            self.flush()  # failures are logged and kept for the next flush

    def pending(self, name):
        """``(tags, manifests)`` not yet written for repository ``name``."""
        tags, manifests = self._pending.get(name, ({}, {}))
        return dict(tags), dict(manifests)

    def flush(self):
        """Write what is pending; a Deferred.  One flush at a time: a call
        while one runs waits for it, then flushes what came since."""
        previous = self._flushing

        async def run():
            if previous is not None:
                await previous
            await self._flush()

        self._flushing = flushing = defer.ensureDeferred(run())

        def done(result):
            if self._flushing is flushing:
                self._flushing = None
            return result

        return flushing.addBoth(done)

    async def _flush(self):
        pending, self._pending, self._count = self._pending, {}, 0
        self._warned = False
        shared = self._registry.shared_pulls
        for name, (tags, manifests) in pending.items():
            try:
                if shared is not None:
                    try:
                        await shared.merge(name, tags, manifests)
                        continue
                    except SharedStateUnavailable:
                        shared = None  # as with one node: the rest into storage
                written = await self._registry.stored_repository(name).pulls.merge(tags, manifests)
            except (StorageError, RegistryError) as error:
                log.warn("pull times of {name} not written yet: {error}", name=name, error=error)
                written = False
            if not written:
                for tag, time in tags.items():
                    self._keep(name, tag, None, time)
                for digest, time in manifests.items():
                    self._keep(name, None, digest, time)

    def _keep(self, name, tag, digest, time):
        """Put an unwritten entry back, unless a newer pull replaced it."""
        tags, manifests = self._pending.setdefault(name, ({}, {}))
        entries, key = (tags, tag) if tag is not None else (manifests, digest)
        if key not in entries:
            if self._count >= self._max_pending:
                return
            self._count += 1
            entries[key] = time


class _NoPullRecorder:
    """Counts nothing: for an app made without a recorder (tests, tools)."""

    def record(self, name, tag, digest):
        pass

    def pending(self, name):
        return {}, {}


NO_PULLS = _NoPullRecorder()


class PullFlushing(PeriodicService):
    """Flushes a ``PullRecorder`` every ``interval`` seconds and once more
    when the service stops (after http.draintimeout's requests)."""

    def __init__(self, recorder, interval=FLUSH_INTERVAL, clock=None):
        super().__init__("pull times", interval, recorder.flush, clock=clock)
        self._recorder = recorder

    def stopService(self):
        running = super().stopService()

        async def last():
            if running is not None:
                await running
            await self._recorder.flush()

        return defer.ensureDeferred(last())

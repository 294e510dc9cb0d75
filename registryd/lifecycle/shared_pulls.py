"""Pull times in the nodes' shared state (Redis): every node's flushed
pulls are seen by all at once, and storage is written by one node at a
time.

Each node counts pulls in memory and flushes them every few seconds
(``registryd.lifecycle.pulls``); with the state shared, a flush is one
merge per repository into two Redis tables (``pulls:tags:<name>`` and
``pulls:manifests:<name>``, time by tag and by digest; the larger time of
each field wins, so the nodes' merges never undo each other) and a mark
in ``pulls:dirty``.  Readers (the details API, the web interface,
retention) take the latest of the storage record and these tables
(:meth:`registryd.storage.pulls.PullRecords.read`), so a pull through one
node shows on every node after that node's flush.

Storage stays the durable record: every ``PERSIST_INTERVAL`` seconds one
node (a scheduled job, ``registryd.shared.jobs``) merges the marked
repositories' tables into their storage records and clears the marks it
wrote (a mark set again since stays).  The tables expire ``TABLE_TTL``
after their last merge; a Redis that lost them loses at most the pulls
of one persist interval.

When Redis does not answer, every call here raises
:class:`registryd.shared.SharedStateUnavailable` and the callers fall back
to storage alone, as with one node.
"""

from twisted.logger import Logger

from registryd.errors import RegistryError
from registryd.shared.errors import SharedStateUnavailable
from registryd.storage.errors import StorageError

log = Logger()

#: Seconds between two writes of the shared pull times into storage.
PERSIST_INTERVAL = 60.0
#: Seconds a repository's tables last after their last merge.
TABLE_TTL = 7 * 24 * 3600.0
_DIRTY = "pulls:dirty"


class SharedPullTimes:
    """The shared pull times of every repository."""

    def __init__(self, state, clock):
        """
        :param state: the nodes' :class:`registryd.interfaces.ISharedState`
            (``shared`` true).
        :param clock: an IReactorTime, for the marks' times.
        """
        self._state = state
        self._clock = clock

    async def merge(self, name, tags, manifests):
        """Add pulls of repository ``name`` (time by tag, by digest)."""
        if tags:
            await self._state.merge_latest(f"pulls:tags:{name}", tags, TABLE_TTL)
        if manifests:
            await self._state.merge_latest(f"pulls:manifests:{name}", manifests, TABLE_TTL)
        await self._state.merge_latest(_DIRTY, {name: self._clock.seconds()}, TABLE_TTL)

    async def read(self, name):
        """``(tags, manifests)`` of repository ``name``."""
        return (
            await self._state.latest(f"pulls:tags:{name}"),
            await self._state.latest(f"pulls:manifests:{name}"),
        )

    async def forget_tags(self, name, tags):
        """Deleted tags of ``name``: their pulls are no longer its."""
        await self._state.remove_fields(f"pulls:tags:{name}", dict.fromkeys(tags))

    async def forget_repository(self, name):
        """Repository ``name`` was removed."""
        await self._state.delete(f"pulls:tags:{name}")
        await self._state.delete(f"pulls:manifests:{name}")
        await self._state.remove_fields(_DIRTY, {name: None})

    async def persist(self, registry):
        """Merge the marked repositories' tables into their storage
        records (``registry.stored_repository(name).pulls``); how many.
        A repository whose record cannot be written stays marked; Redis
        going away ends the run (the marks stay for the next one)."""
        written = 0
        try:
            for name, marked in sorted((await self._state.latest(_DIRTY)).items()):
                tags, manifests = await self.read(name)
                try:
                    merged = await registry.stored_repository(name).pulls.merge(tags, manifests)
                except (StorageError, RegistryError) as error:
                    log.warn(
                        "pull times of {name} not persisted yet: {error}", name=name, error=error
                    )
                    continue
                if merged:
                    await self._state.remove_fields(_DIRTY, {name: marked})
                    written += 1
        except SharedStateUnavailable:
            pass  # logged once by the shared state; the next run goes on
        return written

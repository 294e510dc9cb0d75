"""The push guard across nodes: what pushes on *any* node use, kept safe
from an online collection running on one of them.

:class:`registryd.storage.guard.PushGuard` protects, in one process, the
digests a push relies on from the moment it checks they exist until its
links are written.  :class:`NodesGuard` wraps it and, when the nodes share
state (Redis), does the same across nodes with the shared state's sets
and leases, so an online GC on node A never removes a blob a push on node
B relies on, without counting on the grace period:

- a push on any node puts each digest it holds in ``guard:held``, *then*
  reads the running collections (``guard:collections``) and adds the
  digests to each one's ``guard:touched:<run>``;
- a collection registers itself in ``guard:collections``, *then* copies
  what is in ``guard:held`` into its ``guard:touched:<run>``: whichever of
  the two writes first, the other's read sees it, so every digest held at
  any time since the collection started ends up in its touched set;
- before deleting, the collection takes ``guard:deleting:<digest>``,
  *then* checks the touched set; a push, after adding to the touched set,
  waits while ``guard:deleting:<digest>`` exists, so it either stops the
  deletion or waits for it to end and then finds the blob missing (and
  uploads it again), as on one node.

Every entry expires (a node that dies holding something frees it), and
when the shared state does not answer, the guard errs on the safe side:
the collection deletes nothing it cannot check, and a push goes on with
this node's guard only (the grace period then covers it, as before).
"""

import uuid

from twisted.internet import task

from registryd.shared.errors import SharedStateUnavailable
from registryd.storage.guard import PushGuard

#: seconds a push's hold lasts in the shared state (pushes hold for the
#: length of one request's checks and link writes)
HOLD_TTL = 3600.0
#: seconds a collection's registration and touched set last at most
COLLECTION_TTL = 24 * 3600.0
#: seconds a deletion's claim lasts at most
DELETING_TTL = 600.0


class _NodesHolding:
    def __init__(self, guard, digests):
        self._guard = guard
        self._digests = sorted({str(digest) for digest in digests})
        self._local = guard.local.using(self._digests)
        self._entries = []

    async def __aenter__(self):
        await self._local.__aenter__()
        shared = self._guard.shared
        if shared is None:
            return self
        try:
            token = uuid.uuid4().hex
            for digest in self._digests:
                entry = f"{digest} {token}"
                await shared.add_member("guard:held", entry, HOLD_TTL)
                self._entries.append(entry)
            for run in await shared.members("guard:collections"):
                for digest in self._digests:
                    await shared.add_member(f"guard:touched:{run}", digest, COLLECTION_TTL)
            for digest in self._digests:
                await self._guard._wait_for_deletion(digest)
        except SharedStateUnavailable:
            pass  # this node's guard (and the grace period) only
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info):
        shared = self._guard.shared
        try:
            for entry in self._entries:
                await shared.remove_member("guard:held", entry)
        except SharedStateUnavailable:
            pass  # the entries expire on their own
        finally:
            self._entries = []
            await self._local.__aexit__(*exc_info)


class _NodesCollecting:
    def __init__(self, guard):
        self._guard = guard
        self._local = guard.local.collecting()
        self.run = None

    async def __aenter__(self):
        self._local.__enter__()
        shared = self._guard.shared
        if shared is not None:
            run = uuid.uuid4().hex
            try:
                await shared.add_member("guard:collections", run, COLLECTION_TTL)
                self.run = run
                for entry in await shared.members("guard:held"):
                    await shared.add_member(
                        f"guard:touched:{run}", entry.split(" ")[0], COLLECTION_TTL
                    )
            except SharedStateUnavailable:
                pass  # in_use then says "in use" for everything: nothing is deleted
            self._guard._runs.append(self)
        return self._guard

    async def __aexit__(self, *exc_info):
        self._local.__exit__(*exc_info)
        shared = self._guard.shared
        if shared is None:
            return
        self._guard._runs.remove(self)
        if self.run is not None:
            try:
                await shared.remove_member("guard:collections", self.run)
                await shared.delete(f"guard:touched:{self.run}")
            except SharedStateUnavailable:
                pass  # they expire


class NodesGuard:
    """The registry's push guard: :class:`PushGuard` in this process, plus the
    same across nodes through ``shared_state`` when it is shared."""

    #: longest pause between two looks at a deletion another node runs
    longest_retry = 0.5

    def __init__(self, shared_state=None, local=None, reactor=None):
        self.local = local if local is not None else PushGuard()
        self.shared = shared_state if shared_state is not None and shared_state.shared else None
        self._reactor = reactor
        self._runs = []  # _NodesCollecting in this process, registered or not
        self._claims = {}  # digest -> token of our guard:deleting lease

    def using(self, digests):
        """``async with guard.using(digests):`` hold ``digests`` on every node."""
        return _NodesHolding(self, digests)

    def collecting(self):
        """``async with guard.collecting():`` around one collection run."""
        return _NodesCollecting(self)

    async def in_use(self, digest):
        """Held now, or since the current collection started, on any node?
        (When that cannot be told, yes.)"""
        if self.local.in_use(digest):
            return True
        if self.shared is None or not self._runs:
            return False
        for collecting in self._runs:
            if collecting.run is None:
                return True
            try:
                if await self.shared.is_member(f"guard:touched:{collecting.run}", str(digest)):
                    return True
            except SharedStateUnavailable:
                return True
        return False

    async def begin_delete(self, digest, aliases=()):
        """Claim ``digest`` for deletion unless it or one of ``aliases`` is
        in use on any node; True if claimed (then call ``end_delete``)."""
        if not self.local.begin_delete(digest, aliases):
            return False
        if self.shared is None:
            return True
        token = uuid.uuid4().hex
        try:
            claimed = await self.shared.acquire(f"guard:deleting:{digest}", token, DELETING_TTL)
            if claimed:
                names = [digest, *aliases]
                if not any([await self.in_use(name) for name in names]):
                    self._claims[str(digest)] = token
                    return True
                await self.shared.release(f"guard:deleting:{digest}", token)
        except SharedStateUnavailable:
            pass
        self.local.end_delete(digest)
        return False

    async def end_delete(self, digest):
        self.local.end_delete(digest)
        token = self._claims.pop(str(digest), None)
        if self.shared is not None and token is not None:
            try:
                await self.shared.release(f"guard:deleting:{digest}", token)
            except SharedStateUnavailable:
                pass  # it expires

    async def _wait_for_deletion(self, digest):
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        pause = 0.02
        while await self.shared.get(f"guard:deleting:{digest}") is not None:
            await task.deferLater(reactor, pause, lambda: None)
            pause = min(pause * 2, self.longest_retry)

    @property
    def held(self):
        """The digests held in this process right now (for diagnostics)."""
        return self.local.held

"""What pushes in this process are using, so online garbage collection
leaves it alone.

Garbage collection marks what manifests reference, then sweeps the rest.
A push running at the same time can make an unreferenced blob referenced
again between the two: it finishes an upload of content that is already
stored (the old copy is kept), mounts a blob, or puts a manifest that names
a blob pushed long ago.  The grace period (a blob or link younger than it
is never swept) covers fresh data; this guard covers old data that a push
in this process is using right now:

- a write path holds the digests it relies on (:meth:`PushGuard.using`)
  from before it checks that they exist until its links are written;
- while a collection runs (:meth:`PushGuard.collecting`), every digest held
  at any time since it started is remembered;
- the sweep removes a digest only through :meth:`PushGuard.begin_delete`,
  which refuses one that is held or was held since the collection started,
  and otherwise marks it as being deleted: a push that wants it then waits
  until the deletion is over, and so finds it missing (and uploads it
  again) rather than finding it about to vanish.

Everything runs on the reactor thread, so each of these steps is atomic.
Several registryd processes on one backend do not see each other's holds:
for them the grace period is the protection (or run collection offline).
"""

from collections import Counter

from twisted.internet import defer


class _Holding:
    def __init__(self, guard, digests):
        self._guard = guard
        self._digests = sorted({str(digest) for digest in digests})

    async def __aenter__(self):
        guard = self._guard
        for digest in self._digests:
            guard._held[digest] += 1
            if guard._touched is not None:
                guard._touched.add(digest)
        try:
            for digest in self._digests:
                while digest in guard._deleting:
                    waiter = defer.Deferred()
                    guard._deleting[digest].append(waiter)
                    await waiter
        except BaseException:
            self._release()
            raise
        return self

    async def __aexit__(self, *exc_info):
        self._release()

    def _release(self):
        held = self._guard._held
        for digest in self._digests:
            held[digest] -= 1
            if held[digest] <= 0:
                del held[digest]


class PushGuard:
    """Digests in use by pushes, and digests being deleted by collection."""

    def __init__(self):
        self._held = Counter()
        self._touched = None  # set of digests while a collection runs
        self._collections = 0
        self._deleting = {}  # digest -> [Deferred waiting for the end]

    def using(self, digests):
        """``async with guard.using(digests):`` hold ``digests`` (Digest or
        str) for the duration; entering waits for any deletion of them
        that is under way."""
        return _Holding(self, digests)

    def collecting(self):
        """A context manager around one collection run."""
        guard = self

        class _Collecting:
            def __enter__(self):
                if guard._collections == 0:
                    guard._touched = set(guard._held)
                guard._collections += 1
                return guard

            def __exit__(self, *exc_info):
                guard._collections -= 1
                if guard._collections == 0:
                    guard._touched = None

        return _Collecting()

    def in_use(self, digest):
        """Is ``digest`` held now, or was it held since the current
        collection started?"""
        digest = str(digest)
        if digest in self._held:
            return True
        return self._touched is not None and digest in self._touched

    def begin_delete(self, digest, aliases=()):
        """Claim ``digest`` for deletion unless it or one of ``aliases`` (other
        names linking to the same data) is in use.  True if claimed: call
        ``end_delete`` when done, whatever happens."""
        names = [str(digest)] + [str(alias) for alias in aliases]
        if any(self.in_use(name) for name in names) or names[0] in self._deleting:
            return False
        self._deleting[names[0]] = []
        return True

    def end_delete(self, digest):
        for waiter in self._deleting.pop(str(digest), []):
            waiter.callback(None)

    @property
    def held(self):
        """The digests held right now (for diagnostics)."""
        return sorted(self._held)

"""Where an upload's appended bytes go: into storage and into its running hash.

Every piece of a request body must be both written and hashed, in order,
with a bounded amount in flight (:func:`pump`), and off the reactor
thread.  How depends on the writer:

- :class:`ObservedSink`, for writers with
  :class:`~registryd.interfaces.IObservedWriter` (the filesystem's): one
  thread job per piece writes it and then hashes it.  Measured on image
  pushes, where pieces are small, each thread hand-off (a futex wake-up,
  the GIL passed over and back, a reactor wake-up for its Deferred) cost
  more than hashing the piece; this halves them.
- :class:`SeparateSinks`, for the others (S3, memory, third-party
  drivers): the driver's ``write`` and a hasher thread of the upload's
  own, side by side.

Either way a sink's Deferreds never fail: a sink keeps its failures
(``failures``) for the upload to act on once everything it was given has
run (:meth:`settle`), so that every byte received is written, and hashed,
before an error reaches the client, which then resumes from the offset
storage reports.
"""

from collections import deque

from twisted.internet import defer

from registryd.interfaces import IObservedWriter
from registryd.runtime.threads import SerialWorker

#: Bytes taken from the source per step, and at most in flight to the
#: sink at once.
CHUNK_SIZE = 1024 * 1024
MAX_IN_FLIGHT = 6 * CHUNK_SIZE


async def pump(source, sink):
    """Move all of ``source`` into ``sink``, in order, bounded in flight.

    ``source.read(n)`` returns Deferred bytes (b"" at the end); ``sink`` is
    a callable taking a chunk and returning a Deferred.  Whatever happens
    (the source fails, the caller is cancelled), every chunk already taken
    from the source is handed to the sink before this returns or raises;
    the caller then waits for the sink to finish its queued work.
    Returns the number of bytes moved.
    """
    pending = deque()
    in_flight = 0
    moved = 0
    while True:
        chunk = await source.read(CHUNK_SIZE)
        if not chunk:
            break
        moved += len(chunk)
        pending.append((len(chunk), sink(chunk)))
        in_flight += len(chunk)
        while in_flight > MAX_IN_FLIGHT:
            size, done = pending.popleft()
            await done
            in_flight -= size
    while pending:
        _, done = pending.popleft()
        await done
    return moved


def upload_sink(writer, hasher):
    """The sink for an append through ``writer`` that also feeds
    ``hasher`` (None: write only, the stored bytes are hashed later)."""
    if hasher is not None and IObservedWriter.providedBy(writer):
        return ObservedSink(writer, hasher)
    return SeparateSinks(writer, hasher)


class _Sink:
    def __init__(self, writer, hasher):
        self._writer = writer
        self._hasher = hasher
        #: Failures of writes (or of the hasher), in the order they came
        self.failures = []

    def _failed(self, failure):
        self.failures.append(failure)


class ObservedSink(_Sink):
    """Each piece written and then hashed in one job of the writer's
    thread (:class:`~registryd.interfaces.IObservedWriter`)."""

    def __call__(self, chunk):
        return self._writer.write_observed(chunk, self._hasher.update).addErrback(self._failed)

    def settle(self):
        """A Deferred firing once every piece given has been written and
        hashed, or has failed: the hasher is then no longer in use."""
        return self._writer.drain()


class SeparateSinks(_Sink):
    """Each piece to the writer's ``write`` and to a hasher thread of its own."""

    def __init__(self, writer, hasher):
        super().__init__(writer, hasher)
        self._hash_worker = SerialWorker() if hasher is not None else None

    def __call__(self, chunk):
        written = self._writer.write(chunk).addErrback(self._failed)
        if self._hash_worker is None:
            return written
        hashed = self._hash_worker.submit(self._hasher.update, chunk).addErrback(self._failed)
        return defer.gatherResults([written, hashed])

    def settle(self):
        """A Deferred firing once the hasher has taken every piece given;
        the writer's own ``close`` waits for its writes."""
        if self._hash_worker is None:
            return defer.succeed(None)
        return self._hash_worker.drain()

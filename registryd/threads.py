"""Running blocking work off the reactor thread, in order.

Hashing and file I/O release the GIL, so doing them in threads both keeps
the reactor responsive and lets them use the machine's other core.

A :class:`SerialWorker` runs the callables given to it one at a time, in
submission order, in a thread pool.  Unlike ``deferToThread``, its
bookkeeping does not depend on the Deferreds it hands out: a caller may
cancel (klein cancels a handler's Deferred when the client disconnects) and
the queued work still runs to completion, and :meth:`drain` still tells
when it has.  That is what lets an interrupted upload keep every byte it
received and close its file only after the last write finished.
"""

from collections import deque

from twisted.internet import defer


def _default_reactor_and_pool():
    from twisted.internet import reactor

    return reactor, reactor.getThreadPool()


class SerialWorker:
    """Runs blocking callables one after another in a thread pool."""

    def __init__(self, reactor=None, pool=None):
        if reactor is None or pool is None:
            default_reactor, default_pool = _default_reactor_and_pool()
            reactor = reactor or default_reactor
            pool = pool or default_pool
        self._reactor = reactor
        self._pool = pool
        self._queue = deque()
        self._running = False
        self._idle_waiters = []

    @property
    def busy(self):
        return self._running or bool(self._queue)

    def submit(self, function, *args, **kwargs):
        """Queue C{function(*args, **kwargs)}; a Deferred fires with its result.

        Cancelling the returned Deferred does not stop the work.
        """
        result = defer.Deferred()
        self._queue.append((function, args, kwargs, result))
        if not self._running:
            self._next()
        return result

    def drain(self):
        """A Deferred that fires (with None) once nothing is queued or running."""
        if not self.busy:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def _next(self):
        if not self._queue:
            self._running = False
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            return
        self._running = True
        function, args, kwargs, result = self._queue.popleft()

        def on_result(success, value):
            self._reactor.callFromThread(self._finished, result, success, value)

        self._pool.callInThreadWithCallback(on_result, function, *args, **kwargs)

    def _finished(self, result, success, value):
        # Start the next item before running callbacks, so a callback that
        # submits more work queues it behind what is already waiting.
        self._next()
        if result.called:  # cancelled by its caller: the work ran anyway
            return
        if success:
            result.callback(value)
        else:
            result.errback(value)

"""Running blocking work off the reactor thread, in order.

Hashing and file I/O release the GIL, so doing them in threads both keeps
the reactor responsive and lets them use the machine's other core.  The
threads are registryd's own (:class:`WorkerThreads`): a hand-off through
Twisted's thread pool costs several times more.

A :class:`SerialWorker` runs the callables given to it one at a time, in
submission order, in a thread pool.  Unlike ``deferToThread``, its
bookkeeping does not depend on the Deferreds it hands out: a caller may
cancel (klein cancels a handler's Deferred when the client disconnects) and
the queued work still runs to completion, and :meth:`drain` still tells
when it has.  That is what lets an interrupted upload keep every byte it
received and close its file only after the last write finished.
"""

import queue
import threading
from collections import deque

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()


_shared_threads = None


def shared_threads():
    """The :class:`WorkerThreads` that :class:`SerialWorker` runs in when
    given no pool: made on first use, shared by the process."""
    global _shared_threads
    if _shared_threads is None:
        _shared_threads = WorkerThreads(max_threads=32, name="registryd-serial")
    return _shared_threads


def _default_reactor_and_pool():
    from twisted.internet import reactor

    return reactor, shared_threads()


class WorkerThreads:
    """Long-lived daemon threads taking callables from one C-level queue.

    Twisted's thread pool hands each call over through its ``Team``, a
    coordinator and a ``queue.Queue`` per thread, all Python with the GIL
    held: during an image push (hasher and writer hand-offs for every
    piece of five uploads at once) that coordination and the futex
    wake-ups it causes cost the server more CPU than hashing did.  Here a
    hand-off is one ``SimpleQueue.put`` (C), which wakes a waiting thread
    or starts one, up to ``max_threads``; a thread ends after
    ``idle_timeout`` seconds without work.  A callable's exceptions are
    its own business (callers deliver outcomes themselves): one that
    escapes is logged.

    Daemon threads: what runs here must leave storage consistent if the
    process exits midway (the filesystem driver writes through a temporary
    file and a rename; an upload's bytes are its offset, whatever a cut
    write left).  Provides ``callInThread``, as Twisted's pool does, so
    :class:`SerialWorker` takes either.
    """

    idle_timeout = 30.0

    def __init__(self, max_threads=16, name="registryd-worker"):
        self.max_threads = max_threads
        self._name = name
        self._work = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Under _lock:
        self._threads = 0  # started and not ended
        self._idle = 0  # waiting for work and not promised a queued call

    @property
    def threads(self):
        """Threads started and not ended."""
        return self._threads

    def callInThread(self, function, *args):  # noqa: N802 (Twisted's pool's name)
        """Run ``function(*args)`` in one of the threads, soon."""
        with self._lock:
            if self._idle:
                self._idle -= 1  # promised to a waiting thread
                start = False
            else:
                start = self._threads < self.max_threads
                self._threads += start
        self._work.put((function, args))
        if start:
            threading.Thread(target=self._loop, name=self._name, daemon=True).start()

    def _loop(self):
        while True:
            try:
                function, args = self._work.get(timeout=self.idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # nobody is about to put work for us
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            try:
                function(*args)
            except BaseException:
                _log.failure("a call in {name} failed", name=self._name)
            with self._lock:
                self._idle += 1


class _ReactorDelivery:
    """Runs calls in threads and hands their outcomes to the reactor thread
    in batches: one ``callFromThread`` for all that finished meanwhile.
    Subclasses say what delivering means (``_deliver``, on the reactor
    thread, taking :meth:`_take_finished`)."""

    def __init__(self):
        self._lock = threading.Lock()
        # Under _lock:
        self._done = deque()  # (result, success, value) for the reactor
        self._delivering = False  # a delivery to the reactor is scheduled

    def _call_and_deliver(self, reactor, result, function, args, kwargs):
        """In a thread: run ``function``, queue its outcome for ``result``."""
        try:
            outcome = (result, True, function(*args, **kwargs))
        except BaseException:
            outcome = (result, False, Failure())
        with self._lock:
            self._done.append(outcome)
            deliver = not self._delivering
            self._delivering = True
        if deliver:
            reactor.callFromThread(self._deliver)

    def _take_finished(self):
        """On the reactor thread: the outcomes queued so far."""
        with self._lock:
            done = list(self._done)
            self._done.clear()
            self._delivering = False
        return done

    def _deliver(self):
        raise NotImplementedError


class SerialWorker(_ReactorDelivery):
    """Runs blocking callables one after another in a thread pool.

    A pool thread that finds more work queued behind the item it finished
    runs that too, up to ``burst`` items, instead of handing control back
    to the reactor between items: a pipeline stage (the hasher or the file
    writer of an upload) then costs the reactor one thread hand-off per
    burst, not one per chunk, and never waits for the reactor to get round
    to queueing its next item.  After ``burst`` items the worker goes to the
    back of the pool's queue, so other work sharing the pool is not starved.
    Results are delivered on the reactor thread, in order, several per
    wake-up when they finish faster than the reactor collects them.
    """

    #: items one pool thread runs before it yields the thread
    burst = 32

    def __init__(self, reactor=None, pool=None):
        if reactor is None or pool is None:
            default_reactor, default_pool = _default_reactor_and_pool()
            reactor = reactor or default_reactor
            pool = pool or default_pool
        super().__init__()
        self._reactor = reactor
        self._pool = pool
        # Shared with the pool thread, under _lock:
        self._queue = deque()  # (function, args, kwargs, result) not started
        self._running = False  # a pool thread owns the queue
        # Reactor thread only:
        self._outstanding = 0  # submitted, result not yet delivered
        self._idle_waiters = []

    @property
    def busy(self):
        return self._outstanding > 0

    def submit(self, function, *args, **kwargs):
        """Queue ``function(*args, **kwargs)``; a Deferred fires with its result.

        Cancelling the returned Deferred does not stop the work.
        """
        result = defer.Deferred()
        self._outstanding += 1
        with self._lock:
            self._queue.append((function, args, kwargs, result))
            start = not self._running
            self._running = True
        if start:
            self._pool.callInThread(self._run)
        return result

    def drain(self):
        """A Deferred that fires (with None) once nothing is queued or running."""
        if not self.busy:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def _run(self):
        """In a pool thread: run queued items until none are left (or the
        burst is used up, then queue this again behind other pool work)."""
        for _ in range(self.burst):
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                function, args, kwargs, result = self._queue.popleft()
            self._call_and_deliver(self._reactor, result, function, args, kwargs)
        self._pool.callInThread(self._run)

    def _deliver(self):
        """On the reactor thread: fire the Deferreds of finished items."""
        for result, success, value in self._take_finished():
            self._outstanding -= 1
            if result.called:  # cancelled by its caller: the work ran anyway
                continue
            if success:
                result.callback(value)
            else:
                result.errback(value)
        if self._outstanding == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)


class BlockingExecutor(_ReactorDelivery):
    """Runs short blocking calls (a stat, a small file read) in threads of
    its own, for callers on the reactor thread.

    ``deferToThread`` goes through Twisted's general thread pool, whose
    coordination costs the reactor thread more than reading a cached
    small file does, and a manifest GET does three such reads.  Here,
    handing work over is one put on a C-level queue, and finished calls
    come back in batches: one reactor wake-up for all that finished
    meanwhile.  The calls run in ``threads`` (:class:`WorkerThreads`,
    made with ``max_threads`` and ``name`` when not given: the filesystem
    driver's ``maxthreads``, at most that many blocking calls at once, as
    in Distribution), which its owner may share with its
    :class:`SerialWorker` instances.
    """

    def __init__(self, reactor=None, max_threads=16, name="registryd-io", threads=None):
        super().__init__()
        self._reactor = reactor
        #: the threads calls run in (:class:`WorkerThreads`), which may be
        #: shared with other work of the same owner
        self.worker_threads = threads or WorkerThreads(max_threads, name)

    @property
    def max_threads(self):
        return self.worker_threads.max_threads

    @property
    def threads(self):
        return self.worker_threads.threads

    def _get_reactor(self):
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def run(self, function, *args):
        """``function(*args)`` in a thread; a Deferred fires with the result
        on the reactor thread (not at all if the caller cancelled it)."""
        result = defer.Deferred()
        self.worker_threads.callInThread(
            self._call_and_deliver, self._get_reactor(), result, function, args, {}
        )
        return result

    def _deliver(self):
        for result, success, value in self._take_finished():
            if result.called:  # cancelled by its caller: the call ran anyway
                continue
            if success:
                result.callback(value)
            else:
                result.errback(value)

"""Running what an admin types in the manhole without freezing the registry.

Conch's manhole runs typed code on the reactor thread, so anything slow
there stops every HTTP answer; worse, helpers returned Deferreds, and a
Deferred *is iterable* (``Deferred.__iter__`` is its ``__await__``: it
yields itself until it has a result), so ``sorted(repos())`` or ``for r in
repos()`` looped on the reactor thread forever, appending the Deferred to
a list that grew by ~150 MB/s until the OOM killer came.

Here each typed statement runs in a thread of its own, and the reactor goes
on serving:

- helpers (:func:`call_on_reactor`) start their work on the reactor thread
  and wait for it in the statement's thread, so they hand back plain values
  (lists, dicts, reports) that sort, iterate and index like any other;
- a watchdog on the reactor (every 0.1 s while statements run) stops a
  statement that has computed longer than ``time_limit`` (time spent
  waiting for a helper does not count: the reactor does that work) by
  raising :class:`TimeLimitExceeded` in its thread
  (``PyThreadState_SetAsyncExc``), and every statement when the daemon's
  resident memory has grown by ``memory_limit`` since statements began
  (:class:`MemoryLimitExceeded`).  Both are BaseExceptions, so ``except
  Exception`` in typed code does not swallow them; they are raised again
  on every tick until the statement ends.  ^C at the prompt raises
  KeyboardInterrupt there the same way;
- while statements run, the address space of the process is capped
  (``RLIMIT_AS``) at what it was plus ``memory_limit`` plus
  :data:`ADDRESS_SPACE_SLACK`: a single huge allocation inside C code
  (``'x' * 10**10``, ``list(range(10**9))``), which no watchdog can
  interrupt, fails with MemoryError instead of growing the daemon;
- what a statement prints goes to its session only (``sys.stdout`` and
  ``sys.displayhook`` route by thread), at most :data:`OUTPUT_LIMIT` bytes
  of it, and the statement waits while :data:`OUTPUT_PENDING` bytes are
  not yet handed to the SSH channel.

What CPython cannot do: interrupt one call into C that keeps the GIL and
neither returns nor allocates (``sum(range(10**12))``); an asynchronous
exception is only seen between bytecodes.  The watchdog stops it the moment
it returns to Python.  A statement blocked in C *without* the GIL (a long
``time.sleep``) does not hold up the reactor; if it has not ended
:data:`ABANDON_AFTER` seconds after it was told to stop, its session gets its
prompt back and the thread is left to end on its own.
"""

import ctypes
import inspect
import os
import resource
import sys
import threading
import time

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.failure import Failure

log = Logger()

#: Bytes of output one statement may print; the rest is dropped (with a note).
OUTPUT_LIMIT = 16 * 1024 * 1024
#: Bytes of a statement's output that may wait for the reactor at once.
OUTPUT_PENDING = 256 * 1024
#: Room in the address space for the daemon itself while statements run.
ADDRESS_SPACE_SLACK = 1024 * 1024 * 1024
#: Seconds a stopped statement has to end before its session moves on.
ABANDON_AFTER = 5.0
#: How often the watchdog looks.
WATCHDOG_INTERVAL = 0.1


class StatementStopped(BaseException):
    """Raised inside a typed statement the manhole stops."""

    message = "stopped"

    def __str__(self):
        return self.message


class TimeLimitExceeded(StatementStopped):
    pass


class MemoryLimitExceeded(StatementStopped):
    pass


def describe(error):
    """One line (of at most 500 characters of message) for an error raised
    by a typed statement.  A statement's own error class may do anything
    in ``__str__``: statements describe their errors in their own thread
    (``Statement.description``), under the watchdog."""
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    try:
        text = str(error)[:500].split("\n", 1)[0]
    except Exception:
        text = "(its message cannot be shown)"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


_current = threading.local()


def current_statement():
    """The statement this thread runs, or None (the reactor, other threads)."""
    return getattr(_current, "statement", None)


# --- routing stdout and the display hook by thread ----------------------------


class _RoutedStdout:
    """``sys.stdout`` while the manhole is used: a statement's thread writes
    to its session, every other thread where ``sys.stdout`` went before."""

    def __init__(self, original):
        self.original = original

    def write(self, text):
        statement = current_statement()
        if statement is None:
            return self.original.write(text)
        statement.output.write(text)
        return len(text)

    def flush(self):
        if current_statement() is None:
            self.original.flush()

    def isatty(self):
        return False if current_statement() is not None else self.original.isatty()

    def __getattr__(self, name):
        return getattr(self.original, name)


def _route_output():
    """Put the routers in place (again, if something replaced them)."""
    if not isinstance(sys.stdout, _RoutedStdout):
        sys.stdout = _RoutedStdout(sys.stdout)
    if getattr(sys.displayhook, "routed_from", None) is None:
        original = sys.displayhook

        def displayhook(value):
            statement = current_statement()
            if statement is None:
                return original(value)
            return statement.display(value)

        displayhook.routed_from = original
        sys.displayhook = displayhook


class _Output:
    """A statement's output on its way to the session's ``sink`` (called on
    the reactor thread): bounded in total and in what waits for delivery."""

    def __init__(self, reactor, sink):
        self._reactor = reactor
        self._sink = sink
        self._ready = threading.Condition()
        self._pending = 0
        self._total = 0
        self.closed = False

    def write(self, text):
        if self.closed or not text:
            return
        if self._total + len(text) > OUTPUT_LIMIT:
            if self._total <= OUTPUT_LIMIT:
                self._total = OUTPUT_LIMIT + 1
                self._send(f"\n[output cut at {OUTPUT_LIMIT} bytes]\n")
            return
        self._total += len(text)
        with self._ready:
            while self._pending > OUTPUT_PENDING and not self.closed:
                self._ready.wait(0.1)
        self._send(text)

    def _send(self, text):
        with self._ready:
            self._pending += len(text)
        self._reactor.callFromThread(self._deliver, text)

    def _deliver(self, text):
        if not self.closed:
            self._sink(text)
        with self._ready:
            self._pending -= len(text)
            self._ready.notify_all()

    def close(self):
        self.closed = True
        with self._ready:
            self._ready.notify_all()


# --- statements ----------------------------------------------------------------


def _raise_in_thread(ident, error_class):
    """Raise ``error_class`` in thread ``ident`` at its next bytecode.

    Never called to forget a raised one (``NULL``): CPython 3.11 then
    leaves the interpreter's asynchronous-exception signal set (only the
    thread that takes an exception resets it), and from then on every
    thread running under ``sys.settrace`` (a debugger, coverage,
    hypothesis explaining a failure) spins at its next function entry for
    ever.  A statement takes a pending stop instead
    (:func:`_take_pending_stop`)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(error_class))


def _take_pending_stop():
    """Nothing, as a Python function: entering it is where the calling
    thread takes an exception :func:`_raise_in_thread` left for it."""


def _memory():
    """(address space, resident set) of this process, in bytes."""
    with open("/proc/self/statm", "rb") as stream:
        size, resident = stream.read().split()[:2]
    page = os.sysconf("SC_PAGE_SIZE")
    return int(size) * page, int(resident) * page


def _give_back_memory():
    """Return what a stopped statement freed to the system (glibc keeps
    freed heap otherwise, and the daemon would look as big as at its peak)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Statement:
    """One typed statement running in its own thread.  ``done`` fires on the
    reactor with None or the exception that ended it (``description`` says
    it in one line)."""

    def __init__(self, runner, function, output, display):
        self._runner = runner
        self._function = function
        self.output = output
        self.display = display
        self.done = defer.Deferred()
        self.started = runner.clock()
        self.waited = 0.0
        self._waiting_since = None
        self.stop_error = None
        self._stopped_at = None
        self.returned = False
        #: held by the watchdog from its look at ``returned`` to its raise,
        #: and by the statement to set it: after that, no stop can come
        self._stopping = threading.Lock()
        #: The error that ended it, in one line (:func:`describe`), or None.
        self.description = None
        self.thread = threading.Thread(target=self._run, name="manhole statement", daemon=True)

    def _run(self):
        error = None
        try:
            _current.statement = self
            try:
                self._function()
            except BaseException as raised:  # the session reports it
                error = raised
                self.description = describe(raised)
        except BaseException as late:  # a stop landing as the statement ended
            error = error or late
        while True:
            # The watchdog may have raised a stop once more just as the
            # statement ended: it must not escape the thread (a traceback in
            # the log, a session never answered).  Once ``returned`` is set
            # it raises none, and the one it may have left pending is taken
            # here, at the next function entry.
            try:
                with self._stopping:
                    self.returned = True
                _take_pending_stop()
                _current.statement = None
                self._runner.reactor.callFromThread(self._finish, error)
                return
            except BaseException as late:
                error = error or late

    def _finish(self, error):
        if self.done.called:
            return
        if error is not None and self.description is None:
            self.description = type(error).__name__
        self._runner.ended(self)
        self.output.close()
        self.done.callback(error)

    # waiting for helpers does not count as computing

    def wait_started(self):
        self._waiting_since = self._runner.clock()

    def wait_ended(self):
        if self._waiting_since is not None:
            self.waited += self._runner.clock() - self._waiting_since
            self._waiting_since = None

    def computing_seconds(self, now):
        waiting = now - self._waiting_since if self._waiting_since is not None else 0.0
        return now - self.started - self.waited - waiting

    def stop(self, error_class):
        """Raise ``error_class`` in the statement (again on each watchdog tick)."""
        if self.stop_error is None:
            self.stop_error = error_class
            self._stopped_at = self._runner.clock()
        with self._stopping:
            if self.thread.ident is not None and not self.returned:
                _raise_in_thread(self.thread.ident, self.stop_error)

    def check(self, now):
        """The watchdog's look at this statement."""
        if self.stop_error is not None:
            if now - self._stopped_at > ABANDON_AFTER:
                log.warn("manhole: a stopped statement is still running; its session moves on")
                error = self.stop_error()
                self.description = describe(error) + "; it goes on in the background"
                self._finish(error)
            else:
                self.stop(self.stop_error)
        elif self.computing_seconds(now) > self._runner.time_limit:
            self.stop(self._runner.time_error)


class StatementRunner:
    """Runs typed statements in threads, under the watchdog (see the module
    docstring).  One per manhole; its sessions share the limits."""

    def __init__(
        self, reactor=None, time_limit=30.0, memory_limit=512 * 1024 * 1024, clock=time.monotonic
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self.clock = clock
        self.running = set()
        self._watchdog = None
        self._resident_ceiling = None
        self._address_space = None  # the limits to restore
        self.time_error = type(
            "TimeLimitExceeded",
            (TimeLimitExceeded,),
            {
                "message": f"stopped after computing for {time_limit:g}s (manhole.timelimit)",
            },
        )
        self.memory_error = type(
            "MemoryLimitExceeded",
            (MemoryLimitExceeded,),
            {
                "message": f"stopped: the daemon grew by more than {memory_limit} bytes"
                " (manhole.memorylimit)",
            },
        )

    def run(self, function, sink, display=None):
        """Start ``function()`` in a statement thread; returns the :class:`Statement`.

        What it prints goes to ``sink(text)`` (on the reactor thread); values
        the display hook sees (``single`` mode code) go to ``display(value)``
        in the statement's thread."""
        _route_output()
        if not self.running:
            self._limit_memory()
        statement = Statement(self, function, _Output(self.reactor, sink), display or print)
        self.running.add(statement)
        if self._watchdog is None:
            self._watchdog = task.LoopingCall(self._tick)
            self._watchdog.clock = self.reactor
            self._watchdog.start(WATCHDOG_INTERVAL, now=False)
        try:
            statement.thread.start()
        except RuntimeError:  # no thread to be had: the caller says so
            self.ended(statement)
            raise
        return statement

    def interrupt(self, statement):
        """^C: KeyboardInterrupt in the statement (repeated until it ends)."""
        if not statement.done.called:
            statement.stop(KeyboardInterrupt)

    def ended(self, statement):
        self.running.discard(statement)
        if statement.stop_error is self.memory_error:
            _give_back_memory()
        if not self.running:
            self._restore_memory()
            if self._watchdog is not None:
                self._watchdog.stop()
                self._watchdog = None

    def _tick(self):
        now = self.clock()
        over = _memory()[1] > self._resident_ceiling
        for statement in list(self.running):
            if over and statement.stop_error is None:
                statement.stop(self.memory_error)
            else:
                statement.check(now)

    def _limit_memory(self):
        address_space, resident = _memory()
        self._resident_ceiling = resident + self.memory_limit
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            cap = address_space + self.memory_limit + ADDRESS_SPACE_SLACK
            if soft != resource.RLIM_INFINITY:
                cap = min(cap, soft)
            if hard != resource.RLIM_INFINITY:
                cap = min(cap, hard)
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
            self._address_space = (soft, hard)
        except (OSError, ValueError) as error:
            log.warn("manhole: cannot cap the address space: {error}", error=str(error))

    def _restore_memory(self):
        if self._address_space is not None:
            try:
                resource.setrlimit(resource.RLIMIT_AS, self._address_space)
            except (OSError, ValueError) as error:
                log.warn(
                    "manhole: cannot restore the address space limit: {error}", error=str(error)
                )
            self._address_space = None


# --- helpers: work on the reactor, a plain value in the statement --------------


def call_on_reactor(reactor, function, *args, **kwargs):
    """Call ``function`` on the reactor thread and wait, in this thread, for
    its value (a Deferred's or coroutine's result): what helpers do, so that
    they hand a statement plain values.  The wait can be interrupted (^C)
    and does not count against the statement's time limit.

    :raises RuntimeError: called on the reactor thread itself, where waiting
        would wait for ever.
    """
    if threadable.isInIOThread():
        name = getattr(function, "__name__", "this helper")
        raise RuntimeError(f"{name}() waits for the reactor: call it from a manhole statement")
    finished = threading.Event()
    box = {}

    def start():
        try:
            result = function(*args, **kwargs)
            if isinstance(result, defer.Deferred) or inspect.isawaitable(result):
                result = defer.ensureDeferred(result)
        except BaseException:
            result = defer.fail()
        defer.maybeDeferred(lambda: result).addBoth(finish)

    def finish(result):
        box["result"] = result
        finished.set()
        if isinstance(result, Failure) and box.get("abandoned"):
            log.failure("manhole: a helper failed after its statement was stopped", result)
        return None  # the failure is the statement's to raise, not an unhandled one

    statement = current_statement()
    reactor.callFromThread(start)
    if statement is not None:
        statement.wait_started()
    try:
        while not finished.wait(0.05):
            pass
    except BaseException:
        box["abandoned"] = True
        raise
    finally:
        if statement is not None:
            statement.wait_ended()
    result = box["result"]
    if isinstance(result, Failure):
        result.raiseException()
    return result

"""The persisted notification queue: one small journal per endpoint.

Distribution keeps undelivered events in memory and loses them with the
process.  registryd keeps them in a directory per endpoint under
``notifications.journal.directory``:

- ``events.jsonl``: append-only, one encoded event per line;
- ``delivered``: the byte offset up to which events were delivered,
  replaced atomically (write + rename);
- ``lock``: held with ``flock`` while a registryd uses the journal, so two
  processes configured with the same directory fail loudly instead of
  interleaving their writes.

When everything appended has been delivered (the normal state of a healthy
endpoint) the file is truncated and the offset reset to 0, so the journal
stays small; while an endpoint is down it grows, up to the endpoint's
``maxevents``.  A restart loads the undelivered lines; a crash can at
worst deliver an event twice (after delivery, before the offset was
written), never lose one that was written.  A line cut short by a crash is
dropped.

Why a local directory and not the storage backend: the queue is per
process (as Distribution's is), needs cheap appends (object stores have
none: one object per event means a PUT, a LIST and a DELETE each), and must
not be shared by several nodes, which a shared bucket would invite.  The
systemd unit's ``StateDirectory`` is where it belongs.

Writes happen in the reactor's thread pool through a ``SerialWorker``:
callers (request handlers, through the notifier) never wait for the disk.
Writes queued while one is in flight are coalesced into the next, which
ends with one ``fsync``.
"""

import fcntl
import json
import os

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from registryd.runtime.threads import SerialWorker

log = Logger()

EVENTS_FILE = "events.jsonl"
OFFSET_FILE = "delivered"
LOCK_FILE = "lock"


class JournalLocked(Exception):
    """Another process uses this journal directory."""


def _write_offset(path, offset):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="ascii") as stream:
        stream.write(str(offset))
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _apply(events_path, offset_path, operations):
    """Apply queued operations in order (runs in a thread)."""
    stream = None
    acked = None
    try:
        for kind, value in operations:
            if kind == "append":
                if stream is None:
                    stream = open(events_path, "ab")
                stream.write(value)
            elif kind == "ack":
                acked = value
            elif kind == "reset":
                if stream is not None:
                    stream.close()
                    stream = None
                os.truncate(events_path, 0)
                _write_offset(offset_path, 0)
                acked = None
        if stream is not None:
            stream.flush()
            os.fsync(stream.fileno())
        if acked is not None:
            _write_offset(offset_path, acked)
    finally:
        if stream is not None:
            stream.close()


def read_journal(directory):
    """The undelivered lines of a journal, and the file's size after
    dropping a torn last line: (list of (line, end offset), size).

    Runs synchronously: it is called once, at start-up.
    """
    events_path = os.path.join(directory, EVENTS_FILE)
    try:
        with open(events_path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        return [], 0
    complete = data.rfind(b"\n") + 1  # a line cut short by a crash is dropped
    if complete != len(data):
        log.warn(
            "notification journal {path}: dropping an incomplete last line ({size} bytes)",
            path=events_path,
            size=len(data) - complete,
        )
        os.truncate(events_path, complete)
        data = data[:complete]
    try:
        with open(os.path.join(directory, OFFSET_FILE), "rb") as stream:
            offset = int(stream.read().strip() or b"0")
    except (FileNotFoundError, ValueError):
        offset = 0
    if offset < 0 or offset > len(data):
        offset = 0  # the file was truncated after the offset was written
    elif offset and data[offset - 1 : offset] != b"\n":
        offset = data.find(b"\n", offset) + 1  # not at a line start: skip to one
    entries = []
    position = offset
    while position < len(data):
        end = data.index(b"\n", position) + 1
        line = data[position : end - 1]
        position = end
        try:
            json.loads(line)
        except ValueError:
            log.warn(
                "notification journal {path}: skipping a damaged line at byte {at}",
                path=events_path,
                at=end - len(line) - 1,
            )
            continue
        entries.append((line, end))
    return entries, len(data)


class Journal:
    """The journal of one endpoint, in ``directory`` (created if missing)."""

    def __init__(self, directory, worker=None):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._lock = open(os.path.join(directory, LOCK_FILE), "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise JournalLocked(
                f"notification journal {directory} is in use by another process"
            ) from None
        self._events_path = os.path.join(directory, EVENTS_FILE)
        self._offset_path = os.path.join(directory, OFFSET_FILE)
        #: the undelivered entries found at start-up: [(line, end offset)]
        self.loaded, self._size = read_journal(directory)
        self._worker = worker or SerialWorker()
        self._operations = []
        self._writing = False
        self._closed = False
        self._idle_waiters = []

    @property
    def size(self):
        """The file's size once every queued operation is applied."""
        return self._size

    def append(self, line):
        """Queue ``line`` (no newline) for writing; returns its end offset,
        to pass to ``ack`` once it is delivered."""
        data = line + b"\n"
        self._size += len(data)
        self._queue("append", data)
        return self._size

    def ack(self, end):
        """Everything up to offset ``end`` is delivered.  When that is all
        of it, the journal is emptied."""
        if end >= self._size:
            self._size = 0
            self._queue("reset", None)
        else:
            self._queue("ack", end)

    def _queue(self, kind, value):
        if self._closed:
            return
        self._operations.append((kind, value))
        self._flush()

    def _flush(self):
        if self._writing:
            return
        if not self._operations:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            return
        operations, self._operations = self._operations, []
        self._writing = True
        done = self._worker.submit(_apply, self._events_path, self._offset_path, operations)

        def written(result):
            self._writing = False
            if isinstance(result, Failure):
                log.failure(
                    "notification journal {path}: write failed; undelivered events "
                    "will not survive a restart",
                    result,
                    path=self._events_path,
                )
            self._flush()

        done.addBoth(written)

    def idle(self):
        """A Deferred that fires once every queued write is on disk."""
        if not self._writing and not self._operations:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def close(self):
        """Finish queued writes, then release the lock.  Returns a Deferred."""

        async def closing():
            await self.idle()
            self._closed = True
            if self._lock.closed:
                return
            try:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            finally:
                self._lock.close()

        return defer.ensureDeferred(closing())

"""Errors raised by storage drivers.

Drivers speak only of paths; the registry model translates these into the
registry's own errors (``registryd.errors``), never the HTTP handlers.
"""

import errno
import functools
import time
from typing import ClassVar

from twisted.logger import Logger

log = Logger()


class StorageError(Exception):
    """A storage operation failed for a reason other than the ones below."""


class PathNotFound(StorageError):
    """The path does not exist (or, for a directory listing, is not a directory)."""

    def __init__(self, path):
        super().__init__(path)
        self.path = path


class InvalidPath(StorageError):
    """The path is not one a driver accepts: not absolute, or with ``.``,
    ``..``, empty components, NUL or backslashes in it."""

    def __init__(self, path, reason="invalid path"):
        super().__init__(f"{reason}: {path!r}")
        self.path = path


class InvalidOffset(StorageError):
    """A read was asked to start beyond the end of a file."""

    def __init__(self, path, offset):
        super().__init__(f"invalid offset {offset} for {path!r}")
        self.path = path
        self.offset = offset


class StorageUnavailable(StorageError):
    """The backend cannot be reached or answered with a server error.

    Clients get a retryable 503 for this; nothing committed is lost.
    """


class StorageRefused(StorageUnavailable):
    """The storage as a whole refuses the operation, whatever the path: it
    is full, read-only or not accessible to registryd.

    Not a client's error and not a bug, so never a 500 with a traceback: an
    operator has to free space, remount or fix permissions, and service
    resumes by itself once they have; until then clients get a retryable
    503 whose message says what is wrong (and ``/health`` says the same).
    """

    #: errno -> what it means for the registry's storage, in an operator's
    #: words, with the errno's name to search for.
    CONDITIONS: ClassVar[dict] = {
        errno.ENOSPC: "storage full: no space left on device (ENOSPC)",
        errno.EDQUOT: "storage full: disk quota exceeded (EDQUOT)",
        errno.EROFS: "storage is read-only (EROFS)",
        errno.EACCES: "storage permission denied (EACCES)",
        errno.EPERM: "storage operation not permitted (EPERM)",
    }

    def __init__(self, condition, doing, path=None):
        super().__init__(f"{condition} {doing}" + (f" {path}" if path else ""))
        self.condition = condition
        self.path = path

    @classmethod
    def from_os_error(cls, error, doing, path):
        """The StorageRefused for an OSError of ``doing`` (``"writing"``,
        ``"reading"``, ...) ``path``, or None when the error is not one of
        the storage as a whole (a missing file, a name too long)."""
        condition = cls.CONDITIONS.get(error.errno)
        return None if condition is None else cls(condition, doing, path)


class _OncePerInterval:
    """Logs each storage condition (a StorageRefused's; any other outage
    counts as one) at most once per ``interval`` seconds: a full disk fails
    every push, and docker retries each a few times a second; the operator
    needs to read why once a minute, not a flood of lines."""

    def __init__(self, interval=60.0, clock=time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last = {}

    def __call__(self, error):
        now = self._clock()
        condition = getattr(error, "condition", None) or type(error).__name__
        if now - self._last.get(condition, -self.interval) < self.interval:
            return
        self._last[condition] = now
        if len(self._last) > 64:  # bounded, whatever the reasons are
            self._last = {condition: now}
        log.warn("storage unavailable, clients get 503: {reason}", reason=str(error))


_log_outage = _OncePerInterval()


def translate_storage_errors(function):
    """Decorate a model coroutine so a backend outage (an unreachable store,
    a full or read-only disk) reaches the client as a retryable 503
    (UNAVAILABLE, with ``Retry-After``) whose message names the problem,
    never as a 500 with internals."""
    from registryd import errors

    @functools.wraps(function)
    async def wrapper(*args, **kwargs):
        try:
            return await function(*args, **kwargs)
        except StorageUnavailable as e:
            _log_outage(e)
            raise errors.Unavailable(str(e), detail={"reason": str(e)}) from e

    return wrapper

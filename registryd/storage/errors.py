"""Errors raised by storage drivers.

Drivers speak only of paths; the registry model translates these into the
registry's own errors (``registryd.errors``), never the HTTP handlers.
"""

import functools


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


def translate_storage_errors(function):
    """Decorate a model coroutine so a backend outage reaches the client as a
    retryable 503 (UNAVAILABLE), never as a 500 with internals."""
    from registryd import errors

    @functools.wraps(function)
    async def wrapper(*args, **kwargs):
        try:
            return await function(*args, **kwargs)
        except StorageUnavailable as e:
            raise errors.Unavailable(detail={"reason": str(e)}) from e

    return wrapper

"""A storage driver wrapper that measures every call.

``InstrumentedDriver(driver)`` provides ``IStorageDriver`` by delegating to
``driver``, timing each call into ``registryd_storage_operation_duration_seconds``
and counting failures into ``registryd_storage_errors_total``.  Wrapping
(rather than instrumenting each driver) means third-party drivers are
measured too, and no driver needs to know about Prometheus.

A missing path (``PathNotFound``) or a read past the end
(``InvalidOffset``) is an answer, not a failure: the model asks for paths
that may not exist all the time, so those are not counted as errors.
Readers and writers are wrapped too: a disk that fills up fails in
``write``, not in ``writer``.
"""

import time

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from registryd.interfaces import (
    IImmediateMetadata,
    IObservedWriter,
    IStorageDriver,
    IStorageReader,
    IStorageWriter,
)
from registryd.ops import metrics
from registryd.storage.errors import InvalidOffset, PathNotFound

_ANSWERS = (PathNotFound, InvalidOffset)


class _Measure:
    """Times calls of one driver and counts their failures."""

    def __init__(self, driver_name):
        self.driver_name = driver_name
        #: operation -> its duration histogram's child, made once (labels()
        #: costs more than the observation; operations are few)
        self._durations = {}

    def _duration(self, operation):
        child = self._durations.get(operation)
        if child is None:
            child = self._durations[operation] = metrics.STORAGE_OPERATION_DURATION.labels(
                self.driver_name, operation
            )
        return child

    def call(self, operation, function, *args, **kwargs):
        started = time.monotonic()
        return defer.maybeDeferred(function, *args, **kwargs).addBoth(
            self._observe, operation, started
        )

    def now(self, operation, function, *args):
        """Time ``function(*args)``, a driver's answer without waiting
        (:class:`registryd.interfaces.IImmediateMetadata`): observed unless
        it is None (the Deferred call that follows is)."""
        started = time.monotonic()
        try:
            result = function(*args)
        except Exception:
            self._observe(Failure(), operation, started)
            raise
        if result is not None:
            self._duration(operation).observe(time.monotonic() - started)
        return result

    def _observe(self, outcome, operation, started):
        # A method with arguments rather than a closure made per call: a
        # stat answered from the kernel's caches costs little more.
        self._duration(operation).observe(time.monotonic() - started)
        if isinstance(outcome, Failure) and not outcome.check(*_ANSWERS, defer.CancelledError):
            metrics.STORAGE_ERRORS.labels(self.driver_name, operation, outcome.type.__name__).inc()
        return outcome


@implementer(IStorageDriver)
class InstrumentedDriver:
    """``driver``, measured.  Unknown attributes are the wrapped driver's."""

    def __init__(self, driver):
        self.wrapped = driver
        self.name = getattr(driver, "name", type(driver).__name__)
        self._measure = _Measure(self.name)
        if IImmediateMetadata.providedBy(driver):
            alsoProvides(self, IImmediateMetadata)

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def __repr__(self):
        return f"<InstrumentedDriver {self.wrapped!r}>"

    def get_content(self, path):
        return self._measure.call("get_content", self.wrapped.get_content, path)

    def put_content(self, path, content):
        return self._measure.call("put_content", self.wrapped.put_content, path, content)

    def reader(self, path, offset=0):
        result = self._measure.call("reader", self.wrapped.reader, path, offset)
        return result.addCallback(_InstrumentedReader, self._measure)

    def writer(self, path, append=False):
        result = self._measure.call("writer", self.wrapped.writer, path, append)
        return result.addCallback(_instrumented_writer, self._measure)

    def stat(self, path):
        return self._measure.call("stat", self.wrapped.stat, path)

    def stat_now(self, path):
        return self._measure.now("stat", self.wrapped.stat_now, path)

    def list(self, path):
        return self._measure.call("list", self.wrapped.list, path)

    def list_now(self, path):
        return self._measure.now("list", self.wrapped.list_now, path)

    def list_many(self, paths):
        return self._measure.call("list_many", self.wrapped.list_many, paths)

    def move(self, source, destination):
        return self._measure.call("move", self.wrapped.move, source, destination)

    def delete(self, path):
        return self._measure.call("delete", self.wrapped.delete, path)

    def redirect_url(self, path, method):
        return self._measure.call("redirect_url", self.wrapped.redirect_url, path, method)


@implementer(IStorageReader)
class _InstrumentedReader:
    def __init__(self, reader, measure):
        self._reader = reader
        self._measure = measure

    @property
    def size(self):
        return self._reader.size

    @property
    def offset(self):
        return self._reader.offset

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def read(self, length):
        return self._measure.call("read", self._reader.read, length)

    def close(self):
        return self._measure.call("reader.close", self._reader.close)


@implementer(IStorageWriter)
class _InstrumentedWriter:
    def __init__(self, writer, measure):
        self._writer = writer
        self._measure = measure

    @property
    def size(self):
        return self._writer.size

    def __getattr__(self, name):
        return getattr(self._writer, name)

    def write(self, data):
        return self._measure.call("write", self._writer.write, data)

    def close(self):
        return self._measure.call("writer.close", self._writer.close)

    def commit(self):
        return self._measure.call("commit", self._writer.commit)

    def cancel(self):
        return self._measure.call("cancel", self._writer.cancel)


@implementer(IObservedWriter)
class _InstrumentedObservedWriter(_InstrumentedWriter):
    """A writer that has :class:`IObservedWriter`, measured: the wrapper
    keeps the capability (an upload checks for it) and times its writes
    as ``write``."""

    def write_observed(self, data, observer):
        return self._measure.call("write", self._writer.write_observed, data, observer)

    def drain(self):
        return self._writer.drain()


def _instrumented_writer(writer, measure):
    if IObservedWriter.providedBy(writer):
        return _InstrumentedObservedWriter(writer, measure)
    return _InstrumentedWriter(writer, measure)

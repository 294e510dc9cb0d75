"""registryd.storage.instrumented: a measured driver is still a driver
(the shared suite), and it counts real failures, not missing paths."""

import os

import pytest
import pytest_twisted

from registryd.interfaces import IImmediateMetadata
from registryd.ops import metrics
from registryd.storage.drivers.filesystem import FilesystemDriver
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.errors import PathNotFound, StorageError
from registryd.storage.instrumented import InstrumentedDriver
from tests.drivers.driver_suite import DriverSuite


class TestInstrumentedInMemoryDriver(DriverSuite):
    @pytest.fixture
    def driver(self):
        return InstrumentedDriver(InMemoryDriver())


class TestInstrumentedFilesystemDriver(DriverSuite):
    @pytest.fixture
    def driver(self, tmp_path):
        return InstrumentedDriver(FilesystemDriver(str(tmp_path / "root")))


def errors(operation, error, driver="filesystem"):
    return metrics.sample(
        "registryd_storage_errors_total", driver=driver, operation=operation, error=error
    )


def calls(operation, driver="filesystem"):
    return metrics.sample(
        "registryd_storage_operation_duration_seconds_count", driver=driver, operation=operation
    )


@pytest_twisted.ensureDeferred
async def test_missing_paths_are_answers_not_errors(tmp_path):
    driver = InstrumentedDriver(FilesystemDriver(str(tmp_path)))
    before_calls, before_errors = calls("get_content"), errors("get_content", "PathNotFound")
    with pytest.raises(PathNotFound):
        await driver.get_content("/missing")
    assert calls("get_content") == before_calls + 1
    assert errors("get_content", "PathNotFound") == before_errors


@pytest_twisted.ensureDeferred
async def test_failures_are_counted_by_operation_and_error(tmp_path):
    root = tmp_path / "root"
    driver = InstrumentedDriver(FilesystemDriver(str(root)))
    await driver.put_content("/a/file", b"x")
    writer = await driver.writer("/a/upload")
    await writer.write(b"partial")
    await writer.close()
    # The root is replaced by a plain file: nothing under it can be written.
    for name in ("file", "upload"):
        os.unlink(root / "a" / name)
    os.rmdir(root / "a")
    os.rmdir(root)
    root.write_bytes(b"not a directory")
    before = errors("put_content", "StorageError")
    with pytest.raises(StorageError):
        await driver.put_content("/a/file", b"y")
    assert errors("put_content", "StorageError") == before + 1


def test_other_attributes_are_the_wrapped_drivers(tmp_path):
    inner = FilesystemDriver(str(tmp_path))
    driver = InstrumentedDriver(inner)
    assert driver.root == inner.root
    assert driver.name == "filesystem"
    assert driver.wrapped is inner


@pytest_twisted.ensureDeferred
async def test_answers_at_once_are_measured_as_the_calls_they_replace():
    """A stat or listing answered without a Deferred (IImmediateMetadata)
    is timed as its Deferred call would be; a missing path is an answer,
    not an error; and a driver that cannot answer at once is not made to
    look as if it could."""
    driver = InstrumentedDriver(InMemoryDriver())
    assert IImmediateMetadata.providedBy(driver)
    await driver.put_content("/tags/a", b"x")
    before = calls("stat", "inmemory"), calls("list", "inmemory")
    assert driver.stat_now("/tags/a").size == 1
    assert driver.list_now("/tags") == ["a"]
    assert (calls("stat", "inmemory"), calls("list", "inmemory")) == (before[0] + 1, before[1] + 1)
    missing = errors("stat", "PathNotFound", "inmemory")
    with pytest.raises(PathNotFound):
        driver.stat_now("/missing")
    assert calls("stat", "inmemory") == before[0] + 2
    assert errors("stat", "PathNotFound", "inmemory") == missing

    class DeferredOnly:
        name = "remote"

    assert not IImmediateMetadata.providedBy(InstrumentedDriver(DeferredOnly()))

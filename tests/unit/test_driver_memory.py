"""The inmemory driver: the shared driver suite, plus what is its own."""

import pytest
import pytest_twisted

from registryd.storage.drivers import InvalidParameter, create_driver
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.errors import PathNotFound
from tests.drivers.driver_suite import DriverSuite


class TestInMemoryDriver(DriverSuite):
    @pytest.fixture
    def driver(self):
        return InMemoryDriver()


def test_create_without_parameters():
    assert isinstance(create_driver("inmemory", {}), InMemoryDriver)
    assert isinstance(create_driver("inmemory", None), InMemoryDriver)  # "inmemory:" in YAML


def test_any_parameter_is_refused():
    with pytest.raises(InvalidParameter) as caught:
        create_driver("inmemory", {"rootdirectory": "/tmp"})
    assert caught.value.key == "storage.inmemory.rootdirectory"
    assert str(caught.value).startswith("storage.inmemory.rootdirectory: unknown parameter")


def test_section_must_be_a_mapping():
    with pytest.raises(InvalidParameter) as caught:
        create_driver("inmemory", ["rootdirectory"])
    assert caught.value.key == "storage.inmemory"


@pytest_twisted.ensureDeferred
async def test_directories_are_implicit():
    """A directory exists only while something is stored under it."""
    driver = InMemoryDriver()
    await driver.put_content("/a/b/c/file", b"x")
    await driver.put_content("/a/keep", b"x")
    await driver.delete("/a/b/c/file")
    with pytest.raises(PathNotFound):
        await driver.stat("/a/b")
    assert await driver.list("/a") == ["keep"]
    await driver.move("/a/keep", "/elsewhere/keep")
    assert await driver.list("/") == ["elsewhere"]


@pytest_twisted.ensureDeferred
async def test_open_reader_keeps_replaced_content():
    """Like an open file descriptor after a rename over its file."""
    driver = InMemoryDriver()
    await driver.put_content("/file", b"old content")
    reader = await driver.reader("/file", 4)
    await driver.put_content("/file", b"new content")
    assert await reader.read(100) == b"content"
    assert await driver.get_content("/file") == b"new content"

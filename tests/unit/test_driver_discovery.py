"""Finding storage drivers through Twisted plugins, by configuration name."""

import os
import subprocess
import sys
import textwrap

import pytest
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

import registryd
from registryd.interfaces import IStorageDriver, IStorageDriverFactory
from registryd.storage.drivers import UnknownDriver, create_driver, find_driver_factories

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(registryd.__file__)))


def run_python(code, pythonpath):
    """Run ``code`` in a fresh interpreter: plugin paths and imports are
    decided once per process."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_builtin_factories_found():
    factories = find_driver_factories()
    assert {"filesystem", "inmemory", "s3"} <= set(factories)
    for name, factory in factories.items():
        assert factory.name == name
        assert verifyObject(IStorageDriverFactory, factory)
        assert verifyObject(IPlugin, factory)


@pytest.mark.parametrize("name", ["filesystem", "inmemory"])
def test_create_builtin_driver(name, tmp_path):
    parameters = {"rootdirectory": str(tmp_path)} if name == "filesystem" else {}
    driver = create_driver(name, parameters)
    assert verifyObject(IStorageDriver, driver)
    assert driver.name == name


def test_unknown_driver_is_named():
    with pytest.raises(UnknownDriver) as caught:
        create_driver("nope", {})
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.name == "nope"
    assert {"filesystem", "inmemory"} <= set(error.available)
    assert str(error).startswith("storage: unknown storage driver 'nope' (available: ")
    assert "filesystem" in str(error) and "inmemory" in str(error)


def test_plugin_module_imports_nothing_heavy():
    """Plugin scans import this module (also from twistd); it must not pull
    in the reactor or the driver implementations."""
    output = run_python(
        """
        import sys
        import registryd.plugins.registryd_drivers
        heavy = [name for name in ("twisted.internet.reactor",
                                   "registryd.storage.drivers.filesystem",
                                   "registryd.storage.drivers.memory",
                                   "registryd.storage.drivers.s3", "botocore")
                 if name in sys.modules]
        print(heavy)
        """,
        [PROJECT],
    )
    assert output.strip() == "[]"


def test_third_party_plugin_directory_found(tmp_path):
    """Another distribution installs registryd/plugins/<module>.py (with no
    __init__.py) elsewhere on sys.path; its factories are found."""
    plugins = tmp_path / "registryd" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "thirdparty_driver.py").write_text(
        textwrap.dedent(
            """
        from twisted.plugin import IPlugin
        from zope.interface import implementer

        from registryd.interfaces import IStorageDriverFactory


        @implementer(IPlugin, IStorageDriverFactory)
        class Factory:
            name = "thirdparty"

            def create(self, parameters):
                from registryd.storage.drivers.memory import InMemoryDriver

                return InMemoryDriver()


        thirdparty = Factory()
        """
        )
    )
    output = run_python(
        """
        from registryd.storage.drivers import create_driver, find_driver_factories
        print(sorted(find_driver_factories()))
        print(type(create_driver("thirdparty", {})).__name__)
        """,
        [PROJECT, str(tmp_path)],
    )
    assert output.split("\n")[:2] == [
        "['filesystem', 'inmemory', 's3', 'thirdparty']",
        "InMemoryDriver",
    ]

"""The storage drivers that ship with registryd, as Twisted plugins.

Plugin scanning imports every module in this package, also from
``twistd`` start-up and for every ``getPlugins`` call, so this module
imports nothing but interfaces: each factory imports its driver module only
when a driver is actually created.
"""

from importlib import import_module

from twisted.plugin import IPlugin
from zope.interface import implementer

from registryd.interfaces import IStorageDriverFactory


@implementer(IPlugin, IStorageDriverFactory)
class LazyDriverFactory:
    """Makes a driver with ``<module>.from_parameters(parameters)``, importing
    the module on first use."""

    def __init__(self, name, module):
        self.name = name
        self.module = module

    def create(self, parameters):
        return import_module(self.module).from_parameters(parameters)

    def __repr__(self):
        return f"<LazyDriverFactory {self.name!r} from {self.module}>"


filesystem = LazyDriverFactory("filesystem", "registryd.storage.drivers.filesystem")
inmemory = LazyDriverFactory("inmemory", "registryd.storage.drivers.memory")
s3 = LazyDriverFactory("s3", "registryd.storage.drivers.s3")

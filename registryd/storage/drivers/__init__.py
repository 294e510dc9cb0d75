"""Finding storage drivers by name, and checking their configuration.

Drivers are not imported here: each one is reached through a provider of
:class:`~registryd.interfaces.IStorageDriverFactory` that Twisted's plugin
system finds in the ``registryd.plugins`` package, so a third-party backend
is installed by dropping a module into that package from its own
distribution, and registryd itself has no list of backends to keep up to
date.

``getPlugins`` only *logs* a plugin module that fails to import, so a
configured driver that is missing would otherwise fail silently; that is
why :func:`create_driver` raises :class:`UnknownDriver` naming it and the
drivers that are available.

The errors here are ``ValueError`` subclasses carrying the configuration
key they are about; the configuration layer turns them into its own error
type (this module must not import it: config imports drivers, not the other
way round).
"""

from twisted.logger import Logger

from registryd.interfaces import IStorageDriverFactory

_log = Logger()


class UnknownDriver(ValueError):
    """No installed plugin provides the storage driver named in the config."""

    key = "storage"

    def __init__(self, name, available):
        self.name = name
        self.available = tuple(sorted(available))
        choices = ", ".join(self.available) or "none"
        super().__init__(f"storage: unknown storage driver {name!r} (available: {choices})")


class InvalidParameter(ValueError):
    """A driver's configuration section has an unknown key or a bad value.

    ``key`` is the full configuration path, e.g. ``storage.filesystem.maxthreads``.
    """

    def __init__(self, key, reason):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


def check_parameters(driver_name, parameters, allowed):
    """Return a driver's configuration section as a dict, refusing unknown keys.

    A section written as ``inmemory:`` with nothing after it arrives as
    None from YAML; that means "no parameters", the same as ``{}``.
    """
    section = f"storage.{driver_name}"
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidParameter(section, "expected a mapping of parameters")
    for key in sorted(parameters, key=str):
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none: this driver takes no parameters"
            raise InvalidParameter(f"{section}.{key}", f"unknown parameter (known: {known})")
    return dict(parameters)


def find_driver_factories():
    """Every installed storage driver factory, by configuration name.

    Importing ``twisted.plugin`` and ``registryd.plugins`` is deferred to
    the call, so importing a driver module stays cheap.  Should two plugins
    claim one name, the first one found is kept and the clash is logged:
    a packaging mistake must not make start-up depend on scan order
    silently.
    """
    from twisted.plugin import getPlugins

    import registryd.plugins

    factories = {}
    for factory in getPlugins(IStorageDriverFactory, registryd.plugins):
        if factory.name in factories:
            _log.warn(
                "Storage driver {name!r} is provided twice ({first!r} and "
                "{second!r}); using the first",
                name=factory.name,
                first=factories[factory.name],
                second=factory,
            )
            continue
        factories[factory.name] = factory
    return factories


def create_driver(name, parameters=None):
    """Make the storage driver configured as ``storage.<name>``.

    :raises UnknownDriver: no installed plugin provides ``name``.
    :raises InvalidParameter: the driver refused its parameters.
    :returns: an ``IStorageDriver`` provider.
    """
    factories = find_driver_factories()
    try:
        factory = factories[name]
    except KeyError:
        raise UnknownDriver(name, factories) from None
    return factory.create({} if parameters is None else parameters)

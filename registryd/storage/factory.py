"""The storage driver a configuration names, for the daemon and the
offline tools alike, and where it keeps the data (for the start-up log).

``twistd registryd`` (``registryd.runtime.startup``: before twistd starts, so a bad
key is a one-line usage error), ``registryd.runtime.composition`` and the offline
tools (``registryd.ops.command``: gc, referrers) make their driver here.
This module imports only the configuration's error type and the driver
registry, never the web stack, so the tools and twistd's option checking
stay light.
"""

import os

from registryd.config import DEFAULT_ROOT_DIRECTORY, ConfigError
from registryd.storage.drivers import UnknownDriver, create_driver


def create_storage_driver(storage):
    """Make the driver a :class:`registryd.config.StorageConfig` names.

    Every configuration problem comes out as a :class:`ConfigError` naming the
    full key path: an unknown driver as ``storage.<name>``; a parameter as
    ``storage.<name>.<key>``.  Drivers report bad parameters either with
    a ``ValueError`` carrying the full path in ``key`` (the builtin drivers'
    ``InvalidParameter``) or with a ``ConfigError`` that may name the key
    relative to their section; both are accepted.

    :raises ConfigError: unknown driver, or a parameter it refuses.
    """
    section = f"storage.{storage.driver}"
    try:
        return create_driver(storage.driver, dict(storage.parameters))
    except UnknownDriver as error:
        available = ", ".join(getattr(error, "available", ())) or "none"
        raise ConfigError(
            section, f"unknown storage driver {storage.driver!r} (available: {available})"
        ) from None
    except ConfigError as error:
        raise error.within(section) from None
    except ValueError as error:
        key = getattr(error, "key", None)
        reason = getattr(error, "reason", None)
        if key and reason:
            raise ConfigError(key, reason).within(section) from None
        raise ConfigError(str(error)).within(section) from None


def describe_storage(storage):
    """Where a :class:`registryd.config.StorageConfig` keeps the data, for the
    start-up log: the filesystem root as an absolute path (the default is
    relative to the directory registryd was started in), the S3 bucket and
    region, or the driver's name."""
    parameters = storage.parameters
    if storage.driver == "filesystem":
        root = parameters.get("rootdirectory", DEFAULT_ROOT_DIRECTORY)
        return f"filesystem at {os.path.abspath(root)}"
    if storage.driver == "s3":
        where = f"s3 bucket {parameters.get('bucket')} in {parameters.get('region')}"
        endpoint = parameters.get("regionendpoint")
        return f"{where} at {endpoint}" if endpoint else where
    if storage.driver == "inmemory":
        return "inmemory (nothing is kept across restarts)"
    return storage.driver

"""The ``storage`` section: the one driver, deletes, maintenance, redirects.

Any key that is not one of the settings below names a storage driver; its
parameters are the driver's business (drivers may come from plugins), so
they are kept as given and checked when the driver is made
(``registryd.runtime.service``).
"""

import copy

import attr

from registryd.config.errors import ConfigError
from registryd.config.schema import (
    SectionOf,
    derived,
    extra,
    ignored,
    not_yet,
    section,
    setting,
)
from registryd.config.types import Boolean, Duration, Integer, Mapping, String

#: Where the filesystem driver keeps data when no configuration file is given.
DEFAULT_ROOT_DIRECTORY = "./registry-data"


@section()
@attr.s(frozen=True, slots=True)
class UploadPurgingConfig:
    """storage.maintenance.uploadpurging, with Distribution's defaults
    (on: uploads older than a week are removed once a day)."""

    enabled = setting("enabled", Boolean(), "Remove abandoned uploads periodically.", default=True)
    age = setting(
        "age",
        Duration(minimum=1.0),
        "Uploads started longer ago are removed.",
        default=168 * 3600.0,
    )  # seconds
    interval = setting(
        "interval", Duration(minimum=1.0), "Time between purges.", default=24 * 3600.0
    )  # seconds
    dry_run = setting("dryrun", Boolean(), "Only log what would be removed.", default=False)


@section()
@attr.s(frozen=True, slots=True)
class MaintenanceConfig:
    """storage.maintenance: upload purging and read-only mode."""

    upload_purging = setting(
        "uploadpurging",
        SectionOf(UploadPurgingConfig),
        "Purging of abandoned uploads.",
        factory=UploadPurgingConfig,
    )
    #: storage.maintenance.readonly.enabled: writes answered 405 UNSUPPORTED
    read_only = setting(
        "readonly.enabled",
        Boolean(),
        "Refuse every write (405 UNSUPPORTED); switchable from the manhole.",
        default=False,
    )


def _redirect_on(found):
    """Distribution redirects by default wherever the driver can; registryd
    does not, because a presigned URL only works for clients that can
    reach the store itself, which is often on a private network.  So
    ``enabled: true`` turns redirects on, ``disable: true`` (Distribution's
    key) keeps them off, and a file saying both is refused."""
    on = found.extras.get("enabled", False)
    off = found.extras.get("disable", False)
    if on and off:
        raise ConfigError(
            found.path_of("disable"),
            "true contradicts storage.redirect.enabled: true; keep one of them",
        )
    return on and not off


@section(
    extra(
        "enabled",
        Boolean(),
        "Blob GETs answer 307 to the driver's (presigned) URL.",
        own=True,
        default=False,
    ),
    extra("disable", Boolean(), "Distribution's switch: true keeps redirects off.", default=False),
    finish=_redirect_on,
)
@attr.s(frozen=True, slots=True, eq=False, repr=False)
class StorageRedirect:
    """storage.redirect: read into StorageConfig.redirect (a boolean)."""


def _driver(found, key, value, path):
    """A storage key that is no setting: a driver section (only one)."""
    if "driver" in found.extras:
        raise ConfigError(
            path,
            f"only one storage driver may be configured, but {found.paths['driver']} is configured too",
        )
    found.extras["driver"] = (key, copy.deepcopy(Mapping().check(value, path)))
    found.paths["driver"] = path


def _finish_storage(found):
    if "driver" not in found.extras:
        raise ConfigError(found.path, "no storage driver configured (e.g. add storage.filesystem)")
    name, parameters = found.extras["driver"]
    return found.build(driver=name, parameters=parameters)


@section(
    # Distribution's blob descriptor cache; registryd's model has its own.
    ignored("cache.blobdescriptor", String(), "Distribution's blob descriptor cache."),
    ignored("cache.layerinfo", String(), "The deprecated name of cache.blobdescriptor."),
    ignored("cache.blobdescriptorsize", Integer(), "Size of Distribution's blob descriptor cache."),
    not_yet("tag"),
    rest=_driver,
    rest_doc="one driver section",
    finish=_finish_storage,
)
@attr.s(frozen=True, slots=True)
class StorageConfig:
    """The one storage driver, its parameters, and what the model allows."""

    driver = derived(default="filesystem", written="storage")
    #: the driver section's mapping; key_as_written names it storage.<driver>
    parameters = derived(factory=lambda: {"rootdirectory": DEFAULT_ROOT_DIRECTORY})
    delete_enabled = setting(
        "delete.enabled", Boolean(), "Allow DELETE of manifests and blobs by digest.", default=False
    )
    maintenance = setting(
        "maintenance",
        SectionOf(MaintenanceConfig),
        "Upload purging and read-only mode.",
        factory=MaintenanceConfig,
    )
    #: storage.redirect: blob GETs answer 307 to the driver's URL (a
    #: presigned S3 URL).  Off unless storage.redirect.enabled is true.
    redirect = setting(
        "redirect",
        SectionOf(StorageRedirect),
        "Redirects of blob GETs to the store.",
        default=False,
    )
    #: middleware.storage ``redirect``'s baseurl: blob GETs answer 307 to
    #: it plus the blob's path in the storage layout (a web server or CDN
    #: in front of the storage serves it), or None.
    redirect_base_url = derived(default=None, written="middleware.storage")

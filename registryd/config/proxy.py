"""The ``proxy`` section: serve as a pull-through cache of another
registry (``registryd.proxy``), with Distribution's keys.  Distribution's
``exec`` credential helper is refused (registryd runs no programs)."""

import attr

from registryd.config.errors import ConfigError
from registryd.config.schema import section, setting
from registryd.config.types import BaseURL, Duration, Integer, String

#: proxy.ttl's default, as in Distribution: cached content expires after a week.
DEFAULT_PROXY_TTL = 168 * 3600.0
#: proxy.maxblobsize's default (registryd's key): the most bytes taken from
#: upstream for one blob whose size upstream did not announce, and the
#: largest announced size accepted.
DEFAULT_PROXY_MAX_BLOB_SIZE = 10 * 1024**3


def _finish_proxy(found):
    given = [key for key in ("username", "password") if key in found.values]
    if len(given) == 1:
        missing = "password" if given == ["username"] else "username"
        raise ConfigError(found.path_of(missing), "required when the other credential is given")
    return found.build()


@section(finish=_finish_proxy)
@attr.s(frozen=True, slots=True)
class ProxyConfig:
    """proxy: the registry mirrored, and how to log in to it."""

    #: absolute http(s) URL, no trailing '/'
    remote_url = setting(
        "remoteurl",
        BaseURL(),
        "The registry to mirror.",
        required="required: the URL of the registry to mirror",
    )
    username = setting("username", String(), "Upstream user (with password).", default=None)
    password = setting(
        "password", String(), "Upstream password (with username).", default=None, secret=True
    )
    #: seconds cached content is kept after it was fetched; 0: forever
    ttl = setting(
        "ttl",
        Duration(),
        "How long cached content is kept after its fetch; 0: forever.",
        default=DEFAULT_PROXY_TTL,
    )
    #: bytes: the bound on one blob fetched from upstream
    max_blob_size = setting(
        "maxblobsize",
        Integer(1, "expected a positive number of bytes, got {value}"),
        "The most bytes taken from upstream for one blob.",
        default=DEFAULT_PROXY_MAX_BLOB_SIZE,
        own=True,
    )

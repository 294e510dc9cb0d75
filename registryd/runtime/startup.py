"""Everything that can be wrong with a configuration, checked before the
registry is built.

:func:`check` parses and validates the file, creates the storage driver,
reads the TLS, authentication and manhole files and parses every listen
endpoint string, and hands back a :class:`Checked` bundle that
``registryd.runtime.composition`` builds the registry from without reading any of
it again.  A problem is one :class:`StartupError` whose message names the
file and the key: ``twistd registryd`` (``registryd.runtime.tap``) turns it into a
usage error (exit status 1 before twistd forks, writes a pid file or starts
logging), a worker process (``registryd.runtime.workers``) into its exit message.

Like ``registryd.runtime.tap``, this module is imported when twistd lists its
plugins, so it imports nothing heavy at module level; the checks import
what they need (and the reactor, which twistd has installed by then) when
they run.
"""

import ipaddress

import attr

from registryd.config import ConfigError, addr_to_endpoint, error_lines, load_config
from registryd.config.advice import config_advice


class StartupError(Exception):
    """The configuration cannot be served; the message says why, one line
    per problem, each naming the file or option and the key."""


@attr.s(frozen=True)
class Checked:
    """A validated configuration and what was made from it while checking."""

    #: the validated registryd.config.Config (--listen applied)
    config = attr.ib()
    #: the storage driver (not yet instrumented)
    driver = attr.ib()
    #: (authorizer, token issuer or None) (registryd.auth)
    auth = attr.ib()
    #: [(plain endpoint, TLS options or None)], one per config.http.listen
    listeners = attr.ib()
    #: the configuration file (None: the embedded default), re-read on SIGHUP
    config_path = attr.ib(default=None)
    #: True when --listen replaced http.addr: a reload keeps the endpoints
    listen_override = attr.ib(default=False)
    #: the --listen endpoints as Twisted endpoint strings (HOST:PORT translated)
    listen = attr.ib(default=())
    #: REGISTRY_* variables that name no configuration key (logged at start-up)
    ignored_environment = attr.ib(default=())
    #: the nodes' shared state (registryd.shared): Redis with a redis
    #: section, else in process; None: made from ``config`` when composed
    shared_state = attr.ib(default=None)
    #: warnings about risky but valid settings (registryd.config.advice),
    #: logged at start-up
    advice = attr.ib(default=())


def check(config_path=None, listen=()):
    """Check ``config_path`` (None: the embedded default configuration),
    with ``listen`` (``--listen`` endpoints) replacing ``http.addr``.

    :raises StartupError: anything that would stop the registry serving.
    """
    from registryd.config import environment, environment_summary
    from registryd.storage.factory import create_storage_driver

    prefix = f"configuration {config_path}: " if config_path else ""
    overrides = environment_summary()
    try:
        config = load_config(config_path)
    except ConfigError as error:  # every problem of the file, one line each
        raise StartupError("\n".join(f"{prefix}{line}" for line in error_lines(error))) from None
    listen = [listen_endpoint(given) for given in listen]
    if listen:
        config = config.with_listen(listen)
        where = "--listen"
    else:
        where = (
            f"configuration {config_path}: http.addr" if config_path else "default listen endpoint"
        )
    listeners = _tls_listeners(config, prefix, where)
    for endpoint, (plain, _options) in zip(config.http.listen, listeners):
        problem = endpoint_problem(plain)
        if problem:
            hint = f"; {LISTEN_SYNTAX}" if where == "--listen" else ""
            raise StartupError(f"{where} {endpoint!r}: {problem}{hint}")
    if config.manhole is not None:
        _check_manhole(config.manhole, config_path)
    try:
        driver = create_storage_driver(config.storage)
    except ConfigError as error:  # naming the variable if one set the key
        raise StartupError(
            f"{prefix}{environment.attribute(error, overrides, ConfigError)}"
        ) from None
    from registryd.shared import shared_state_for

    shared_state = shared_state_for(config)  # connects on first use, not now
    return Checked(
        config=config,
        driver=driver,
        auth=_auth(config, prefix, shared_state),
        listeners=listeners,
        config_path=config_path,
        listen_override=bool(listen),
        listen=tuple(listen),
        ignored_environment=overrides.ignored,
        shared_state=shared_state,
        advice=config_advice(config),
    )


def check_storage_root(checked):
    """The storage root can be written (a driver with ``check_root``: the
    filesystem's), unless the registry is read-only.

    :raises StartupError: naming the root and why.
    """
    from registryd.storage.errors import StorageError

    check_root = getattr(checked.driver, "check_root", None)
    if check_root is None or checked.config.storage.maintenance.read_only:
        return
    try:
        check_root()
    except StorageError as error:
        raise StartupError(str(error)) from None


#: What a --listen value may look like, for the message refusing one.
LISTEN_SYNTAX = (
    "expected a Twisted endpoint such as tcp:5000:interface=127.0.0.1 or "
    "ssl:5443:privateKey=KEY:certKey=CERT, or HOST:PORT such as 127.0.0.1:5000, "
    ":5000 or [::1]:5000"
)


def listen_endpoint(given):
    """The endpoint string for one ``--listen`` value.

    Distribution's ``http.addr`` syntax (``127.0.0.1:5000``, ``:5000``,
    ``0.0.0.0:5000``, ``[::1]:5000``, ``localhost:5000``), which someone
    coming from Distribution types first, is translated as ``http.addr``
    is; anything else is taken as a Twisted endpoint string and checked
    with the others (:func:`check`).

    :raises StartupError: a HOST:PORT that is not one.
    """
    host = given.rpartition(":")[0]
    if not (host in ("", "localhost") or host.startswith("[") or _is_ip_address(host)):
        return given
    try:
        return addr_to_endpoint(given, path="--listen")
    except ConfigError as error:
        problem = LISTEN_SYNTAX if "HOST:PORT" in error.problem else error.problem
        raise StartupError(f"--listen {given!r}: {problem}") from None


def _is_ip_address(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _tls_listeners(config, prefix, where):
    """``[(plain endpoint, TLS options or None)]`` for the listen endpoints
    (http.tls and ssl: strings; registryd.http.tls), files read and checked now."""
    from registryd.http import tls

    try:
        options = tls.http_tls_options(config.http.tls)
    except ConfigError as error:
        raise StartupError(f"{prefix}{error}") from None
    found = []
    for endpoint in config.http.listen:
        try:
            found.append(tls.listener(endpoint, config.http.tls, options))
        except ConfigError as error:
            raise StartupError(f"{where} {error}") from None
    return found


def _auth(config, prefix, shared_state):
    """The authorizer and token issuer (registryd.auth), files read now."""
    from registryd import auth

    try:
        return auth.create(config, shared_state)
    except ConfigError as error:
        raise StartupError(f"{prefix}{error}") from None


def _check_manhole(manhole, config_path):
    """The manhole's endpoint and key files, checked before twistd starts
    (the host key is generated now if it is missing)."""
    from registryd.ops.manhole import check_config

    prefix = f"configuration {config_path}: " if config_path else ""
    problem = endpoint_problem(manhole.listen)
    if problem:
        raise StartupError(f"{prefix}manhole.listen {manhole.listen!r}: {problem}")
    try:
        check_config(manhole)
    except ConfigError as error:
        raise StartupError(f"{prefix}{error}") from None


def endpoint_problem(description):
    """Why ``description`` is not a server endpoint string, or None.

    Parsing is what ``strports.service`` will do at start-up; doing it here
    turns a typo into a usage error instead of a traceback.  The reactor is
    imported only now: twistd has installed the chosen one (``-r``) while
    parsing its own options, before ours.
    """
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as error:  # parsers raise ValueError, KeyError, OSError...
        return " ".join(str(error).split()) or type(error).__name__
    return None


def from_config(config, config_path=None):
    """:class:`Checked` for an already validated Config, for embedding registryd
    (and tests): the driver, authorizer and TLS listeners made as
    :func:`check` makes them, a :class:`ConfigError` as it comes."""
    from registryd import auth
    from registryd.http import tls
    from registryd.shared import shared_state_for
    from registryd.storage.factory import create_storage_driver

    options = tls.http_tls_options(config.http.tls)
    shared_state = shared_state_for(config)
    return Checked(
        config=config,
        driver=create_storage_driver(config.storage),
        auth=auth.create(config, shared_state),
        shared_state=shared_state,
        listeners=[
            tls.listener(endpoint, config.http.tls, options) for endpoint in config.http.listen
        ],
        config_path=config_path,
    )

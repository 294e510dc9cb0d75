"""``twistd registryd``: command-line options and the service they make.

Everything that can be wrong with the configuration is checked in
``Options.postOptions``: the file is parsed and validated, the storage
driver is created and every listen endpoint string is parsed.  A problem
is reported before twistd forks, writes a pid file or starts logging, as
one line per problem on stderr (``registryd: configuration FILE: key:
problem``) and exit status 1: ``Options.parseOptions`` turns the
``UsageError`` into that instead of letting twistd print its usage block
above it, which would bury the one line that matters.

This module is imported whenever twistd lists or runs the plugin, so it
imports nothing heavy at module level (no reactor, no web stack).
"""

import sys

from twisted.python import usage

from registryd.config import ConfigError, addr_to_endpoint, error_lines, load_config


class Options(usage.Options):
    """Options for ``twistd registryd``."""

    synopsis = "[--config FILE] [--listen ENDPOINT ...]"
    longdesc = (
        "Run the registryd container image registry.  Without --config it "
        "stores data under ./registry-data and listens on tcp:5000.  "
        "REGISTRY_* environment variables override configuration keys, as "
        "in CNCF Distribution (REGISTRY_HTTP_ADDR=:5001)."
    )
    optParameters = [
        ["config", "c", None, "YAML configuration file (CNCF Distribution config.yml keys)."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self["workers"] = None
        #: The validated Config, and the driver made from it (postOptions).
        self.registry_config = None
        self.driver = None
        #: (authorizer, issuer) and [(endpoint, TLS options)] (postOptions)
        self.auth = None
        self.listeners = None
        #: REGISTRY_* variables that name no configuration key (logged)
        self.ignored_environment = ()

    def opt_listen(self, endpoint):
        """Listen on a Twisted endpoint string, e.g. tcp:5000 or
        tcp6:5000:interface=\\:\\: (repeatable; replaces http.addr);
        HOST:PORT as in http.addr (127.0.0.1:5000, :5000) works too."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def opt_version(self):
        """Display registryd's version and exit."""
        from registryd.cli import version

        print(version())
        raise SystemExit(0)

    def opt_workers(self, count):
        """Processes serving HTTP on the same sockets: a number or 'auto'
        (one per CPU); replaces the configuration's workers key."""
        from registryd.config import parse_workers

        try:
            self["workers"] = parse_workers(count, "--workers")
        except ConfigError as error:
            raise usage.UsageError(str(error))

    def parseOptions(self, options=None):
        """Parse, and on a usage error print one line per problem to stderr
        and exit with status 1 (twistd would print its whole usage block
        first; ``--help`` still shows it)."""
        try:
            self.check(options)
        except usage.UsageError as error:
            for line in str(error).splitlines():
                print(f"registryd: {line}", file=sys.stderr)
            raise SystemExit(1) from None

    def check(self, options=None):
        """Parse and validate C{options}, raising C{UsageError} (for callers
        that report it themselves: a worker process, tests)."""
        super().parseOptions(options)

    def postOptions(self):
        import os

        from registryd import environment
        from registryd.service import create_storage_driver

        source = self["config"]
        try:
            config = load_config(source)
        except ConfigError as error:
            prefix = f"configuration {source}: " if source else ""
            raise usage.UsageError("\n".join(f"{prefix}{line}" for line in error_lines(error)))
        self["listen"] = [_listen_endpoint(given) for given in self["listen"]]
        if self["listen"]:
            config = config.with_listen(self["listen"])
            where = "--listen"
        else:
            where = f"configuration {source}: http.addr" if source else "default listen endpoint"
        self.listeners = _tls_listeners(config, source, where)
        for endpoint, (plain, _options) in zip(config.http.listen, self.listeners):
            problem = _endpoint_problem(plain)
            if problem:
                hint = f"; {LISTEN_SYNTAX}" if where == "--listen" else ""
                raise usage.UsageError(f"{where} {endpoint!r}: {problem}{hint}")
        if config.manhole is not None:
            _check_manhole(config.manhole, source)
        try:
            driver = create_storage_driver(config.storage)
        except ConfigError as error:
            error = environment.attribute(error, environment.summary(os.environ), ConfigError)
            prefix = f"configuration {source}: " if source else ""
            raise usage.UsageError(f"{prefix}{error}")
        self.registry_config = config
        self.driver = driver
        self.auth = _auth(config, source)
        self.ignored_environment = environment.summary(os.environ).ignored


def _tls_listeners(config, source, where):
    """C{[(plain endpoint, TLS options or None)]} for the listen endpoints
    (http.tls and ssl: strings; registryd.tls), files read and checked now."""
    from registryd import tls

    prefix = f"configuration {source}: " if source else ""
    try:
        options = tls.http_tls_options(config.http.tls)
    except ConfigError as error:
        raise usage.UsageError(f"{prefix}{error}")
    found = []
    for endpoint in config.http.listen:
        try:
            found.append(tls.listener(endpoint, config.http.tls, options))
        except ConfigError as error:
            raise usage.UsageError(f"{where} {error}")
    return found


def _auth(config, source):
    """The authorizer and token issuer (registryd.auth), files read now."""
    from registryd import auth

    try:
        return auth.create(config)
    except ConfigError as error:
        prefix = f"configuration {source}: " if source else ""
        raise usage.UsageError(f"{prefix}{error}")


def _check_manhole(manhole, source):
    """The manhole's endpoint and key files, checked before twistd starts
    (the host key is generated now if it is missing)."""
    from registryd.admin.manhole import check_config

    problem = _endpoint_problem(manhole.listen)
    if problem:
        raise usage.UsageError(f"configuration {source}: manhole.listen {manhole.listen!r}: {problem}")
    try:
        check_config(manhole)
    except ConfigError as error:
        prefix = f"configuration {source}: " if source else ""
        raise usage.UsageError(f"{prefix}{error}")


#: What a --listen value may look like, for the message refusing one.
LISTEN_SYNTAX = (
    "expected a Twisted endpoint such as tcp:5000:interface=127.0.0.1 or "
    "ssl:5443:privateKey=KEY:certKey=CERT, or HOST:PORT such as 127.0.0.1:5000, "
    ":5000 or [::1]:5000"
)


def _listen_endpoint(given):
    """The endpoint string for one C{--listen} value.

    Distribution's ``http.addr`` syntax (``127.0.0.1:5000``, ``:5000``,
    ``0.0.0.0:5000``, ``[::1]:5000``, ``localhost:5000``), which someone
    coming from Distribution types first, is translated as ``http.addr``
    is; anything else is taken as a Twisted endpoint string and checked
    with the others (``postOptions``).
    """
    host = given.rpartition(":")[0]
    if not (host in ("", "localhost") or host.startswith("[") or _is_ip_address(host)):
        return given
    try:
        return addr_to_endpoint(given, path="--listen")
    except ConfigError as error:
        problem = LISTEN_SYNTAX if "HOST:PORT" in error.problem else error.problem
        raise usage.UsageError(f"--listen {given!r}: {problem}") from None


def _is_ip_address(text):
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _endpoint_problem(description):
    """Why C{description} is not a server endpoint string, or None.

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


def makeService(options):
    """The registry service for parsed, validated L{Options}."""
    workers = options["workers"] or getattr(options.registry_config, "workers", 1)
    metrics_directory = None
    if workers > 1:
        from registryd.workers import share_metrics

        metrics_directory = share_metrics()  # before anything imports prometheus_client

    from registryd.service import RegistryService
    from registryd.tuning import tune_allocator

    if options.ignored_environment:
        from twisted.logger import Logger

        # like Distribution: e.g. Kubernetes' REGISTRY_SERVICE_HOST for a
        # service named "registry"; logged once logging has started
        Logger().warn(
            "ignoring environment variables that name no configuration key: {names}",
            names=", ".join(options.ignored_environment),
        )

    tune_allocator()  # large upload buffers from the heap, not fresh mmaps

    from registryd.notifications.journal import JournalLocked
    from registryd.storage.errors import StorageError

    check_root = getattr(options.driver, "check_root", None)
    if check_root is not None and not options.registry_config.storage.maintenance.read_only:
        try:
            check_root()
        except StorageError as error:
            # Before twistd forks or logs: one line, and a non-zero exit.
            raise SystemExit(f"registryd: {error}") from None

    try:
        service = RegistryService(
            options.registry_config, driver=options.driver, owns_process=True,
            auth=options.auth, listeners=options.listeners,
        )
    except (JournalLocked, OSError) as error:
        # e.g. a notification journal directory that cannot be created, or
        # that another registryd uses: one line, not a traceback
        if metrics_directory is not None:
            import shutil

            shutil.rmtree(metrics_directory, ignore_errors=True)
        raise SystemExit(f"registryd: {error}") from None
    service.config_path = options["config"]  # reloaded on SIGHUP
    twistd_options = getattr(options, "parent", None)
    service.exit_on_listen_failure = bool(twistd_options and twistd_options.get("nodaemon"))
    service.listen_override = bool(options["listen"])
    if workers > 1:
        from registryd.workers import WorkerPool

        WorkerPool(
            service, workers, config_path=options["config"], listen=options["listen"],
            metrics_directory=metrics_directory,
        ).setServiceParent(service)
    return service

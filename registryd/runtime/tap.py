"""``twistd registryd``: command-line options and the service they make.

Everything that can be wrong with the configuration is checked in
``Options.postOptions`` (``registryd.runtime.startup.check``): the file is parsed
and validated, the storage driver is created and every listen endpoint
string is parsed.  A problem is reported before twistd forks, writes a pid
file or starts logging, as one line per problem on stderr (``registryd:
configuration FILE: key: problem``) and exit status 1:
``Options.parseOptions`` turns the ``UsageError`` into that instead of
letting twistd print its usage block above it, which would bury the one
line that matters.  ``makeService`` then hands what was checked to
``registryd.runtime.composition``, the one place the registry is built.

This module is imported whenever twistd lists or runs the plugin, so it
imports nothing heavy at module level (no reactor, no web stack; only
``registryd.runtime.startup`` and ``registryd.config``).
"""

import sys

from twisted.python import usage

from registryd.config import ConfigError, parse_workers
from registryd.runtime import startup


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
        #: registryd.runtime.startup.Checked: the validated configuration and what
        #: was made from it (postOptions)
        self.checked = None

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
        try:
            self["workers"] = parse_workers(count, "--workers")
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None

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
        """Parse and validate ``options``, raising ``UsageError`` (for callers
        that report it themselves: tests)."""
        super().parseOptions(options)

    def postOptions(self):
        try:
            self.checked = startup.check(self["config"], self["listen"])
        except startup.StartupError as error:
            raise usage.UsageError(str(error)) from None
        self["listen"] = list(self.checked.listen)  # HOST:PORT translated

    @property
    def registry_config(self):
        """The validated Config (after postOptions)."""
        return self.checked.config if self.checked is not None else None


def makeService(options):
    """The registry service for parsed, validated :class:`Options`.

    The web stack, the registry and the worker pool are imported here, not
    at module level: twistd imports this module to list and parse options.
    """
    workers = options["workers"] or options.checked.config.workers
    try:
        startup.check_storage_root(options.checked)
    except startup.StartupError as error:
        # Before twistd forks or logs: one line, and a non-zero exit.
        raise SystemExit(f"registryd: {error}") from None
    metrics_directory = None
    if workers > 1:
        from registryd.runtime.workers import share_metrics

        metrics_directory = share_metrics()  # before anything imports prometheus_client

    from twisted.logger import Logger

    from registryd.notifications.journal import JournalLocked
    from registryd.runtime.composition import compose
    from registryd.runtime.service import RegistryService
    from registryd.runtime.tuning import tune_allocator

    if options.checked.ignored_environment:
        # like Distribution: e.g. Kubernetes' REGISTRY_SERVICE_HOST for a
        # service named "registry"; logged once logging has started
        Logger().warn(
            "ignoring environment variables that name no configuration key: {names}",
            names=", ".join(options.checked.ignored_environment),
        )
    for advice in options.checked.advice:
        Logger().warn("warning: {advice}", advice=advice)

    tune_allocator()  # large upload buffers from the heap, not fresh mmaps
    from twisted.internet import reactor as running_reactor

    from registryd.compat import dispatch_events_directly

    dispatch_events_directly(running_reactor)  # 1.2 us less per I/O event
    try:
        components = compose(options.checked, processes=workers)
    except (JournalLocked, OSError) as error:
        # e.g. a notification journal directory that cannot be created, or
        # that another registryd uses: one line, not a traceback
        if metrics_directory is not None:
            import shutil

            shutil.rmtree(metrics_directory, ignore_errors=True)
        raise SystemExit(f"registryd: {error}") from None
    pool = None
    if workers > 1:
        from registryd.runtime.workers import WorkerPool

        pool = WorkerPool(
            components,
            workers,
            config_path=options["config"],
            listen=options["listen"],
            metrics_directory=metrics_directory,
        )
    twistd_options = getattr(options, "parent", None)
    return RegistryService(
        components,
        owns_process=True,
        workers=pool,
        exit_on_listen_failure=bool(twistd_options and twistd_options.get("nodaemon")),
    )

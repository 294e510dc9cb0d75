"""``twistd registryd``: command-line options and the service they make.

Everything that can be wrong with the configuration is checked in
``Options.postOptions`` (``registryd.startup.check``): the file is parsed
and validated, the storage driver is created and every listen endpoint
string is parsed.  twistd turns a ``UsageError`` raised there into a short
message and exit status 1 before it forks, writes a pid file or starts
logging, so a bad key is reported as one line naming it, never as a
traceback in a log file.  ``makeService`` then hands what was checked to
``registryd.composition``, the one place the registry is built.

This module is imported whenever twistd lists or runs the plugin, so it
imports nothing heavy at module level (no reactor, no web stack; only
``registryd.startup`` and ``registryd.config``).
"""

from twisted.python import usage

from registryd import startup
from registryd.config import ConfigError, parse_workers


class Options(usage.Options):
    """Options for ``twistd registryd``."""

    synopsis = "[--config FILE] [--listen ENDPOINT ...]"
    longdesc = (
        "Run the registryd container image registry.  Without --config it "
        "stores data under ./registry-data and listens on tcp:5000."
    )
    optParameters = [
        ["config", "c", None, "YAML configuration file (CNCF Distribution config.yml keys)."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self["workers"] = None
        #: registryd.startup.Checked: the validated configuration and what
        #: was made from it (postOptions)
        self.checked = None

    def opt_listen(self, endpoint):
        """Listen on a Twisted endpoint string, e.g. tcp:5000 or
        tcp6:5000:interface=\\:\\: (repeatable; replaces http.addr)."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def opt_workers(self, count):
        """Processes serving HTTP on the same sockets: a number or 'auto'
        (one per CPU); replaces the configuration's workers key."""
        try:
            self["workers"] = parse_workers(count, "--workers")
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None

    def postOptions(self):
        try:
            self.checked = startup.check(self["config"], self["listen"])
        except startup.StartupError as error:
            raise usage.UsageError(str(error)) from None

    @property
    def registry_config(self):
        """The validated Config (after postOptions)."""
        return self.checked.config if self.checked is not None else None


def makeService(options):
    """The registry service for parsed, validated L{Options}.

    The web stack, the registry and the worker pool are imported here, not
    at module level: twistd imports this module to list and parse options.
    """
    workers = options["workers"] or options.checked.config.workers
    metrics_directory = None
    if workers > 1:
        from registryd.workers import share_metrics

        metrics_directory = share_metrics()  # before anything imports prometheus_client

    from registryd.composition import compose
    from registryd.notifications.journal import JournalLocked
    from registryd.service import RegistryService
    from registryd.tuning import tune_allocator

    tune_allocator()  # large upload buffers from the heap, not fresh mmaps
    try:
        components = compose(options.checked)
    except (JournalLocked, OSError) as error:
        # e.g. a notification journal directory that cannot be created, or
        # that another registryd uses: one line, not a traceback
        if metrics_directory is not None:
            import shutil

            shutil.rmtree(metrics_directory, ignore_errors=True)
        raise SystemExit(f"registryd: {error}") from None
    pool = None
    if workers > 1:
        from registryd.workers import WorkerPool

        pool = WorkerPool(
            components, workers, config_path=options["config"], listen=options["listen"],
            metrics_directory=metrics_directory,
        )
    return RegistryService(components, owns_process=True, workers=pool)

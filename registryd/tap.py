"""``twistd registryd``: command-line options and the service they make.

Everything that can be wrong with the configuration is checked in
``Options.postOptions``: the file is parsed and validated, the storage
driver is created and every listen endpoint string is parsed.  twistd turns
a ``UsageError`` raised there into a short message and exit status 1 before
it forks, writes a pid file or starts logging, so a bad key is reported as
one line naming it, never as a traceback in a log file.

This module is imported whenever twistd lists or runs the plugin, so it
imports nothing heavy at module level (no reactor, no web stack).
"""

from twisted.python import usage

from registryd.config import ConfigError, load_config


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
        #: The validated Config, and the driver made from it (postOptions).
        self.registry_config = None
        self.driver = None

    def opt_listen(self, endpoint):
        """Listen on a Twisted endpoint string, e.g. tcp:5000 or
        tcp6:5000:interface=\\:\\: (repeatable; replaces http.addr)."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self):
        from registryd.service import create_storage_driver

        source = self["config"]
        try:
            config = load_config(source)
        except ConfigError as error:
            raise usage.UsageError(f"configuration {source}: {error}")
        if self["listen"]:
            config = config.with_listen(self["listen"])
            where = "--listen"
        else:
            where = f"configuration {source}: http.addr" if source else "default listen endpoint"
        for endpoint in config.http.listen:
            problem = _endpoint_problem(endpoint)
            if problem:
                raise usage.UsageError(f"{where} {endpoint!r}: {problem}")
        try:
            driver = create_storage_driver(config.storage)
        except ConfigError as error:
            prefix = f"configuration {source}: " if source else ""
            raise usage.UsageError(f"{prefix}{error}")
        self.registry_config = config
        self.driver = driver


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
    from registryd.service import RegistryService

    return RegistryService(options.registry_config, driver=options.driver, owns_process=True)

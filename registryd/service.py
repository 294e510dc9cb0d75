"""The running registry: one service tree built from a validated Config.

``RegistryService`` owns the storage driver, the registry model, the HTTP
application and one listening service per endpoint.  It is a plain
``MultiService`` so twistd (or a test) starts and stops it like any other;
timers, a debug listener and a manhole will be further children.
"""

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    Logger,
    LogLevel,
    PredicateResult,
    globalLogPublisher,
)
from zope.interface import implementer

from registryd.config import ConfigError

log = Logger()


def create_storage_driver(storage):
    """Make the driver a L{registryd.config.StorageConfig} names.

    Every configuration problem comes out as a L{ConfigError} naming the
    full key path: an unknown driver as ``storage.<name>``; a parameter as
    ``storage.<name>.<key>``.  Drivers report bad parameters either with
    a C{ValueError} carrying the full path in C{key} (the builtin drivers'
    C{InvalidParameter}) or with a C{ConfigError} that may name the key
    relative to their section; both are accepted.

    @raise ConfigError: unknown driver, or a parameter it refuses.
    """
    from registryd.storage.drivers import UnknownDriver, create_driver

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


@implementer(ILogFilterPredicate)
class _AtLeast:
    """Passes events of C{level} or above, and any event without a level.

    (``LogLevelFilterPredicate`` also drops events lacking a namespace, which
    would hide raw events some libraries emit.)
    """

    def __init__(self, level):
        self.level = level

    def __call__(self, event):
        level = event.get("log_level")
        if level is not None and level < self.level:
            return PredicateResult.no
        return PredicateResult.maybe


class LogLevelFilter:
    """Applies ``log.level`` to every observer of the global log publisher.

    twistd chooses the observers (stdout, ``--logfile``, ``--syslog``,
    ``--logger``) and adds them before any service starts, without handing
    them to the application.  Wrapping each of them in place while the
    registry runs is the one way to honour the level whatever twistd chose.
    That needs ``LogPublisher._observers``, which has been stable since
    twisted.logger appeared; if it ever goes away the level is not applied
    and a warning says so, rather than start-up failing.
    """

    def __init__(self, level, publisher=globalLogPublisher):
        self.level = level
        self._publisher = publisher
        self._wrapped = None  # {id(wrapper): original} while installed

    def install(self):
        if self._wrapped is not None or self.level == LogLevel.debug:
            return  # already installed; or nothing to filter
        observers = getattr(self._publisher, "_observers", None)
        if not isinstance(observers, list):
            log.warn("log.level {level} cannot be applied to this Twisted", level=self.level.name)
            return
        predicate = self._predicate = _AtLeast(self.level)
        self._wrapped = {}
        for index, observer in enumerate(observers):
            wrapper = FilteringLogObserver(observer, [predicate])
            self._wrapped[id(wrapper)] = (wrapper, observer)
            observers[index] = wrapper

    def set_level(self, level):
        """Change the level while installed (SIGHUP)."""
        self.level = level
        if self._wrapped is not None:
            self._predicate.level = level
        else:
            self.install()

    def uninstall(self):
        if self._wrapped is None:
            return
        observers = self._publisher._observers
        for index, observer in enumerate(observers):
            if id(observer) in self._wrapped:
                observers[index] = self._wrapped[id(observer)][1]
        self._wrapped = None


class RegistryService(MultiService):
    """Storage, model, HTTP application and listeners for one Config."""

    def __init__(self, config, driver=None, reactor=None, owns_process=False, auth=None,
                 listeners=None):
        """
        @param config: a validated L{registryd.config.Config}.
        @param driver: the storage driver, when the caller already made it
            (C{registryd.tap} does, to report configuration errors before
            twistd starts); by default it is made from C{config.storage}.
        @param reactor: for the listening endpoints; the global one by default.
        @param owns_process: True under twistd: C{log.level} then stays in
            force after the service stops, for the process's last messages.
            Otherwise (tests, embedding) the global log observers are
            restored when the service stops.
        @param auth: C{(authorizer, token issuer or None)} and
        @param listeners: C{[(plain endpoint, TLS options or None)]}, when
            the caller already made them (C{registryd.tap}); by default
            they are made from C{config} (C{registryd.auth}, C{registryd.tls}).
        """
        super().__init__()
        # Imported here, not at module level, so that tap can use
        # create_storage_driver to check a configuration without loading
        # the web stack.
        from registryd.app import RegistryApp
        from registryd.storage.registry import Registry
        from registryd.web import StreamingSite

        self.config = config
        self._reactor = reactor
        from registryd.storage.instrumented import InstrumentedDriver

        self.driver = InstrumentedDriver(
            driver if driver is not None else create_storage_driver(config.storage)
        )
        self.registry = Registry(
            self.driver,
            delete_enabled=config.storage.delete_enabled,
            accept_sparse_manifests=config.validation.accept_sparse_manifests,
            accept_sparse_images=config.validation.accept_sparse_images,
            manifest_url_policy=config.validation.url_policy,
            read_only=config.storage.maintenance.read_only,
            redirect=config.storage.redirect,
            redirect_base_url=config.storage.redirect_base_url,
            immutable_tags=config.lifecycle.immutable,
            quotas=config.lifecycle.quotas,
        )
        #: what the HTTP API serves: the registry, or the pull-through
        #: cache around it (registryd.proxy), chosen here once
        self.proxy = None
        if config.proxy is not None:
            from registryd import proxy

            self.proxy = proxy.create(self.registry, config.proxy, reactor=reactor)
        from registryd.lifecycle.pulls import PullRecorder

        from twisted.internet import reactor as global_reactor

        #: manifest pulls counted in memory, written in batches (registryd.lifecycle.pulls)
        self.pulls = PullRecorder(self.registry, reactor if reactor is not None else global_reactor)
        self.app = RegistryApp(
            self.proxy or self.registry, host=config.http.host, headers=config.http.headers,
            relative_urls=config.http.relative_urls, prefix=config.http.prefix,
            listing=config.listing, pulls=self.pulls,
        )
        self.site = StreamingSite(self.app.resource())
        if config.http.prefix:
            self.site.prefix = config.http.prefix.encode("utf-8")
        from registryd import tls

        if auth is None:
            from registryd.auth import create as create_auth

            auth = create_auth(config)
        self.app.authorizer, self.app.token_issuer = auth
        if listeners is None:
            options = tls.http_tls_options(config.http.tls)
            listeners = [tls.listener(e, config.http.tls, options) for e in config.http.listen]
        self.listeners = []
        for endpoint, (plain, options) in zip(config.http.listen, listeners):
            # strports.service raises from privilegedStartService when the
            # port cannot be bound, so start-up fails instead of running
            # deaf (a plain StreamServerEndpointService only logs it).
            listener = strports.service(plain, tls.wrap(self.site, options), reactor=reactor)
            listener.setName(f"http {endpoint}")
            listener.setServiceParent(self)
            self.listeners.append(listener)
        self._add_admin_services(reactor)
        self._log_filter = LogLevelFilter(LogLevel.levelWithName(config.log.level))
        self._owns_process = owns_process
        # Health checks, debug listener, notifications, access log, SIGHUP.
        from registryd.operations import Operations

        #: the configuration file, for reloading (set by registryd.tap)
        self.config_path = None
        self.operations = Operations(self, reactor)

    async def _drain(self, timeout):
        """http.draintimeout: stop accepting, then give the requests in
        progress up to C{timeout} seconds (worker processes drain theirs
        meanwhile)."""
        from twisted.internet import reactor

        log.info("stopping: letting requests finish for up to {timeout:g}s", timeout=timeout)
        workers = self.getServiceNamed("workers") if "workers" in self.namedServices else None
        stopping_workers = defer.maybeDeferred(workers.stopService) if workers else None
        for listener in self.listeners:
            port = await listener._waitingForPort  # bound: started before us
            await defer.maybeDeferred(port.stopListening)
        await self.site.drain(timeout, self._reactor or reactor)
        if stopping_workers is not None:
            await stopping_workers

    def _add_admin_services(self, reactor):
        """Upload purging and scheduled GC timers, and the SSH manhole."""
        from registryd.admin.maintenance import Maintenance

        from registryd.admin.maintenance import PeriodicService
        from registryd.lifecycle.pulls import PullFlushing
        from registryd.lifecycle.quotas import MAX_AGE as QUOTA_MAX_AGE
        from registryd.lifecycle.retention_runner import Retention

        self.maintenance = Maintenance(self.registry, self.config)
        for timer in self.maintenance.services(clock=reactor):
            timer.setServiceParent(self)
        PullFlushing(self.pulls, clock=reactor).setServiceParent(self)
        #: lifecycle.retention's runs (registryd.lifecycle.retention_runner)
        self.retention = Retention(self.registry, self.config.lifecycle.retention, self.pulls)
        if self.retention.config.interval and self.retention.config.rules:

            async def scheduled_retention():
                if not self.retention.running:
                    await self.retention.run()

            PeriodicService(
                "retention", self.retention.config.interval, scheduled_retention, clock=reactor,
            ).setServiceParent(self)
        if self.registry.quotas:
            # /metrics shows quota usage also when nobody pushes or asks
            PeriodicService(
                "quota usage", QUOTA_MAX_AGE, self.registry.quotas.report, first_delay=0, clock=reactor,
            ).setServiceParent(self)
        if self.proxy is not None:  # a pull-through cache (registryd.proxy)
            from registryd import proxy

            for child in proxy.services(self.proxy, self.maintenance, clock=reactor):
                child.setServiceParent(self)
        self.manhole = None
        if self.config.manhole is not None:
            from registryd.admin.manhole import ManholeService, make_namespace

            self.manhole = ManholeService(
                self.config.manhole,
                lambda: make_namespace(self.registry, self.maintenance, self.config,
                                       retention=self.retention),
                reactor=reactor,
            )
            self.manhole.setServiceParent(self)

    def privilegedStartService(self):
        # twistd calls this (then startService) after it set up logging.
        self.operations.install_logging()
        self._log_filter.install()
        super().privilegedStartService()

    def startService(self):
        self.operations.install_logging()
        self._log_filter.install()
        if self._owns_process:
            self.operations.install_sighup()
        super().startService()

    def stopService(self):
        self.operations.uninstall_sighup()
        if self.config.http.drain_timeout > 0 and self.running:
            result = defer.ensureDeferred(self._drain(self.config.http.drain_timeout))
            result.addBoth(lambda _: MultiService.stopService(self))
        else:
            result = super().stopService()
        if self._owns_process:
            return result

        def restore(passthrough):
            self._log_filter.uninstall()
            self.operations.uninstall_logging()
            return passthrough

        return result.addBoth(restore)

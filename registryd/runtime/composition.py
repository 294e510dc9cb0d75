"""The composition root: every collaborator of a running registry, built
once, in dependency order, and handed to the constructors that need it.

:func:`compose` takes what ``registryd.runtime.startup`` checked (a validated
Config, the storage driver, authorizer and token issuer, the listen
endpoints with their TLS options) and makes the instrumented driver, the
registry model, health checks, the event notifier, the pull-through cache,
the URL builder, the web interface, the HTTP application, the site, the listeners,
maintenance timers, the manhole and :class:`~registryd.ops.operations.Operations`.
Nothing is wired by setting attributes afterwards; ``RegistryService``
only makes the :class:`Components` its children.

The same function builds a worker process's registry
(``registryd.runtime.workers``): it serves inherited sockets (``listen``) and
leaves out the timers that run in the main process only
(``singletons=False``).
"""

import attr
from twisted.logger import LogLevel

from registryd.http import tls
from registryd.http.accesslog import AccessLog
from registryd.http.app import RegistryApp
from registryd.http.listeners import ListenerService
from registryd.http.urls import URLBuilder
from registryd.http.web import StreamingSite
from registryd.lifecycle.pulls import PullFlushing, PullRecorder
from registryd.lifecycle.quotas import MAX_AGE as QUOTA_MAX_AGE
from registryd.lifecycle.retention_runner import Retention
from registryd.notifications.events import Notifier
from registryd.ops.debug import debug_site
from registryd.ops.health import Check, HealthChecks
from registryd.ops.maintenance import Maintenance, PeriodicService
from registryd.ops.operations import Operations, source_address
from registryd.runtime.logs import LogFormat, LogLevelFilter
from registryd.storage.instrumented import InstrumentedDriver
from registryd.storage.registry import Registry
from registryd.storage.shared_cache import consulted_for, shared_cache_for

#: Timers that must run in one process only (left out with singletons=False).
SINGLETON_TIMERS = frozenset(
    {
        "upload purging",
        "garbage collection",
        "proxy cache expiry",
        "retention",
        "quota usage",
        "pull times to storage",
    }
)


@attr.s(frozen=True)
class Components:
    """A running registry's collaborators, and its child services in the
    order they start (the reverse of the order they stop)."""

    driver = attr.ib()
    registry = attr.ib()
    #: the pull-through cache around the registry (registryd.proxy), or None
    proxy = attr.ib()
    app = attr.ib()
    site = attr.ib()
    #: the HTTP listening services, one per config.http.listen endpoint
    listeners = attr.ib()
    maintenance = attr.ib()
    #: registryd.ops.manhole.ManholeService, or None
    manhole = attr.ib()
    operations = attr.ib()
    #: every child service of RegistryService, in start order
    services = attr.ib()
    #: what this node shares with the others (registryd.shared; in process when alone)
    shared_state = attr.ib(default=None)


def listen_on(index, endpoint, plain, factory, secure, reactor):
    """The service listening on one endpoint (the main process's way):
    it raises :class:`registryd.http.listeners.ListenFailed` from
    ``privilegedStartService`` when the port cannot be bound, so start-up
    fails instead of running deaf."""
    listener = ListenerService(
        plain,
        factory,
        reactor=reactor,
        scheme="https" if secure else "http",
        shown=endpoint,
    )
    listener.setName(f"http {endpoint}")
    return listener


def compose(
    checked, reactor=None, listen=listen_on, singletons=True, config_filter=None, processes=1
):
    """Build a registry from a :class:`registryd.runtime.startup.Checked`.

    :param reactor: for listeners, timers and clients; the global one by
        default.
    :param listen: ``(index, endpoint, plain endpoint, factory, secure,
        reactor) -> IService`` for each HTTP listener (``secure``: behind
        TLS); a worker adopts inherited sockets instead.
    :param singletons: False in a worker process: no upload purging,
        scheduled GC or proxy cache expiry (the main process runs them).
    :param config_filter: maps a reloaded configuration to what this
        process applies (a worker's: :func:`registryd.runtime.workers.worker_config`).
    :param processes: how many processes serve these sockets and storage
        (``--workers``; a worker says 2, more than one being what counts):
        with several, uploads store their running hash for each other.
    :raises OSError: a notification journal that cannot be opened, or
        :class:`registryd.notifications.journal.JournalLocked`.
    """
    config = checked.config
    authorizer, token_issuer = checked.auth
    shared_state = checked.shared_state
    if shared_state is None:
        from registryd.shared import shared_state_for

        shared_state = shared_state_for(config, reactor)
    driver = InstrumentedDriver(checked.driver)
    registry = Registry(
        driver,
        delete_enabled=config.storage.delete_enabled,
        accept_sparse_manifests=config.validation.accept_sparse_manifests,
        accept_sparse_images=config.validation.accept_sparse_images,
        manifest_url_policy=config.validation.url_policy,
        read_only=config.storage.maintenance.read_only,
        redirect=config.storage.redirect,
        redirect_base_url=config.storage.redirect_base_url,
        shared_state=shared_state,
        shared_clock=reactor,
        shared_cache=shared_cache_for(
            shared_state,
            reactor or _global_reactor(),
            consulted=_metadata_cache_consulted(config, checked.driver),
        ),
        immutable_tags=config.lifecycle.immutable,
        quotas=config.lifecycle.quotas,
        store_hash_states=processes > 1,
    )
    #: manifest pulls counted in memory, written in batches by every process
    pulls = PullRecorder(registry, reactor if reactor is not None else _global_reactor())
    retention = Retention(registry, config.lifecycle.retention, pulls)
    health = HealthChecks.from_config(config.health, driver, reactor)
    if shared_state.shared:
        # on demand: /health names Redis when it is away, but the API
        # keeps serving (degraded) rather than answering 503
        health.on_demand.append(Check("redis", shared_state.ping, reactor=reactor))
    urls = URLBuilder(
        config.http.host, relative=config.http.relative_urls, prefix=config.http.prefix
    )
    events = Notifier(
        urls,
        include_references=config.notifications.include_references,
        source_addr=source_address(config.http.listen),
    )
    proxy = _proxy(registry, config, reactor)
    app = RegistryApp(
        proxy or registry,  # what the HTTP API serves
        urls=urls,
        headers=config.http.headers,
        events=events,
        health=health,
        authorizer=authorizer,
        token_issuer=token_issuer,
        listing=config.listing,
        ui=_ui(config, proxy or registry, checked.auth, urls, events, pulls),
        pulls=pulls,
    )
    access_log = AccessLog(enabled=config.log.accesslog)
    site = StreamingSite(
        app.resource(),
        access_log=access_log,
        prefix=config.http.prefix.encode("utf-8") if config.http.prefix else None,
    )
    # certificates replaceable on reload (registryd.ops.operations)
    secured = [
        (endpoint, plain, tls.ReloadableTLS(options) if options is not None else None)
        for endpoint, (plain, options) in zip(config.http.listen, checked.listeners)
    ]
    listeners = [
        listen(index, endpoint, plain, tls.wrap(site, server_tls), server_tls is not None, reactor)
        for index, (endpoint, plain, server_tls) in enumerate(secured)
    ]
    from registryd.shared.jobs import JobLeases

    jobs = JobLeases(shared_state, reactor) if shared_state.shared else None
    maintenance = Maintenance(registry, config, jobs=jobs)
    timers = list(maintenance.services(clock=reactor))
    if proxy is not None:
        timers += _proxy_services(proxy, maintenance, reactor)
    timers += _lifecycle_services(registry, retention, maintenance, reactor)
    if not singletons:
        timers = [timer for timer in timers if timer.name not in SINGLETON_TIMERS]
    operations = Operations(
        config,
        app,
        health=health,
        events=events,
        access_log=access_log,
        debug_listeners=_debug_listeners(config, health, reactor),
        log_format=LogFormat(config.log.formatter, config.log.fields),
        log_filter=LogLevelFilter(LogLevel.levelWithName(config.log.level)),
        config_path=checked.config_path,
        listen_override=checked.listen_override,
        config_filter=config_filter,
        reactor=reactor,
        tls_listeners=[(endpoint, server_tls) for endpoint, _, server_tls in secured if server_tls],
    )
    manhole = _manhole(config, registry, maintenance, operations, retention, events, reactor)
    return Components(
        driver=driver,
        registry=registry,
        proxy=proxy,
        app=app,
        site=site,
        listeners=listeners,
        maintenance=maintenance,
        manhole=manhole,
        operations=operations,
        # the pull flusher early, so it stops late: after the listeners
        # and the drain, with every pull counted
        services=[
            # first, so it stops last: every write until then forgets
            *([registry.shared_cache] if registry.shared_cache is not None else []),
            PullFlushing(pulls, clock=reactor),
            *listeners,
            *timers,
            *([manhole] if manhole else []),
            operations,
        ],
        shared_state=shared_state,
    )


def _ui(config, registry, auth, urls, events, pulls):
    """The web interface (registryd.ui), or None with ui.enabled false.

    It signs users in through the API's own checker and access policy
    (``auth``: authorizer and token issuer).  Sessions are signed with
    ui.sessionkey, or with a key the main process makes at start-up and
    hands to its worker processes in their environment (they compose
    after it), so a session made by one process is good in all."""
    if not config.ui.enabled:
        return None
    from registryd.ui.access import UIAccess
    from registryd.ui.app import UIApp
    from registryd.ui.session import configured_key, process_key

    key = configured_key(config.ui.session_key) if config.ui.session_key else process_key()
    return UIApp(registry, UIAccess.of(*auth), urls, events, key, pulls)


def _debug_listeners(config, health, reactor):
    """The debug listener's services (http.debug): /health and /metrics."""
    if config.http.debug is None:
        return []
    site = debug_site(health, config.http.debug)
    found = []
    for endpoint in config.http.debug.listen:
        listener = ListenerService(
            endpoint, site, reactor=reactor, what="debug listener (/health, /metrics) on"
        )
        listener.setName(f"debug {endpoint}")
        found.append(listener)
    return found


def _proxy(registry, config, reactor):
    """The pull-through cache (proxy.remoteurl), or None.  registryd.proxy
    is imported only when one is configured (its HTTP client and the
    upstream's token handling are not needed otherwise)."""
    if config.proxy is None:
        return None
    from registryd import proxy

    return proxy.create(registry, config.proxy, reactor=reactor)


def _proxy_services(cache, maintenance, reactor):
    from registryd import proxy

    return list(proxy.services(cache, maintenance, clock=reactor))


def _metadata_cache_consulted(config, driver):
    """Whether this node's reads consult the nodes' metadata cache: decided
    here, once, from ``redis.metadatacache`` and what the storage driver
    declares (:func:`registryd.storage.shared_cache.consulted_for`); the
    workers and ``registryd gc`` decide alike from the same file.  Without
    a ``redis`` section there is no shared cache to consult."""
    if config.redis is None:
        return False
    return consulted_for(config.redis.metadata_cache, driver)


def _global_reactor():
    from twisted.internet import reactor

    return reactor


def _lifecycle_services(registry, retention, maintenance, reactor):
    """lifecycle's timers: retention every lifecycle.retention.interval,
    the nodes' shared pull times written to storage every minute (one node
    at a time), and quota usage counted every minute so /metrics shows it
    also when nobody pushes."""
    found = []
    if retention.config.interval and retention.config.rules:

        async def scheduled_retention():
            if not retention.running:
                await retention.run()

        found.append(
            PeriodicService(
                "retention",
                retention.config.interval,
                # one node at a time when the nodes share state (registryd.shared.jobs)
                maintenance.scheduled("retention", retention.config.interval, scheduled_retention),
                clock=reactor,
            )
        )
    if registry.shared_pulls is not None:
        from registryd.lifecycle.shared_pulls import PERSIST_INTERVAL

        async def persist_pulls():
            await registry.shared_pulls.persist(registry)

        found.append(
            PeriodicService(
                "pull times to storage",
                PERSIST_INTERVAL,
                # one node at a time (registryd.shared.jobs)
                maintenance.scheduled("pull times to storage", PERSIST_INTERVAL, persist_pulls),
                clock=reactor,
            )
        )
    if registry.quotas:
        found.append(
            PeriodicService(
                "quota usage",
                QUOTA_MAX_AGE,
                registry.quotas.report,
                first_delay=0,
                clock=reactor,
            )
        )
    return found


def _manhole(config, registry, maintenance, operations, retention, events, reactor):
    """The SSH manhole (manhole:), or None.  registryd.ops.manhole (and
    with it twisted.conch) is imported only when one is configured."""
    if config.manhole is None:
        return None
    from registryd.ops.manhole import ManholeService, make_namespace

    return ManholeService(
        config.manhole,
        # each session sees the configuration in force (reloads included)
        lambda: make_namespace(
            registry, maintenance, operations.config, reactor, retention=retention, events=events
        ),
        reactor=reactor,
    )

"""What an operator watches and steers: health, metrics, notifications,
the access log and its format, and reloading on SIGHUP.

``registryd.runtime.composition`` makes one :class:`Operations` from the
collaborators it built (app, site, health checks, event notifier, access
log, log format and level filter, debug listeners); it is a child service
of ``RegistryService`` whose own children are the periodic health checks,
the debug listener and notification delivery.

Reloading (SIGHUP under twistd, or :meth:`Operations.reload`) re-reads the
configuration file and applies, without dropping a connection:

- ``log.level`` and ``log.accesslog.disabled``;
- ``http.headers``;
- ``notifications`` endpoints: added, removed, disabled or changed
  (url, headers, timeout, threshold, backoff, ignore rules), keeping their
  queued events; ``events.includereferences``;
- TLS certificates, keys and client CAs (``http.tls`` and ``ssl:``
  endpoints' files, read again even when the configuration names the same
  files: renewed certificates from cert-manager or certbot).  A listener
  whose new files do not work keeps its old certificate, and says so.

Everything else (storage, listen addresses, ``http.host``, ``http.debug``,
``health``, ``validation``, ``log.formatter``/``fields``, the journal
directory...) needs a restart; a reload that changes it says so in the
log and leaves it as it was.  A file that does not parse is reported and
nothing changes.
"""

import signal
import socket

import attr
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger, LogLevel

from registryd.config import ConfigError, key_as_written, load_config
from registryd.notifications.service import NotificationService

log = Logger()


def source_address(listen):
    """``<hostname>:<port>`` for events' ``source.addr`` (Distribution
    reports the host and port it serves on), from the first endpoint."""
    hostname = socket.gethostname()
    for endpoint in listen:
        parts = endpoint.split(":")
        if len(parts) > 1 and parts[0] in ("tcp", "tcp6", "ssl") and parts[1].isdigit():
            return f"{hostname}:{parts[1]}"
    return hostname


class Operations(MultiService):
    """Health checks, debug listener, notifications, access log, reload."""

    # the stub types Service.name as None, the unnamed default
    name = "operations"  # type: ignore[assignment]

    def __init__(
        self,
        config,
        app,
        health,
        events,
        access_log,
        log_format,
        log_filter,
        debug_listeners=(),
        config_path=None,
        listen_override=False,
        config_filter=None,
        tls_listeners=(),
        reactor=None,
    ):
        """
        :param config: the validated :class:`registryd.config.Config` in force
            (``config`` follows reloads).
        :param app: the :class:`registryd.http.app.RegistryApp` (its headers reload).
        :param health: :class:`registryd.ops.health.HealthChecks`; the periodic ones
            run while this service runs.
        :param events: the app's :class:`registryd.notifications.events.Notifier`;
            notification endpoints deliver what it builds.
        :param access_log: the site's :class:`registryd.http.accesslog.AccessLog`.
        :param log_format: :class:`registryd.runtime.logs.LogFormat` (log.formatter).
        :param log_filter: :class:`registryd.runtime.logs.LogLevelFilter` (log.level).
        :param debug_listeners: the debug listener's services (http.debug).
        :param config_path: the configuration file re-read on reload (None:
            the embedded default; nothing to reload).
        :param listen_override: True when --listen replaced http.addr: a
            reload keeps the listen endpoints in force.
        :param config_filter: maps a freshly loaded configuration to what
            this process applies (a worker process:
            :func:`registryd.runtime.workers.worker_config`), or None.
        :param tls_listeners: ``[(listen endpoint, registryd.http.tls.ReloadableTLS)]``
            of the HTTP listeners behind TLS: their certificates are read
            again on reload.
        """
        super().__init__()
        self.config = config
        self.app = app
        self.health = health
        self.events = events
        self.access_log = access_log
        self.log_format = log_format
        self.log_filter = log_filter
        self.config_path = config_path
        self.listen_override = listen_override
        self.config_filter = config_filter
        self.tls_listeners = list(tls_listeners)
        self._reactor = reactor
        if health.periodic:
            timers = health.service()
            timers.setName("health checks")
            timers.setServiceParent(self)
        self.debug_listeners = list(debug_listeners)
        for listener in self.debug_listeners:
            listener.setServiceParent(self)
        self.notifications = None
        if config.notifications.enabled_endpoints:
            self._start_notifications(config.notifications)
        self._previous_sighup = None
        self._reloaded = []

    def on_reload(self, callback):
        """Call ``callback`` with each successfully loaded configuration
        (unfiltered) after it was applied (a worker re-reads the main
        process's notification endpoints)."""
        self._reloaded.append(callback)

    def _start_notifications(self, notifications):
        self.notifications = NotificationService(notifications, self.events, reactor=self._reactor)
        self.notifications.setServiceParent(self)

    # logging

    def install_logging(self):
        """Switch the log format, then apply the level (the filter wraps
        the observers the format switches)."""
        self.log_format.install()
        self.log_filter.install()

    def uninstall_logging(self):
        self.log_filter.uninstall()
        self.log_format.uninstall()

    # SIGHUP

    def install_sighup(self):
        """Reload on SIGHUP (twistd only: a library must not take signals)."""
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor

        def on_sighup(signum, frame):
            reactor.callFromThread(self.reload)

        self._previous_sighup = signal.signal(signal.SIGHUP, on_sighup)

    def uninstall_sighup(self):
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None

    # reloading

    def reload(self, path=None):
        """Re-read the configuration file and apply what may change while
        running.  Returns a Deferred firing with the keys whose changes
        need a restart (also logged), or None if the file was not usable."""
        return defer.ensureDeferred(self._reload(path))

    async def _reload(self, path):
        path = path or self.config_path
        if not path:
            log.warn("reload: registryd runs without a configuration file; nothing to reload")
            return None
        try:
            new = load_config(path)
        except ConfigError as error:
            log.error(
                "reload: configuration {path} not applied: {error}", path=path, error=str(error)
            )
            return None
        loaded = new
        if self.config_filter is not None:
            new = self.config_filter(new)
        old = self.config
        if old.http.listen != new.http.listen and self.listen_override:
            new = new.with_listen(old.http.listen)
        applied = attr.evolve(
            old,
            log=attr.evolve(old.log, level=new.log.level, accesslog=new.log.accesslog),
            http=attr.evolve(old.http, headers=new.http.headers),
        )
        if old.log.level != new.log.level:
            self.log_filter.set_level(LogLevel.levelWithName(new.log.level))
        self.access_log.enabled = new.log.accesslog
        self.app.set_headers(new.http.headers)
        if await self._reload_tls(new.http.tls):
            applied = attr.evolve(applied, http=attr.evolve(applied.http, tls=new.http.tls))
        if new.notifications != old.notifications:
            if self.notifications is None:
                if new.notifications.enabled_endpoints:
                    try:
                        self._start_notifications(new.notifications)
                    except Exception as error:
                        log.error("reload: notifications not started: {error}", error=str(error))
                    else:
                        applied = attr.evolve(applied, notifications=new.notifications)
            else:
                await self.notifications.reconfigure(new.notifications)
                if new.notifications.enabled_endpoints:
                    applied = attr.evolve(applied, notifications=self.notifications.config)
                else:  # no endpoint left: where journals would go does not matter
                    applied = attr.evolve(applied, notifications=new.notifications)
        # named as the file spells them (gc.graceperiod, not gc.grace_period)
        restart = [key_as_written(name, new) for name in _differences(applied, new)]
        self.config = applied
        for key in restart:
            log.warn("reload: {key} changed; restart registryd to apply it", key=key)
        for callback in self._reloaded:
            try:
                callback(loaded)
            except Exception:
                log.failure("reload: {callback} failed", callback=callback)
        log.info("reload: configuration {path} applied", path=path)
        return restart

    async def _reload_tls(self, tls_config):
        """Renew every TLS listener's certificate from ``tls_config``'s (or
        its ssl: endpoint's) files, read in a thread; True if all were."""
        from twisted.internet import reactor as default_reactor
        from twisted.internet import threads

        from registryd.http import tls

        reactor = self._reactor or default_reactor
        renewed = True
        for endpoint, reloadable in self.tls_listeners:
            try:
                options = await threads.deferToThreadPool(
                    reactor, reactor.getThreadPool(), tls.reloaded_options, endpoint, tls_config
                )
            except ConfigError as error:
                log.error(
                    "reload: TLS of {endpoint} keeps its certificate: {error}",
                    endpoint=endpoint,
                    error=str(error),
                )
                renewed = False
                continue
            if options is None:  # http.tls removed: a plain listener needs a restart
                renewed = False
                continue
            reloadable.options = options
            log.info("reload: TLS of {endpoint} renewed", endpoint=endpoint)
        return renewed and bool(self.tls_listeners)


def _differences(current, wanted, prefix=""):
    """Dotted names of the attrs fields that differ, one level into sections."""
    found = []
    for field in attr.fields(type(current)):
        mine, theirs = getattr(current, field.name), getattr(wanted, field.name)
        if mine == theirs:
            continue
        name = f"{prefix}{field.name}"
        if attr.has(type(mine)) and type(mine) is type(theirs) and not prefix:
            found.extend(_differences(mine, theirs, prefix=name + ".") or [name])
        else:
            found.append(name)
    return found

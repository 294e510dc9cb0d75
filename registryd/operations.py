"""What an operator watches and steers: health, metrics, notifications,
the access log and its format, and reloading on SIGHUP.

``RegistryService`` makes one :class:`Operations` after its model, app,
site and listeners; this adds the child services (periodic health checks,
the debug listener, notification delivery) and hooks the access log into
the site and the event notifier into the app.

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

import attr
from twisted.internet import defer
from twisted.logger import Logger, LogLevel

from registryd.accesslog import AccessLog
from registryd.config import ConfigError, key_as_written, load_config
from registryd.health import HealthChecks
from registryd.listeners import ListenerService
from registryd.logs import LogFormat

log = Logger()


def source_address(listen):
    """``<hostname>:<port>`` for events' ``source.addr`` (Distribution
    reports the host and port it serves on), from the first endpoint."""
    import socket

    hostname = socket.gethostname()
    for endpoint in listen:
        parts = endpoint.split(":")
        if len(parts) > 1 and parts[0] in ("tcp", "tcp6", "ssl") and parts[1].isdigit():
            return f"{hostname}:{parts[1]}"
    return hostname


class Operations:
    """Health checks, debug listener, notifications, access log, reload."""

    def __init__(self, service, reactor=None):
        from registryd.debug import debug_site

        self.service = service
        self._reactor = reactor
        config = service.config
        self.health = HealthChecks.from_config(config.health, service.driver, reactor)
        service.app.health = self.health
        if self.health.periodic:
            timers = self.health.service()
            timers.setName("health checks")
            timers.setServiceParent(service)
        self.debug_listener = None
        if config.http.debug is not None:
            site = debug_site(self.health, config.http.debug)
            for endpoint in config.http.debug.listen:
                self.debug_listener = ListenerService(
                    endpoint, site, reactor=reactor, what="debug listener (/health, /metrics) on"
                )
                self.debug_listener.setName(f"debug {endpoint}")
                self.debug_listener.setServiceParent(service)
        self.notifications = None
        if config.notifications.enabled_endpoints:
            self._start_notifications(config.notifications)
        self.access_log = AccessLog(enabled=config.log.accesslog)
        service.site.access_log = self.access_log
        self.log_format = LogFormat(config.log.formatter, config.log.fields)
        self._previous_sighup = None
        #: Maps a freshly loaded configuration to what this process applies
        #: (a worker process: registryd.workers.worker_config), or None.
        self.config_filter = None
        #: Called with each successfully loaded configuration (unfiltered)
        #: after it was applied (a worker re-reads its notification endpoints).
        self.reloaded = []

    def _start_notifications(self, notifications):
        from registryd.notifications.service import NotificationService

        self.notifications = NotificationService(
            notifications, self.service.app.urls,
            source_addr=source_address(self.service.config.http.listen), reactor=self._reactor,
        )
        self.notifications.setServiceParent(self.service)
        self.service.app.events = self.notifications.notifier

    # logging

    def install_logging(self):
        """Switch the log format; before the level filter wraps observers."""
        self.log_format.install()

    def uninstall_logging(self):
        self.log_format.uninstall()

    # SIGHUP

    def install_sighup(self):
        """Reload on SIGHUP (twistd only: a library must not take signals)."""
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
        service = self.service
        path = path or getattr(service, "config_path", None)
        if not path:
            log.warn("reload: registryd runs without a configuration file; nothing to reload")
            return None
        try:
            new = load_config(path)
        except ConfigError as error:
            log.error("reload: configuration {path} not applied: {error}", path=path, error=str(error))
            return None
        loaded = new
        if self.config_filter is not None:
            new = self.config_filter(new)
        old = service.config
        if service.config.http.listen != new.http.listen and getattr(service, "listen_override", False):
            new = new.with_listen(old.http.listen)
        applied = attr.evolve(
            old,
            log=attr.evolve(old.log, level=new.log.level, accesslog=new.log.accesslog),
            http=attr.evolve(old.http, headers=new.http.headers),
        )
        if old.log.level != new.log.level:
            service._log_filter.set_level(LogLevel.levelWithName(new.log.level))
        self.access_log.enabled = new.log.accesslog
        service.app.set_headers(new.http.headers)
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
        service.config = applied
        for key in restart:
            log.warn("reload: {key} changed; restart registryd to apply it", key=key)
        for callback in self.reloaded:
            try:
                callback(loaded)
            except Exception:
                log.failure("reload: {callback} failed", callback=callback)
        log.info("reload: configuration {path} applied", path=path)
        return restart


    async def _reload_tls(self, tls_config):
        """Renew every TLS listener's certificate from C{tls_config}'s (or
        its ssl: endpoint's) files, read in a thread; True if all were."""
        from twisted.internet import reactor as default_reactor
        from twisted.internet import threads

        from registryd import tls

        reactor = self._reactor or default_reactor
        renewed = True
        for endpoint, reloadable in self.service.tls_listeners:
            try:
                options = await threads.deferToThreadPool(
                    reactor, reactor.getThreadPool(), tls.reloaded_options, endpoint, tls_config
                )
            except ConfigError as error:
                log.error("reload: TLS of {endpoint} keeps its certificate: {error}",
                          endpoint=endpoint, error=str(error))
                renewed = False
                continue
            if options is None:  # http.tls removed: a plain listener needs a restart
                renewed = False
                continue
            reloadable.options = options
            log.info("reload: TLS of {endpoint} renewed", endpoint=endpoint)
        return renewed and bool(self.service.tls_listeners)


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

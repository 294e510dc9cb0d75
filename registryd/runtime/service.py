"""The running registry: one service tree over the collaborators that
``registryd.runtime.composition`` built.

``RegistryService`` is a plain ``MultiService`` so twistd (or a test)
starts and stops it like any other.  Its children are the HTTP listeners,
the maintenance timers, the manhole, ``Operations`` (health checks, debug
listener, notifications) and, in worker mode, the worker pool, in that
order.  What it adds: logging set up before anything starts, SIGHUP under
twistd, and draining requests in progress on stop (``http.draintimeout``).
"""

import sys

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from registryd import compat
from registryd.http.listeners import ListenFailed
from registryd.storage.factory import describe_storage

log = Logger()


def stop_accepting(listener):
    """A Deferred that fires once ``listener`` (a started listening
    service) stopped accepting connections; its open connections stay."""
    stop = getattr(listener, "stop_accepting", None)  # registryd.runtime.workers.AdoptedPort
    if stop is not None:
        return defer.maybeDeferred(stop)
    return compat.listening_port(listener).addCallback(lambda port: port.stopListening())


class RegistryService(MultiService):
    """Storage, model, HTTP application and listeners of one registry."""

    def __init__(
        self,
        components,
        owns_process=False,
        workers=None,
        reactor=None,
        announce=True,
        exit_on_listen_failure=False,
    ):
        """
        :param components: :class:`registryd.runtime.composition.Components`.
        :param owns_process: True under twistd: SIGHUP reloads, and
            ``log.level`` stays in force after the service stops, for the
            process's last messages.  Otherwise (tests, embedding) the
            global log observers are restored when the service stops.
        :param workers: the :class:`registryd.runtime.workers.WorkerPool` (worker mode),
            stopped first, while this process drains its own requests.
        :param reactor: for draining; the global one by default.
        :param announce: log where the data is at start-up (False in a
            worker process: the main process said it).
        :param exit_on_listen_failure: True under ``twistd --nodaemon``: a
            port that cannot be bound ends the process with one line on
            stderr.  Otherwise :class:`ListenFailed` propagates: a daemonising
            twistd must see an exception to tell its waiting parent (which
            then prints it), and an embedding program handles it itself.
        """
        super().__init__()
        self.components = components
        self.driver = components.driver
        self.registry = components.registry
        #: the pull-through cache (registryd.proxy) the app serves, or None
        self.proxy = components.proxy
        self.app = components.app
        self.site = components.site
        self.listeners = components.listeners
        self.maintenance = components.maintenance
        self.manhole = components.manhole
        self.operations = components.operations
        #: what this node shares with the others (registryd.shared)
        self.shared_state = components.shared_state
        self.workers = workers
        self._owns_process = owns_process
        self._reactor = reactor
        self.announce = announce
        self.exit_on_listen_failure = exit_on_listen_failure
        for child in components.services:
            child.setServiceParent(self)
        if workers is not None:
            workers.setServiceParent(self)

    @property
    def config(self):
        """The configuration in force (reloads included)."""
        return self.operations.config

    async def _drain(self, timeout):
        """http.draintimeout: stop accepting, then give the requests in
        progress up to ``timeout`` seconds (worker processes drain theirs
        meanwhile)."""
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor

        log.info("stopping: letting requests finish for up to {timeout:g}s", timeout=timeout)
        workers = self.workers
        stopping_workers = defer.maybeDeferred(workers.stopService) if workers else None
        for listener in self.listeners:
            await stop_accepting(listener)  # bound: started before us
        await self.site.drain(timeout, reactor)
        if stopping_workers is not None:
            await stopping_workers

    def privilegedStartService(self):
        # twistd calls this (then startService) after it set up logging.
        self.operations.install_logging()
        if self.announce:
            log.info("storage: {where}", where=describe_storage(self.config.storage))
        try:
            super().privilegedStartService()
        except ListenFailed as error:
            if self.workers is not None:  # never started: its directory only
                self.workers.remove_metrics_directory()
            log.error("registryd: {error}", error=str(error))
            if self.exit_on_listen_failure:
                self._exit_on(error)
            raise

    @staticmethod
    def _exit_on(error):
        """End the process for a socket that cannot be opened at start-up:
        one line on the terminal (twistd has already sent stderr to the
        log, hence the original stream), status 1, no traceback."""
        print(f"registryd: {error}", file=sys.__stderr__, flush=True)
        raise SystemExit(1)

    def _close_shared_state(self, passthrough):
        if self.shared_state is None:
            return passthrough
        closing = self.shared_state.close()
        closing.addErrback(lambda _: None)  # Redis away: nothing to close cleanly
        return closing.addCallback(lambda _: passthrough)

    def startService(self):
        self.operations.install_logging()
        if self._owns_process:
            self.operations.install_sighup()
        super().startService()

    def stopService(self):
        self.operations.uninstall_sighup()
        drain_timeout = self.config.http.drain_timeout
        if drain_timeout > 0 and self.running:
            result = defer.ensureDeferred(self._drain(drain_timeout))
            result.addBoth(lambda _: MultiService.stopService(self))
        else:
            result = super().stopService()
        result.addBoth(self._close_shared_state)
        if self._owns_process:
            return result

        def restore(passthrough):
            self.operations.uninstall_logging()
            return passthrough

        return result.addBoth(restore)

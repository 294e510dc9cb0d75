"""The notification endpoints of a configuration, as a Twisted service.

Journals are opened when the service is made (so a journal directory that
cannot be created, or is locked by another registryd, stops start-up),
delivery loops run while the service runs, and :meth:`reconfigure` applies
a new ``notifications`` section on SIGHUP: endpoints added, removed,
disabled or changed (url, headers, timeout, threshold, backoff, ignore
rules) take effect at once, keeping their queued events; the journal
directory and ``maxevents`` apply at the next start.
"""

import os

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from registryd.notifications.delivery import Endpoint
from registryd.notifications.journal import Journal

log = Logger()


class NotificationService(Service):
    """Endpoints, their journals and the :class:`registryd.notifications.events.Notifier`
    handlers report to."""

    # the stub types Service.name as None, the unnamed default
    name = "notifications"  # type: ignore[assignment]

    def __init__(self, config, notifier, reactor=None):
        """
        :param config: a :class:`registryd.config.NotificationsConfig`.
        :param notifier: the app's :class:`registryd.notifications.events.Notifier`: events it builds go to
            this service's endpoints (it gets them here, and on
            ``reconfigure``).
        """
        import treq.client
        from twisted.web.client import Agent, HTTPConnectionPool

        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.config = config
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.retryAutomatically = False  # a retry is our decision
        self.client = treq.client.HTTPClient(Agent(reactor, pool=self._pool))
        self.notifier = notifier
        notifier.include_references = config.include_references
        self.endpoints = {}
        try:
            for endpoint_config in config.enabled_endpoints:
                self.endpoints[endpoint_config.name] = self._make_endpoint(endpoint_config)
        except BaseException:
            for endpoint in self.endpoints.values():
                endpoint.journal.close()
            raise
        self.notifier.set_endpoints(self.endpoints.values())

    def _make_endpoint(self, endpoint_config):
        journal = Journal(os.path.join(self.config.journal_directory, endpoint_config.name))
        endpoint = Endpoint(
            endpoint_config, journal, self.config.journal_max_events, self.client, self._reactor
        )
        log.info(
            "notification endpoint {endpoint} ({url}): timeout={timeout:g}s threshold={threshold} "
            "backoff={backoff:g}s headers={headers} {pending} events waiting",
            endpoint=endpoint.name,
            url=endpoint_config.url,
            timeout=endpoint_config.timeout,
            threshold=endpoint_config.threshold,
            backoff=endpoint_config.backoff,
            headers=sorted(endpoint_config.headers),
            pending=len(endpoint.pending),
        )
        return endpoint

    def startService(self):
        super().startService()
        for endpoint in self.endpoints.values():
            endpoint.start()

    def stopService(self):
        super().stopService()

        async def stopping():
            await defer.gatherResults(
                [
                    defer.ensureDeferred(self._close(endpoint))
                    for endpoint in self.endpoints.values()
                ]
            )
            await self._pool.closeCachedConnections()

        return defer.ensureDeferred(stopping())

    @staticmethod
    async def _close(endpoint):
        await endpoint.stop()
        await endpoint.journal.close()

    async def reconfigure(self, config):
        """Apply a new :class:`registryd.config.NotificationsConfig` while running."""
        if config.enabled_endpoints and config.journal_directory != self.config.journal_directory:
            log.warn("notifications.journal.directory changes only at the next start")
        if config.enabled_endpoints and config.journal_max_events != self.config.journal_max_events:
            log.warn("notifications.journal.maxevents changes only at the next start")
        wanted = {endpoint.name: endpoint for endpoint in config.enabled_endpoints}
        for name in list(self.endpoints):
            if name not in wanted:
                endpoint = self.endpoints.pop(name)
                self.notifier.set_endpoints(self.endpoints.values())
                await self._close(endpoint)
                log.info(
                    "notification endpoint {endpoint} removed; {pending} undelivered events "
                    "stay in its journal",
                    endpoint=name,
                    pending=len(endpoint.pending),
                )
        for name, endpoint_config in wanted.items():
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                endpoint = self.endpoints[name] = self._make_endpoint(endpoint_config)
                if self.running:
                    endpoint.start()
            elif endpoint.config != endpoint_config:
                endpoint.configure(endpoint_config)
                log.info(
                    "notification endpoint {endpoint} reconfigured ({url})",
                    endpoint=name,
                    url=endpoint_config.url,
                )
        self.notifier.include_references = config.include_references
        self.notifier.set_endpoints(self.endpoints.values())
        self.config = config.__class__(
            endpoints=config.endpoints,
            include_references=config.include_references,
            journal_directory=self.config.journal_directory,
            journal_max_events=self.config.journal_max_events,
        )

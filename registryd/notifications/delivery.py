"""Delivering queued events to one endpoint, as Distribution does.

Each endpoint has its own queue (backed by its journal) and one delivery
loop that POSTs envelopes serially with treq: up to ``batch_size`` queued
events per envelope, the endpoint's ``headers``, and its ``timeout`` per
attempt.  Any 2xx or 3xx answer means delivered (redirects are not
followed, Distribution's receivers do not rely on them); anything else,
a timeout or a connection error is a failure and the same envelope is
tried again.

Retry timing is Distribution's ``retryingSink``
(:class:`FailureTracker`): after a failure the next attempt is immediate
until ``threshold`` consecutive failures; from then on, each attempt waits
until ``backoff`` has passed since the last failure.  A success resets it.

Nothing here ever blocks a request: handlers only append to the queue.
"""

import time
from collections import deque

from twisted.internet import defer, task
from twisted.logger import Logger

from registryd import __version__
from registryd.notifications.events import EVENTS_MEDIA_TYPE, IgnoreRules, envelope
from registryd.ops import metrics

log = Logger()


class FailureTracker:
    """Consecutive failures and when to try next (Distribution's
    ``retryingSink.proceed``)."""

    def __init__(self, threshold, backoff):
        self.threshold = threshold
        self.backoff = backoff
        self.recent = 0
        self.last = None

    def record_success(self):
        self.recent = 0
        self.last = None

    def record_failure(self, now):
        """Count a failure at ``now``; True when it reaches the threshold
        (the moment to log that the endpoint is being backed off)."""
        self.recent += 1
        self.last = now
        return self.recent == self.threshold

    def delay(self, now):
        """Seconds to wait before the next attempt (0: go now)."""
        if self.recent < self.threshold or self.last is None:
            return 0.0
        return max(0.0, self.last + self.backoff - now)


class Endpoint:
    """One configured endpoint: its queue, journal and delivery loop."""

    #: Events per envelope, at most.
    batch_size = 50
    #: Seconds to wait after the first event arrives in an empty queue,
    #: so that the events of one push or pull (a manifest and its layers)
    #: or of a busy moment travel in one envelope: a POST per event costs
    #: the reactor about as much as serving a request.
    linger = 0.05

    def __init__(self, config, journal, max_events, client, reactor=None):
        """
        :param config: a :class:`registryd.config.EndpointConfig`.
        :param journal: its :class:`registryd.notifications.journal.Journal`.
        :param client: a treq HTTPClient (shared by all endpoints).
        """
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.name = config.name
        self.journal = journal
        self.client = client
        self.max_events = max_events
        self.configure(config)
        #: undelivered (line, journal end offset), oldest first
        self.pending = deque(journal.loaded)
        journal.loaded = []
        self._wakeup = None
        self._sleeping = None
        self._attempt = None
        self._loop = None
        self._running = False
        self._dropping = False
        self._pending_gauge = metrics.NOTIFICATION_PENDING.labels(self.name)
        self._pending_gauge.set(len(self.pending))

    def configure(self, config):
        """Apply (new) settings; the journal and queue stay (SIGHUP)."""
        self.config = config
        self.url = config.url
        self.rules = IgnoreRules(config.ignored_media_types, config.ignored_actions)
        self.failures = FailureTracker(config.threshold, config.backoff)
        headers = {name: list(values) for name, values in config.headers.items()}
        headers["Content-Type"] = [EVENTS_MEDIA_TYPE]
        headers.setdefault("User-Agent", [f"registryd/{__version__}"])
        self.headers = headers

    # the queue

    def ignored(self):
        metrics.NOTIFICATION_EVENTS.labels(self.name, "ignored").inc()

    def enqueue(self, line):
        """Append an encoded event; returns at once."""
        if len(self.pending) >= self.max_events:
            metrics.NOTIFICATION_EVENTS.labels(self.name, "dropped").inc()
            if not self._dropping:
                self._dropping = True
                log.error(
                    "notification endpoint {endpoint}: {count} events are waiting, the "
                    "limit (notifications.journal.maxevents); dropping new events",
                    endpoint=self.name,
                    count=len(self.pending),
                )
            return
        self.pending.append((line, self.journal.append(line)))
        self._pending_gauge.set(len(self.pending))
        metrics.NOTIFICATION_EVENTS.labels(self.name, "queued").inc()
        self._wake()

    def _wake(self):
        waiter, self._wakeup = self._wakeup, None
        if waiter is not None:
            waiter.callback(None)

    # the loop

    def start(self):
        if self._running:
            return
        self._running = True
        self._loop = defer.ensureDeferred(self._run())
        self._loop.addErrback(
            lambda failure: log.failure(
                "notification endpoint {endpoint}: delivery loop failed",
                failure,
                endpoint=self.name,
            )
        )

    async def stop(self):
        """Stop delivering (an envelope in flight is abandoned and will be
        sent again) and finish the journal's writes."""
        self._running = False
        for waiting in (self._sleeping, self._attempt):
            if waiting is not None:
                waiting.cancel()
        self._wake()
        if self._loop is not None:
            await self._loop
            self._loop = None

    async def _run(self):
        while self._running:
            if not self.pending:
                self._wakeup = defer.Deferred()
                await self._wakeup
                if self.linger > 0 and self._running:
                    await self._sleep(self.linger)
                continue
            delay = self.failures.delay(self._reactor.seconds())
            if delay > 0:
                await self._sleep(delay)
                continue
            batch = [
                self.pending[index] for index in range(min(self.batch_size, len(self.pending)))
            ]
            delivered = await self._deliver([line for line, _ in batch])
            if not self._running:
                break
            if delivered:
                for _ in batch:
                    self.pending.popleft()
                self._pending_gauge.set(len(self.pending))
                self.journal.ack(batch[-1][1])
                metrics.NOTIFICATION_EVENTS.labels(self.name, "delivered").inc(len(batch))
                if self.failures.recent:
                    log.info("notification endpoint {endpoint} receives again", endpoint=self.name)
                self.failures.record_success()
                if len(self.pending) < self.max_events:
                    self._dropping = False

    async def _sleep(self, seconds):
        """Wait ``seconds``, or less if the endpoint is stopped."""
        self._sleeping = task.deferLater(self._reactor, seconds, lambda: None)
        try:
            await self._sleeping
        except defer.CancelledError:
            pass
        self._sleeping = None

    async def _post(self, lines):
        response = await self.client.post(
            self.url,
            data=envelope(lines),
            headers=self.headers,
            allow_redirects=False,
        )
        await response.content()  # read it all: releases the connection
        return response.code

    async def _deliver(self, lines):
        """POST one envelope; True if the endpoint took it."""
        started = time.monotonic()
        self._attempt = defer.ensureDeferred(self._post(lines))
        self._attempt.addTimeout(self.config.timeout, self._reactor)
        try:
            status = await self._attempt
            result = str(status)
            delivered = 200 <= status < 400
            error = None if delivered else f"answered HTTP {status}"
        except (defer.TimeoutError, defer.CancelledError):
            if not self._running:
                return False
            result, delivered, error = "error", False, f"timed out after {self.config.timeout:g}s"
        except Exception as exception:
            result, delivered = "error", False
            error = " ".join(str(exception).split()) or type(exception).__name__
        finally:
            self._attempt = None
        metrics.NOTIFICATION_DELIVERIES.labels(self.name, result).inc()
        if delivered:
            log.debug(
                "notification endpoint {endpoint}: delivered {count} events in {duration:.3f}s",
                endpoint=self.name,
                count=len(lines),
                duration=time.monotonic() - started,
            )
            return True
        backing_off = self.failures.record_failure(self._reactor.seconds())
        # One warning when an endpoint starts failing and one error when it
        # is backed off; the retries in between and after are debug noise.
        if self.failures.recent == 1:
            log.warn(
                "notification endpoint {endpoint} ({url}): {error}; retrying",
                endpoint=self.name,
                url=self.url,
                error=error,
            )
        elif backing_off:
            log.error(
                "notification endpoint {endpoint} ({url}) failed {count} times in a row "
                "({error}); retrying every {backoff:g}s, {pending} events waiting",
                endpoint=self.name,
                url=self.url,
                count=self.failures.recent,
                error=error,
                backoff=self.config.backoff,
                pending=len(self.pending),
            )
        else:
            log.debug("notification endpoint {endpoint}: {error}", endpoint=self.name, error=error)
        return False

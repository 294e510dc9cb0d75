"""Scheduled jobs on several nodes: one node at a time, once per interval.

Every node runs the same timers (scheduled GC, upload purging, the
pull-through cache's expiry).  With the state shared (Redis), a node that
is due takes the job's lease (``job:lease:<name>``, renewed while the job
runs, so a node that dies mid-run frees it after ``JobLeases.lease``
seconds) and, when done, leaves ``job:done:<name>`` for most of the
interval: the other nodes, due a moment later, skip the run.  While
Redis does not answer, scheduled jobs pause (logged once per job until it
runs again): two nodes collecting at once would each see the other's
deletions as garbage appearing, and nothing scheduled is urgent.  With one
node (state in process), jobs simply run.
"""

import uuid

from twisted.internet import task
from twisted.logger import Logger

from registryd.shared.errors import SharedStateUnavailable

log = Logger()


class JobLeases:
    #: seconds a node's hold of a job lasts unless renewed while it runs
    lease = 60.0
    #: part of the interval for which a finished run stands for every node
    done_fraction = 0.9

    def __init__(self, shared_state, reactor=None):
        self.shared = shared_state if shared_state is not None and shared_state.shared else None
        self._reactor = reactor
        self._paused = set()  # jobs whose pause was logged
        #: for tests and the curious: how runs were decided, by job name
        self.ran, self.skipped = [], []

    async def run(self, name, interval, work):
        """Run ``work()`` for job ``name`` (scheduled every ``interval``
        seconds) unless another node runs it or ran it lately."""
        if self.shared is None:
            return await work()
        token = uuid.uuid4().hex
        try:
            if await self.shared.get(
                f"job:done:{name}"
            ) is not None or not await self.shared.acquire(f"job:lease:{name}", token, self.lease):
                self.skipped.append(name)
                return None
        except SharedStateUnavailable as error:
            if name not in self._paused:
                self._paused.add(name)
                log.warn(
                    "{name} paused: the nodes' shared state does not answer ({error})",
                    name=name,
                    error=str(error),
                )
            self.skipped.append(name)
            return None
        self._paused.discard(name)
        renewal = task.LoopingCall(
            lambda: self.shared.extend(f"job:lease:{name}", token, self.lease).addErrback(
                lambda _: None
            )
        )
        if self._reactor is not None:
            renewal.clock = self._reactor
        renewal.start(self.lease / 3, now=False)
        try:
            self.ran.append(name)
            return await work()
        finally:
            renewal.stop()
            try:
                await self.shared.set(f"job:done:{name}", b"1", ttl=interval * self.done_fraction)
                await self.shared.release(f"job:lease:{name}", token)
            except SharedStateUnavailable:
                pass  # the lease expires; the next due node may run it again

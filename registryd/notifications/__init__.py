"""Webhook notifications, as CNCF Distribution sends them.

- ``events``: building Distribution's events and envelopes
  (``application/vnd.docker.distribution.events.v1+json``), ignore rules,
  and the ``Notifier`` that request handlers report to (one call per
  push, pull, mount or delete; it never waits for anything).
- ``journal``: the persisted queue, one append-only file per endpoint.
- ``delivery``: one delivery loop per endpoint, with Distribution's
  timeout, threshold and backoff.
- ``service``: the endpoints of a configuration as a Twisted service,
  reconfigurable on SIGHUP.
"""

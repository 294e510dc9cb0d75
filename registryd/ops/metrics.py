"""Prometheus metrics: every metric registryd exports, in one place.

The objects live in prometheus_client's default registry, so the debug
listener's ``/metrics`` (``registryd.ops.debug``) also shows the client's
process and platform collectors (memory, CPU, open files).  They are
module-level, as prometheus_client intends: a metric is a process-wide
fact, and code anywhere updates it without being handed an object.

In worker mode (``registryd.runtime.workers``) every process updates its own
copies, in prometheus_client's multiprocess mode (files in a directory
named by ``PROMETHEUS_MULTIPROC_DIR``, set before this module is first
imported); :func:`exposition_registry` then sums them for ``/metrics``.
Each gauge says how: ``livesum`` for what processes hold between them
(uploads in progress, events pending), ``livemin`` for health (a check is
up only if it passes in every process).

Labels are chosen for bounded cardinality: HTTP metrics are labelled by
route (the klein endpoint name, e.g. ``blob``), never by path, and by
method and status; storage metrics by driver operation; notification
metrics by endpoint name (from configuration).

For the garbage collector (``registryd.ops``)::

    from registryd.ops import metrics

    with metrics.gc_run():           # counts the run, times it, records
        ...                          # "ok" or "failed" as its result
    metrics.GC_BLOBS_DELETED.inc(n)
    metrics.GC_BYTES_FREED.inc(size)
    metrics.UPLOADS_PURGED.inc(n)
"""

import contextlib
import time

from prometheus_client import Counter, Gauge, Histogram

NAMESPACE = "registryd"

#: Request latency buckets: manifest and API calls take milliseconds, blob
#: transfers up to minutes.
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)

# --- HTTP (updated once per request, by registryd.http.accesslog) ---------------

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
    namespace=NAMESPACE,
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the request line to the end of the response, by route, method and status.",
    ["route", "method", "status"],
    namespace=NAMESPACE,
    buckets=_LATENCY_BUCKETS,
)
HTTP_REQUESTS_ABORTED = Counter(
    "http_requests_aborted",
    "Requests whose connection was lost before the response was complete.",
    ["route", "method"],
    namespace=NAMESPACE,
)
HTTP_RECEIVED_BYTES = Counter(
    "http_received_bytes",
    "Request body bytes received, by route.",
    ["route"],
    namespace=NAMESPACE,
)
HTTP_SENT_BYTES = Counter(
    "http_sent_bytes",
    "Response body bytes sent, by route.",
    ["route"],
    namespace=NAMESPACE,
)
UPLOADS_IN_PROGRESS = Gauge(
    "uploads_in_progress",
    "Blob upload requests (POST, PATCH, PUT with a body) being received right now.",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)

# --- storage (updated by registryd.storage.instrumented) --------------------

STORAGE_OPERATION_DURATION = Histogram(
    "storage_operation_duration_seconds",
    "Time taken by storage driver calls, by driver and operation.",
    ["driver", "operation"],
    namespace=NAMESPACE,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STORAGE_ERRORS = Counter(
    "storage_errors",
    "Storage driver calls that failed (a missing path is not an error), by driver, operation and error.",
    ["driver", "operation", "error"],
    namespace=NAMESPACE,
)

# --- health (updated by registryd.ops.health) ------------------------------------

HEALTH_CHECK_UP = Gauge(
    "health_check_up",
    "1 while a health check passes, 0 while it fails.",
    ["check"],
    namespace=NAMESPACE,
    multiprocess_mode="livemin",
)
HEALTH_CHECK_FAILURES = Counter(
    "health_check_failures",
    "Failed health check runs, by check.",
    ["check"],
    namespace=NAMESPACE,
)

# --- notifications (updated by registryd.notifications) --------------------

NOTIFICATION_EVENTS = Counter(
    "notification_events",
    "Events by endpoint and what became of them: queued, delivered, dropped (queue full) or ignored.",
    ["endpoint", "outcome"],
    namespace=NAMESPACE,
)
NOTIFICATION_DELIVERIES = Counter(
    "notification_deliveries",
    "Delivery attempts (one envelope each), by endpoint and result: an HTTP status, or 'error'.",
    ["endpoint", "result"],
    namespace=NAMESPACE,
)
NOTIFICATION_PENDING = Gauge(
    "notification_pending",
    "Events waiting to be delivered, by endpoint.",
    ["endpoint"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)

# --- pull-through cache (updated by registryd.proxy) -------------------------

PROXY_REQUESTS = Counter(
    "proxy_requests",
    "Pull-through cache lookups, by type (blob, manifest) and result: hit (served "
    "from the cache), miss (fetched from upstream), stale (upstream unavailable, "
    "the cached tag served).",
    ["type", "result"],
    namespace=NAMESPACE,
)
PROXY_PULLED_BYTES = Counter(
    "proxy_pulled_bytes",
    "Bytes fetched from the upstream registry, by type (blob, manifest).",
    ["type"],
    namespace=NAMESPACE,
)

# --- the nodes' metadata cache (updated by registryd.storage.shared_cache) ---

METADATA_CACHE_LOOKUPS = Counter(
    "metadata_cache_lookups",
    "Lookups in the metadata cache the nodes share in Redis, by result: hit (storage "
    "not asked), miss (read from storage, then stored), bypassed (Redis away or not "
    "trusted yet: read from storage).",
    ["result"],
    namespace=NAMESPACE,
)

# --- quotas (updated by registryd.lifecycle.quotas) -------------------------

QUOTA_USED_BYTES = Gauge(
    "quota_used_bytes",
    "Bytes the repositories under a quota hold (deduplicated), by quota.",
    ["quota"],
    namespace=NAMESPACE,
    multiprocess_mode="max",
)
QUOTA_LIMIT_BYTES = Gauge(
    "quota_limit_bytes",
    "A quota's bound in bytes (absent: none), by quota.",
    ["quota"],
    namespace=NAMESPACE,
    multiprocess_mode="max",
)
QUOTA_REPOSITORIES = Gauge(
    "quota_repositories",
    "Repositories under a quota, by quota.",
    ["quota"],
    namespace=NAMESPACE,
    multiprocess_mode="max",
)

# --- garbage collection and upload purging (for registryd.ops) -----------

GC_RUNS = Counter(
    "gc_runs",
    "Garbage collection runs, by result (ok or failed).",
    ["result"],
    namespace=NAMESPACE,
)
GC_DURATION = Histogram(
    "gc_duration_seconds",
    "Time taken by garbage collection runs.",
    namespace=NAMESPACE,
    buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200),
)
GC_BLOBS_DELETED = Counter(
    "gc_blobs_deleted",
    "Blobs deleted by garbage collection.",
    namespace=NAMESPACE,
)
GC_MANIFESTS_DELETED = Counter(
    "gc_manifests_deleted",
    "Manifests deleted by garbage collection.",
    namespace=NAMESPACE,
)
GC_BYTES_FREED = Counter(
    "gc_freed_bytes",
    "Bytes of blob data deleted by garbage collection.",
    namespace=NAMESPACE,
)
UPLOADS_PURGED = Counter(
    "uploads_purged",
    "Abandoned uploads removed by upload purging.",
    namespace=NAMESPACE,
)


@contextlib.contextmanager
def gc_run():
    """Count and time one garbage collection run (``with gc_run(): ...``);
    its result label is ``failed`` when the block raises, ``ok`` otherwise."""
    started = time.monotonic()
    result = "failed"
    try:
        yield
        result = "ok"
    finally:
        GC_DURATION.observe(time.monotonic() - started)
        GC_RUNS.labels(result=result).inc()


def sample(name, **labels):
    """The current value of one sample in the default registry, or 0.0
    (for tests and the manhole: ``sample("registryd_gc_runs_total", result="ok")``)."""
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def multiprocess_directory():
    """The directory worker processes share their metrics through, or None
    (one process: metrics live in memory)."""
    import os

    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        return None  # chosen when prometheus_client was imported
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def exposition_registry():
    """What ``/metrics`` shows: the default registry in one process; in
    worker mode, every process's registryd metrics summed, plus this (the
    main) process's own process and platform metrics."""
    from prometheus_client import (
        REGISTRY,
        CollectorRegistry,
        PlatformCollector,
        ProcessCollector,
        multiprocess,
    )

    directory = multiprocess_directory()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def process_exited(pid):
    """Forget the live gauges of a worker process that exited (its counters
    stay in the totals)."""
    if multiprocess_directory() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)

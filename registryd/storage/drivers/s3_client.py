"""Calling S3 from the reactor: botocore's client, in a bounded thread pool.

Why botocore's own (blocking) client in threads rather than its signer over
a non-blocking transport: the client *is* the S3 protocol -- request
serialisation, SigV4 (and presigning), response and error parsing
including S3's "200 OK with an error inside" for copies and multipart
completion, endpoint rules (virtual-host or path style, FIPS, dual-stack,
acceleration), checksums, retries with back-off and the credential chain.
Driving it over treq would mean calling its private request pipeline, as
aiobotocore does by pinning botocore versions.  Threads cost little here:
S3 calls are few per registry request and the bytes are in large pieces.

The reactor never blocks: every call runs in a thread pool of its own
(``maxrequests`` threads), and these bounds keep an unreachable or slow
store from piling requests up:

- a call waits at most ``requesttimeout`` for a free thread, then fails;
- botocore gives each attempt ``requesttimeout`` to connect and per read,
  and retries connection errors, 5xx and throttling (three attempts);
- the caller stops waiting after ``requesttimeout`` whatever botocore is
  doing (copies and multipart completion, which S3 may legitimately take
  longer over, get ten times that); the thread stays counted until
  botocore gives up, so the pool's bound stays true.

Every failure reaches the caller as a storage error: a missing key as
:class:`PathNotFound`, a store that cannot be reached, times out or answers
5xx or "slow down" as :class:`StorageUnavailable` (clients get a retryable
503), a store that refuses registryd's credentials, lost its bucket or is
over its quota as :class:`StorageRefused` (a 503 naming that, like a full
disk), anything else as :class:`S3Error` (with the S3 error code, which
the driver inspects for the few it handles).
"""

import base64
import hashlib
import threading

from twisted.internet import defer
from twisted.python.failure import Failure

from registryd.storage.errors import (
    PathNotFound,
    StorageError,
    StorageRefused,
    StorageUnavailable,
)

#: S3 error codes that mean "try again later", whatever the HTTP status.
RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "OperationAborted",
    }
)
#: Codes that mean the store refuses registryd as a whole, whatever the
#: key: credentials revoked or wrong, the bucket gone or over its quota.
#: Like a full or read-only disk (StorageRefused): a retryable 503 naming
#: the condition until an operator fixes it, not a 500.
REFUSED_CODES = {
    "AccessDenied": "storage permission denied",
    "AllAccessDisabled": "storage permission denied",
    "AccountProblem": "storage permission denied",
    "InvalidAccessKeyId": "storage permission denied",
    "SignatureDoesNotMatch": "storage permission denied",
    "NoSuchBucket": "storage missing: no such bucket",
    "QuotaExceeded": "storage full",
    "XMinioStorageFull": "storage full",
    "XMinioAdminBucketQuotaExceeded": "storage full",
}
#: Codes that mean "no such key" (HeadObject has no body, so only "404").
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
#: Operations that S3 may take long over (server-side copies, completing
#: multipart uploads): the caller waits ten times the request timeout.
SLOW_OPERATIONS = frozenset({"copy_object", "upload_part_copy", "complete_multipart_upload"})

_loader_lock = threading.Lock()
_loader = None


def _botocore_session():
    """A fresh botocore session (credentials are resolved per session, so
    each driver sees the environment of its own making) sharing one data
    loader, which caches the service models: parsing S3's is most of the
    cost of making a client."""
    global _loader
    import botocore.loaders
    import botocore.session

    with _loader_lock:
        if _loader is None:
            _loader = botocore.loaders.create_loader()
    session = botocore.session.Session()
    session.register_component("data_loader", _loader)
    return session


class S3Error(StorageError):
    """S3 refused a request for a reason that is not an outage."""

    def __init__(self, message, code=None, status=None):
        super().__init__(message)
        self.code = code
        self.status = status


def translate(error, operation, path=None):
    """The storage error for an exception botocore raised.

    :param path: the driver path the call was about, for PathNotFound; a
        404 on a call without one is an S3Error.
    """
    import botocore.exceptions as be

    where = f"S3 {operation}" + (f" {path}" if path else "")
    if isinstance(error, be.ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        message = details.get("Message") or ""
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if path is not None and (
            code in NOT_FOUND_CODES or (status == 404 and not code.startswith("NoSuch"))
        ):
            return PathNotFound(path)
        outage = (
            status is not None and (status >= 500 or status == 429) and status not in (501, 505)
        )
        if code in REFUSED_CODES:
            return StorageRefused(f"{REFUSED_CODES[code]} (S3 {code})", f"in S3 {operation}", path)
        if code in RETRYABLE_CODES or outage:
            return StorageUnavailable(
                f"{where}: the store answered {status} {code} {message}".rstrip()
            )
        return S3Error(f"{where}: {status} {code} {message}".rstrip(), code=code, status=status)
    if isinstance(error, (be.ConnectionError, be.HTTPClientError, be.IncompleteReadError, OSError)):
        return StorageUnavailable(f"{where}: {error}")
    if isinstance(error, (be.NoCredentialsError, be.PartialCredentialsError)):
        return StorageRefused(
            f"storage permission denied (no usable S3 credentials: {error})",
            f"in S3 {operation}",
            path,
        )
    if isinstance(error, be.BotoCoreError):
        return StorageError(f"{where}: {error}")
    return None


def _add_content_md5(request, **kwargs):
    """Multi-object delete must carry Content-MD5 for some S3-compatible
    stores (Swift's s3api, older Ceph); botocore now sends only a CRC32."""
    body = request.body
    if isinstance(body, (bytes, bytearray)) and "Content-MD5" not in request.headers:
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(digest).decode("ascii")


def make_botocore_client(params):
    """A botocore S3 client for ``S3Parameters``."""
    from botocore.config import Config

    timeout = params.request_timeout
    if params.force_path_style:
        style = "path"
    else:
        # Distribution addresses a custom endpoint by virtual host unless
        # told otherwise; on AWS "auto" picks virtual hosts where it can.
        style = "virtual" if params.endpoint else "auto"
    s3_options = {"addressing_style": style}
    if params.accelerate:
        s3_options["use_accelerate_endpoint"] = True
    if params.dual_stack:
        s3_options["use_dualstack_endpoint"] = True
    config = Config(
        region_name=params.region,
        signature_version="s3v4" if params.v4auth else "s3",
        s3=s3_options,
        use_fips_endpoint=params.fips or None,
        connect_timeout=min(timeout, 5.0),
        read_timeout=timeout,
        retries={"mode": "standard", "total_max_attempts": 3},
        # Open readers keep a connection each, besides the working threads.
        max_pool_connections=params.max_requests * 2,
        user_agent_extra=params.user_agent,
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = _botocore_session().create_client(
        "s3",
        endpoint_url=params.endpoint,
        use_ssl=params.secure,
        verify=False if params.skip_verify else None,
        aws_access_key_id=params.access_key,
        aws_secret_access_key=params.secret_key,
        config=config,
    )
    client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)
    return client


class S3Caller:
    """Runs botocore calls in a bounded thread pool; see the module doc."""

    def __init__(self, params, reactor=None, client=None):
        self.params = params
        self.timeout = params.request_timeout
        self.client = client if client is not None else make_botocore_client(params)
        # What the current call in each thread last failed with before
        # botocore retried, to name it when the caller gives up waiting.
        self._local = threading.local()
        self.client.meta.events.register("needs-retry.s3", self._note_retry)
        self._reactor = reactor
        self._pool = None
        self._shutdown_trigger = None
        self._slots = defer.DeferredSemaphore(params.max_requests)

    @property
    def in_progress(self):
        """Calls holding one of the ``maxrequests`` slots now, including
        calls whose caller gave up waiting: they run on until botocore's
        own timeouts and retries end them."""
        return self.params.max_requests - self._slots.tokens

    # The pool

    def _get_reactor(self):
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _get_pool(self):
        if self._pool is None:
            from twisted.python.threadpool import ThreadPool

            reactor = self._get_reactor()
            self._pool = ThreadPool(minthreads=0, maxthreads=self.params.max_requests, name="s3")
            self._pool.start()
            self._shutdown_trigger = reactor.addSystemEventTrigger("during", "shutdown", self.close)
        return self._pool

    def close(self):
        """Stop the threads once the calls running in them end (botocore's
        own timeouts bound that).  The reactor is not blocked meanwhile:
        returns a Deferred that fires when they have stopped."""
        pool, self._pool = self._pool, None
        if self._shutdown_trigger is not None:
            trigger, self._shutdown_trigger = self._shutdown_trigger, None
            try:
                self._get_reactor().removeSystemEventTrigger(trigger)
            except (ValueError, KeyError):
                pass  # running it now
        if pool is None:
            return defer.succeed(None)
        reactor = self._get_reactor()
        stopped = defer.Deferred()

        def stop():
            pool.stop()
            reactor.callFromThread(stopped.callback, None)

        threading.Thread(target=stop, name="s3 pool stopper", daemon=True).start()
        return stopped

    def _note_retry(self, caught_exception=None, response=None, **kwargs):
        state = getattr(self._local, "state", None)
        if state is None:
            return None
        if caught_exception is not None:
            state["last"] = str(caught_exception)
        elif response is not None:
            http, parsed = response
            status = getattr(http, "status_code", None)
            if status is not None and status >= 300:
                code = (parsed or {}).get("Error", {}).get("Code", "")
                state["last"] = f"the store answered {status} {code}".rstrip()
        return None  # botocore's own handler decides whether to retry

    # Calls

    def call(self, operation, path=None, **kwargs):
        """``client.<operation>(**kwargs)`` in a thread; a Deferred with its
        result.  Storage errors as described in the module doc."""
        client = self.client

        def invoke():
            return getattr(client, operation)(**kwargs)

        return self.run(invoke, operation, path)

    def run(self, function, operation, path=None):
        """``function()`` (blocking botocore work) in a thread, bounded and
        translated like ``call``.  Cancelling the returned Deferred stops
        the wait, not the work; the thread is released when it ends."""
        reactor = self._get_reactor()
        budget = self.timeout * (10 if operation in SLOW_OPERATIONS else 1)
        state = {"timer": None, "acquiring": None, "last": None}

        def cancel_wait(_):
            # The caller is gone: stop queueing for a slot if still waiting.
            acquiring = state["acquiring"]
            if acquiring is not None and not acquiring.called:
                acquiring.cancel()

        # Deferred.cancel errbacks with CancelledError after cancel_wait; every
        # place below that fires the result first checks it is still unfired.
        result = defer.Deferred(cancel_wait)

        def give_up(message):
            if not result.called:
                if state["last"]:
                    message = f"{message} (last error: {state['last']})"
                result.errback(StorageUnavailable(message))

        def finished(success, value):
            # In the reactor thread (callFromThread).
            self._slots.release()
            timer = state["timer"]
            if timer is not None and timer.active():
                timer.cancel()
            if result.called:
                # Abandoned by its caller (cancelled, or given up on): a
                # response body nobody will read must give its connection back.
                body = value.get("Body") if success and isinstance(value, dict) else None
                if body is not None and hasattr(body, "close"):
                    body.close()
                return
            if success:
                result.callback(value)
                return
            translated = translate(value.value, operation, path)
            result.errback(translated if translated is not None else value)

        def in_thread():
            self._local.state = state
            try:
                value = function()
            except BaseException:
                reactor.callFromThread(finished, False, Failure())
            else:
                reactor.callFromThread(finished, True, value)
            finally:
                self._local.state = None

        def got_slot(_):
            if result.called:  # the caller gave up while we waited
                self._slots.release()
                return
            state["timer"] = reactor.callLater(
                budget, give_up, f"S3 {operation}: no answer within {budget:g}s"
            )
            self._get_pool().callInThread(in_thread)

        def slot_failed(failure):
            failure.trap(defer.CancelledError)
            give_up(
                f"S3 {operation}: all {self.params.max_requests} S3 connections stayed busy "
                f"for {self.timeout:g}s"
            )

        acquiring = state["acquiring"] = self._slots.acquire()
        if not acquiring.called:
            waiting = reactor.callLater(self.timeout, acquiring.cancel)

            def stop_waiting(passthrough):
                if waiting.active():
                    waiting.cancel()
                return passthrough

            acquiring.addBoth(stop_waiting)
        acquiring.addCallbacks(got_slot, slot_failed)
        return result

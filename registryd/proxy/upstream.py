"""The registry a pull-through cache mirrors (``proxy.remoteurl``), as a client.

One treq client with its own persistent connection pool.  Requests go out
anonymously first; a 401 is answered the way ``docker pull`` answers it:

* ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` (Docker Hub,
  Distribution's token auth): GET the realm with ``service`` and ``scope``
  (with the configured credentials as Basic auth, if any), take ``token``
  or ``access_token`` from the JSON answer, and retry with it.  Tokens are
  cached per scope until shortly before they expire (``expires_in``,
  60 s when absent, as the spec says), so a pull costs one token request
  per repository, not one per blob.
* ``WWW-Authenticate: Basic``: retry with the configured credentials, and
  send them right away from then on.

Errors come out typed (``registryd.errors``): unreachable, 5xx and 429 as
``UpstreamUnavailable`` (the manifest handler then falls back to what is
cached), refused credentials as ``UpstreamUnauthorized``; 404 is returned
to the caller, who knows whether a manifest or a blob was missing.

Bodies are never buffered whole by this module: :class:`ResponseBody` hands a
response's bytes out as they arrive and pauses the upstream connection
while its reader is behind.
"""

import base64
import json
import re
import time
from urllib.parse import urlencode, urlsplit

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from werkzeug.datastructures import WWWAuthenticate

from registryd import errors
from registryd.http.web import ChunkBuffer
from registryd.manifests import mediatypes
from registryd.names import valid_tags

log = Logger()

#: What a manifest request accepts when the client said nothing: every
#: type registryd can store, the newest first (as docker sends them).
ALL_MANIFEST_TYPES = ", ".join(
    [
        mediatypes.OCI_INDEX,
        mediatypes.OCI_MANIFEST,
        mediatypes.DOCKER_MANIFEST_LIST,
        mediatypes.DOCKER_MANIFEST,
        mediatypes.DOCKER_SCHEMA1_SIGNED,
        mediatypes.DOCKER_SCHEMA1,
    ]
)

#: Seconds for connecting and receiving the response headers.
DEFAULT_TIMEOUT = 60.0
#: The token lifetime assumed when the token server names none (spec-auth-token).
DEFAULT_TOKEN_LIFETIME = 60.0
#: A cached token is dropped this many seconds before it expires.
TOKEN_MARGIN = 5.0
#: Largest error or token body read from upstream.
SMALL_BODY_LIMIT = 1024 * 1024
#: Tags asked for per upstream page, and the most pages followed.
TAGS_PAGE = 1000
MAX_TAG_PAGES = 1000

_NEXT_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


def header_values(response, name):
    """Every value of header ``name`` in an upstream ``response``, as text
    whatever bytes upstream sent (asked for by a ``str`` name, twisted
    decodes them as UTF-8 and raises on anything else: a hostile or broken
    upstream must not make a request fail with a traceback)."""
    return [
        value.decode("latin-1")
        for value in response.headers.getRawHeaders(name.encode("ascii")) or []
    ]


def _next_page_query(links):
    """The query string of the ``rel="next"`` page in ``links`` (Link header
    values), or None."""
    for value in links:
        match = _NEXT_LINK.search(value)
        if match:
            query = urlsplit(match.group(1)).query
            return query or None
    return None


class _TooLong(Exception):
    """An upstream body went past its limit."""


class ResponseBody(ChunkBuffer, Protocol):
    """An upstream response body, read while it arrives (:class:`ChunkBuffer`:
    the upstream connection is paused while too much waits unread); a
    connection that breaks first makes the read raise
    :class:`errors.UpstreamUnavailable`."""

    def __init__(self, response, idle_timeout=None, reactor=None, limit=None):
        """
        :param idle_timeout: seconds a read may wait for the next bytes
            before the body counts as broken (an upstream that stalls
            mid-body must not hold a client forever); None: no limit.
        :param limit: the most bytes taken; one more breaks the body and
            closes the connection (an upstream that streams on must not be
            relayed without end); None: no limit.
        """
        ChunkBuffer.__init__(self)
        self.length = response.length if isinstance(response.length, int) else None
        self.idle_timeout = idle_timeout
        self.limit = limit
        self._reactor = reactor
        response.deliverBody(self)

    async def read(self, size):
        if self.idle_timeout is None or self._chunks or self.finished or self._error is not None:
            return await ChunkBuffer.read(self, size)
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        timer = reactor.callLater(self.idle_timeout, self._stalled)
        try:
            return await ChunkBuffer.read(self, size)
        finally:
            if timer.active():
                timer.cancel()

    def _stalled(self):
        from twisted.python.failure import Failure

        self._break(Failure(defer.TimeoutError(f"no data for {self.idle_timeout:g}s")))
        self.abort_connection()

    def _pause_source(self):
        if self.transport is not None:
            self.transport.pauseProducing()
        else:
            self._paused = False  # nothing to pause yet

    def _resume_source(self):
        if self.transport is not None:
            self.transport.resumeProducing()

    def _broken(self, reason):
        if reason.check(_TooLong):
            return errors.UpstreamUnavailable(
                "the upstream registry sent more bytes than the blob has",
                detail={"limit": self.limit},
            )
        return errors.UpstreamUnavailable(
            "the upstream registry's response broke off",
            detail={"reason": reason.getErrorMessage()},
        )

    # the response side (IProtocol)

    def dataReceived(self, data):
        if self._error is not None:
            return
        if self.limit is not None and self.received + len(data) > self.limit:
            from twisted.python.failure import Failure

            self._break(Failure(_TooLong()))
            self.abort_connection()
            return
        self._push(data)

    def connectionLost(self, reason=None):
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            self._end()
        else:
            self._break(reason)

    async def read_all(self, limit):
        """The whole body, which must be at most ``limit`` bytes (a manifest,
        a token); a longer one is cut off and refused."""
        pieces, total = [], 0
        while True:
            chunk = await self.read(64 * 1024)
            if not chunk:
                return b"".join(pieces)
            total += len(chunk)
            if total > limit:
                self.abort()
                raise errors.UpstreamUnavailable(
                    f"the upstream registry sent more than {limit} bytes where a small "
                    "document was expected"
                )
            pieces.append(chunk)

    def abort(self):
        """Stop receiving: the connection is closed, not reused."""
        if not self.finished and self._error is None:
            self.abort_connection()

    def abort_connection(self):
        if self.transport is not None:
            self.transport.stopProducing()


async def discard(response):
    """Read and drop a (small) body so its connection can be reused."""
    try:
        await ResponseBody(response, DEFAULT_TIMEOUT).read_all(SMALL_BODY_LIMIT)
    except errors.RegistryError:
        pass


class Upstream:
    """The mirrored registry: manifests and blobs by repository name."""

    def __init__(
        self,
        url,
        username=None,
        password=None,
        reactor=None,
        timeout=DEFAULT_TIMEOUT,
        clock=time.monotonic,
        max_blob_size=None,
    ):
        """
        :param max_blob_size: the most bytes taken for one blob whose size
            upstream did not announce, and the largest announced size
            accepted (``proxy.maxblobsize``); None: no limit.
        """
        if reactor is None:
            from twisted.internet import reactor
        import treq.client
        from twisted.web.client import Agent, HTTPConnectionPool

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_blob_size = max_blob_size
        self._reactor = reactor
        self._clock = clock
        self._basic = None
        if username is not None:
            self._basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode(
                "ascii"
            )
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 8
        self._client = treq.client.HTTPClient(Agent(reactor, pool=self._pool))
        #: "basic" once upstream asked for Basic auth, else None
        self._scheme = None
        #: scope -> (token, expiry on ``clock``)
        self._tokens = {}
        #: token requests under way, by scope (concurrent pulls share one)
        self._fetching = {}
        #: how many tokens were fetched (tests check the cache works)
        self.tokens_fetched = 0

    def body(self, response, limit=None):
        """``response``'s body, read as it arrives; a stall longer than the
        upstream timeout breaks it, and so do more than ``limit`` bytes."""
        return ResponseBody(response, self.timeout, self._reactor, limit)

    def blob_body(self, response, digest):
        """The body of a blob's GET ``response``, taken up to the size
        upstream announced (a longer body breaks off there) or, without
        one, up to ``max_blob_size``; an announced size above that is
        refused before any byte is read."""
        length = response.length if isinstance(response.length, int) else None
        if length is not None and self.max_blob_size is not None and length > self.max_blob_size:
            self.body(response).abort()
            raise errors.UpstreamUnavailable(
                "the upstream registry's blob is larger than proxy.maxblobsize",
                detail={"digest": str(digest), "size": length, "maxblobsize": self.max_blob_size},
            )
        return self.body(response, self.max_blob_size if length is None else length)

    def close(self):
        """Close the idle connections (the service is stopping)."""
        return self._pool.closeCachedConnections()

    # the registry API

    async def manifest(self, method, name, reference, accept=None):
        """HEAD or GET a manifest: the response (None if upstream has none)."""
        return await self._request(
            method, name, f"manifests/{reference}", {"Accept": accept or ALL_MANIFEST_TYPES}
        )

    async def blob(self, method, name, digest):
        """HEAD or GET a blob: the response, body unread (None if upstream has none).
        Redirects (Docker Hub's CDN) are followed."""
        return await self._request(method, name, f"blobs/{digest}", {})

    async def tags(self, name):
        """Every tag upstream has for repository ``name``, sorted, following
        its pages (``Link: <...>; rel="next"``); None when upstream has no
        such repository."""
        found = set()
        query = f"n={TAGS_PAGE}"
        for _ in range(MAX_TAG_PAGES):
            response = await self._request(
                "GET", name, f"tags/list?{query}", {"Accept": "application/json"}
            )
            if response is None:
                return None
            links = header_values(response, "link")
            text = await self.body(response).read_all(SMALL_BODY_LIMIT)
            try:
                tags = json.loads(text).get("tags") or []
            except (ValueError, AttributeError):
                raise errors.UpstreamUnavailable(
                    "the upstream registry sent a tag list that is not JSON",
                    detail={"upstream": self.url, "name": name},
                ) from None
            found.update(tag for tag in tags if isinstance(tag, str))
            query = _next_page_query(links)
            if query is None:
                break
        return valid_tags(sorted(found))  # nothing that could not be a tag

    async def _request(self, method, name, path, headers):
        scope = f"repository:{name}:pull"
        url = f"{self.url}/v2/{name}/{path}"
        retried = False
        while True:
            sent = dict(headers)
            authorization = self._authorization(scope)
            if authorization is not None:
                sent["Authorization"] = authorization
            response = await self._send(method, url, sent)
            if response.code != 401 or retried:
                break
            challenges = header_values(response, "www-authenticate")
            retried = True
            if not await self._answer(challenges, scope):
                break  # nothing better to send: this 401 is the answer
            await discard(response)
        if response.code < 300:
            return response
        await discard(response)
        if response.code == 404:
            return None
        if response.code == 401 or (response.code == 403 and self._basic is None):
            # An anonymous caller denied (a token server's anonymous token
            # without the scope) lacks credentials, as a 401 says.
            raise errors.UpstreamUnauthorized(
                "the upstream registry asks for credentials"
                + (
                    " and refused the ones configured"
                    if self._basic
                    else "; configure proxy.username and proxy.password"
                ),
                detail={"upstream": self.url, "name": name},
            )
        if response.code == 403:
            raise errors.Denied(
                "the upstream registry denied the pull-through cache's user access",
                detail={"upstream": self.url, "name": name},
            )
        raise errors.UpstreamUnavailable(
            f"the upstream registry answered {response.code}",
            detail={"upstream": self.url, "status": response.code},
        )

    async def _send(self, method, url, headers):
        try:
            return await self._client.request(
                method,
                url,
                headers=headers,
                unbuffered=True,
                timeout=self.timeout,
            )
        except Exception as error:
            log.warn(
                "upstream {method} {url} failed: {error}",
                method=method,
                url=url,
                error=str(error) or type(error).__name__,
            )
            raise errors.UpstreamUnavailable(
                "cannot reach the upstream registry",
                detail={"upstream": self.url, "reason": str(error) or type(error).__name__},
            ) from None

    # authentication

    def _authorization(self, scope):
        cached = self._tokens.get(scope)
        if cached is not None:
            if cached[1] > self._clock():
                return f"Bearer {cached[0]}"
            del self._tokens[scope]
        if self._scheme == "basic":
            return self._basic
        return None

    async def _answer(self, challenges, scope):
        """Prepare credentials for a 401's challenges; False if there is
        nothing better to send than what was sent."""
        parsed = [WWWAuthenticate.from_header(value) for value in challenges]
        for challenge in parsed:
            if challenge is not None and challenge.type == "bearer":
                await self._fetch_token(dict(challenge.parameters), scope)
                return True
        for challenge in parsed:
            if challenge is not None and challenge.type == "basic" and self._basic is not None:
                if self._scheme == "basic":
                    return False  # they were sent and refused
                self._scheme = "basic"
                return True
        return False

    async def _fetch_token(self, parameters, scope):
        """One token request per scope at a time: concurrent pulls of one
        repository wait for the same answer."""
        # Each caller gets its own Deferred: cancelling one must not cancel
        # the request the others wait for.
        waiter = defer.Deferred()
        waiters = self._fetching.get(scope)
        if waiters is not None:
            waiters.append(waiter)
        else:
            waiters = self._fetching[scope] = [waiter]

            def done(result):
                del self._fetching[scope]
                for each in waiters:
                    if not each.called:  # a cancelled waiter (its client left) is done
                        each.callback(result)

            defer.ensureDeferred(self._token_request(parameters, scope)).addBoth(done)
        return await waiter

    async def _token_request(self, parameters, scope):
        realm = parameters.get("realm")
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise errors.UpstreamUnavailable(
                "the upstream registry's token challenge has no usable realm",
                detail={"realm": realm},
            )
        query = []
        if parameters.get("service"):
            query.append(("service", parameters["service"]))
        query.append(("scope", parameters.get("scope") or scope))
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {"Authorization": self._basic} if self._basic is not None else {}
        response = await self._send("GET", url, headers)
        body = self.body(response)
        text = await body.read_all(SMALL_BODY_LIMIT)
        if response.code in (401, 403):
            raise errors.UpstreamUnauthorized(
                "the upstream registry's token server refused "
                + (
                    "the configured credentials"
                    if self._basic
                    else "an anonymous token; configure proxy.username and proxy.password"
                ),
                detail={"upstream": self.url, "status": response.code},
            )
        if response.code != 200:
            raise errors.UpstreamUnavailable(
                f"the upstream registry's token server answered {response.code}",
                detail={"upstream": self.url, "status": response.code},
            )
        try:
            document = json.loads(text)
            token = document.get("token") or document.get("access_token")
            lifetime = float(document.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise errors.UpstreamUnavailable("the upstream registry's token server sent no token")
        self.tokens_fetched += 1
        self._tokens[scope] = (token, self._clock() + max(lifetime - TOKEN_MARGIN, 1.0))
        return token

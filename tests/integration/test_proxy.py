"""The pull-through cache (proxy.remoteurl) between a real upstream registryd
and a treq client, both on loopback ports: caching, stale serving, tag
moves, Basic and token auth upstream, refusals, streaming, clean-up after a
client leaves, corrupt upstream content, and TTL expiry."""

import hashlib
import json
import os
import socket
import time

import pytest_twisted
from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer

from tests import certs
from tests.integration.test_auth_api import (
    ACCESS,
    ALICE,
    HTPASSWD,
    basic,
    push_blob,
    request,
    serve,
)
from tests.integration.test_auth_api import stop as _stop
from tests.service_support import start_service, wait_for
from tests.support import sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

PROXY_CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
proxy:
  remoteurl: {remote}
"""


def image_manifest(config, layer):
    """The bytes of a one-layer OCI image manifest."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()


async def push_image(upstream, name, tag, headers=None, layer=None):
    """Push a one-layer OCI image; returns (manifest bytes, digest, {digest: blob bytes})."""
    headers = headers or {}
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": os.urandom(8).hex()}).encode()
    layer = os.urandom(3000) if layer is None else layer
    blobs = {}
    for data in (config, layer):
        blobs[await push_blob(upstream, name, data, headers)] = data
    manifest = image_manifest(config, layer)
    response = await request(
        upstream,
        "PUT",
        f"{name}/manifests/{tag}",
        {**headers, "Content-Type": OCI_MANIFEST},
        manifest,
    )
    assert response.code == 201, await response.content()
    await response.content()
    return manifest, sha256(manifest), blobs


async def stop(upstream):
    """Stop an upstream registry (once: tests stop it early on purpose),
    also closing the connections the proxy keeps open to it."""
    if not getattr(upstream, "stopped", False):
        upstream.stopped = True
        await _stop(upstream)
        for channel in list(upstream.port.factory.channels):
            channel.transport.abortConnection()


async def start_proxy(tmp_path, remote, extra=""):
    base = tmp_path / "proxy"
    base.mkdir(parents=True)
    return await start_service(base, PROXY_CONFIG + extra, remote=remote)


async def get(proxy, path, method="GET", headers=None):
    response = await proxy.client.request(method, proxy.v2(path), headers=headers or {})
    return response.code, response.headers, await response.content()


def header(headers, name):
    values = headers.getRawHeaders(name)
    return values[0] if values else None


def codes(body):
    return [error["code"] for error in json.loads(body)["errors"]]


def proxy_root(tmp_path):
    return tmp_path / "proxy" / "registry-data" / "docker" / "registry" / "v2"


def blob_file(root, digest):
    hex_digest = digest.split(":", 1)[1]
    return root / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"


def uploads_left(root, name):
    directory = root / "repositories" / name / "_uploads"
    return sorted(os.listdir(directory)) if directory.exists() else []


@pytest_twisted.async_yield_fixture
async def pair(tmp_path):
    """An open upstream registryd and a proxy in front of it."""
    upstream = await serve(tmp_path / "upstream")
    proxy = await start_proxy(tmp_path, upstream.url)
    yield upstream, proxy
    await proxy.stop()
    await stop(upstream)


async def pull(proxy, name, reference, blobs):
    """Pull an image through the proxy, checking every byte; returns the manifest."""
    status, headers, body = await get(
        proxy, f"{name}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
    )
    assert status == 200, body
    assert header(headers, "Docker-Content-Digest") == sha256(body)
    assert header(headers, "Content-Type") == OCI_MANIFEST
    for digest, data in blobs.items():
        status, headers, got = await get(proxy, f"{name}/blobs/{digest}")
        assert status == 200 and got == data, (status, got[:200])
        assert header(headers, "Docker-Content-Digest") == digest
    return body


@pytest_twisted.ensureDeferred
async def test_pull_through_caches_and_serves_when_upstream_is_gone(pair, tmp_path):
    from registryd.ops import metrics

    def counts():
        return {
            (kind, result): metrics.sample(
                "registryd_proxy_requests_total", type=kind, result=result
            )
            for kind in ("blob", "manifest")
            for result in ("hit", "miss", "stale")
        }

    def pulled(kind):
        return metrics.sample("registryd_proxy_pulled_bytes_total", type=kind)

    upstream, proxy = pair
    manifest, digest, blobs = await push_image(upstream, "library/app", "v1")
    _, never_pulled, _ = await push_image(upstream, "library/app", "v2")
    before, blob_bytes, manifest_bytes = counts(), pulled("blob"), pulled("manifest")
    assert await pull(proxy, "library/app", "v1", blobs) == manifest
    after = counts()
    assert after[("manifest", "miss")] - before[("manifest", "miss")] == 1
    assert after[("blob", "miss")] - before[("blob", "miss")] == len(blobs)
    assert pulled("blob") - blob_bytes == sum(len(data) for data in blobs.values())
    assert pulled("manifest") - manifest_bytes == len(manifest)
    root = proxy_root(tmp_path)
    for blob_digest, data in blobs.items():
        assert blob_file(root, blob_digest).read_bytes() == data
    link = root / "repositories/library/app/_manifests/tags/v1/current/link"
    assert link.read_text() == digest
    assert uploads_left(root, "library/app") == []

    await stop(upstream)  # from now on only the cache answers
    before = counts()
    assert await pull(proxy, "library/app", "v1", blobs) == manifest  # stale but available
    assert await pull(proxy, "library/app", digest, blobs) == manifest
    after = counts()
    assert after[("manifest", "stale")] - before[("manifest", "stale")] == 1
    assert after[("manifest", "hit")] - before[("manifest", "hit")] == 1
    assert after[("blob", "hit")] - before[("blob", "hit")] == 2 * len(blobs)
    status, headers, body = await get(proxy, f"library/app/blobs/{next(iter(blobs))}", "HEAD")
    assert status == 200 and body == b""
    assert int(header(headers, "Content-Length")) == len(next(iter(blobs.values())))
    status, _, body = await get(proxy, "library/app/manifests/v2")
    assert status == 503 and codes(body) == ["UNAVAILABLE"]
    assert b"cannot reach the upstream registry" in body
    status, _, body = await get(proxy, f"library/app/manifests/{never_pulled}")
    assert status == 503 and codes(body) == ["UNAVAILABLE"]
    status, _, body = await get(proxy, f"library/app/blobs/{sha256(b'never pushed')}")
    assert status == 503 and codes(body) == ["UNAVAILABLE"]
    # catalog and tags list are what is cached
    assert json.loads((await get(proxy, "_catalog"))[2]) == {"repositories": ["library/app"]}
    assert json.loads((await get(proxy, "library/app/tags/list"))[2])["tags"] == ["v1"]


@pytest_twisted.ensureDeferred
async def test_a_tag_moved_upstream_is_followed(pair):
    upstream, proxy = pair
    first, first_digest, first_blobs = await push_image(upstream, "team/app", "latest")
    assert await pull(proxy, "team/app", "latest", first_blobs) == first
    second, second_digest, second_blobs = await push_image(upstream, "team/app", "latest")
    assert second_digest != first_digest
    assert await pull(proxy, "team/app", "latest", second_blobs) == second
    # the first one is still there by digest, from the cache
    assert await pull(proxy, "team/app", first_digest, first_blobs) == first
    # HEAD answers with the current digest too
    status, headers, body = await get(proxy, "team/app/manifests/latest", "HEAD")
    assert status == 200 and body == b""
    assert header(headers, "Docker-Content-Digest") == second_digest


@pytest_twisted.ensureDeferred
async def test_tags_list_is_upstream_s(pair):
    """As Distribution's proxy: the tags list is upstream's, all of it
    (upstream's pages followed), whatever has been pulled; paginated here
    with n and last."""
    from registryd.proxy import upstream as upstream_module

    upstream, proxy = pair
    for tag in ("v1", "v2", "v3"):
        await push_image(upstream, "team/tags", tag)
    original = upstream_module.TAGS_PAGE
    upstream_module.TAGS_PAGE = 2  # two upstream pages for three tags
    try:
        status, _, body = await get(proxy, "team/tags/tags/list")
    finally:
        upstream_module.TAGS_PAGE = original
    assert status == 200 and json.loads(body) == {"name": "team/tags", "tags": ["v1", "v2", "v3"]}
    status, headers, body = await get(proxy, "team/tags/tags/list?n=2")
    assert json.loads(body)["tags"] == ["v1", "v2"]
    assert header(headers, "Link") == '</v2/team/tags/tags/list?n=2&last=v2>; rel="next"'
    status, _, body = await get(proxy, "team/nothing/tags/list")
    assert status == 404 and codes(body) == ["NAME_UNKNOWN"]


@pytest_twisted.ensureDeferred
async def test_what_upstream_lacks_is_unknown(pair):
    upstream, proxy = pair
    await push_image(upstream, "team/app", "v1")
    status, _, body = await get(proxy, "team/app/manifests/nope")
    assert status == 404 and codes(body) == ["MANIFEST_UNKNOWN"]
    status, _, body = await get(proxy, f"team/app/manifests/{sha256(b'x')}")
    assert status == 404 and codes(body) == ["MANIFEST_UNKNOWN"]
    status, _, body = await get(proxy, f"team/app/blobs/{sha256(b'nothing')}")
    assert status == 404 and codes(body) == ["BLOB_UNKNOWN"]
    status, _, body = await get(proxy, f"team/app/blobs/{sha256(b'nothing')}", "HEAD")
    assert status == 404 and body == b""


@pytest_twisted.ensureDeferred
async def test_an_uncached_blob_answers_head_and_ranges_as_upstream_has_it(pair, tmp_path):
    """A HEAD of a blob the cache lacks says upstream's size (and caches
    nothing); a ranged GET of it gets the whole blob (it can only be read
    from its start while it is fetched) and caches it."""
    upstream, proxy = pair
    layer = os.urandom(100_000)
    await push_image(upstream, "team/app", "v1", layer=layer)
    digest = sha256(layer)
    status, headers, body = await get(proxy, f"team/app/blobs/{digest}", "HEAD")
    assert status == 200 and body == b""
    assert header(headers, "Content-Length") == str(len(layer))
    assert header(headers, "Docker-Content-Digest") == digest
    root = proxy_root(tmp_path)
    assert not blob_file(root, digest).exists()
    status, headers, body = await get(
        proxy, f"team/app/blobs/{digest}", headers={"Range": "bytes=10-19"}
    )
    assert status == 200 and body == layer
    assert header(headers, "Accept-Ranges") is None
    await wait_for(lambda: blob_file(root, digest).exists())
    # cached now: ranges as for any stored blob
    status, headers, body = await get(
        proxy, f"team/app/blobs/{digest}", headers={"Range": "bytes=10-19"}
    )
    assert status == 206 and body == layer[10:20]


@pytest_twisted.ensureDeferred
async def test_pushes_uploads_and_deletes_are_refused(pair, tmp_path):
    upstream, proxy = pair
    manifest, digest, blobs = await push_image(upstream, "team/app", "v1")
    await pull(proxy, "team/app", "v1", blobs)
    before = sorted(str(p) for p in (tmp_path / "proxy" / "registry-data").rglob("*"))
    data = os.urandom(5000)
    attempts = [
        ("POST", "team/app/blobs/uploads/", None),
        ("POST", f"team/app/blobs/uploads/?digest={sha256(data)}", data),
        ("PUT", "team/app/manifests/v2", manifest),
        ("DELETE", f"team/app/manifests/{digest}", None),
        ("DELETE", f"team/app/blobs/{next(iter(blobs))}", None),
    ]
    for method, path, body in attempts:
        response = await proxy.client.request(method, proxy.v2(path), data=body)
        text = await response.content()
        assert response.code == 405, (method, path, text)
        assert codes(text) == ["UNSUPPORTED"]
        assert b"pull-through cache" in text
        assert response.headers.getRawHeaders("Allow") == ["GET, HEAD"]
    assert sorted(str(p) for p in (tmp_path / "proxy" / "registry-data").rglob("*")) == before


@pytest_twisted.ensureDeferred
async def test_upstream_with_basic_auth(tmp_path):
    (tmp_path / "htpasswd").write_text(HTPASSWD)
    upstream = await serve(
        tmp_path / "upstream",
        auth={
            "htpasswd": {"realm": "upstream", "path": str(tmp_path / "htpasswd")},
            "access": ACCESS,
        },
    )
    _, _, private = await push_image(upstream, "team/app", "v1", basic(*ALICE))
    public, _, public_blobs = await push_image(upstream, "public/tools", "v1", basic(*ALICE))
    with_credentials = await start_proxy(
        tmp_path / "a", upstream.url, "  username: alice\n  password: wonderland\n"
    )
    anonymous = await start_proxy(tmp_path / "b", upstream.url)
    wrong = await start_proxy(tmp_path / "c", upstream.url, "  username: alice\n  password: nope\n")
    try:
        await pull(with_credentials, "team/app", "v1", private)
        assert await pull(anonymous, "public/tools", "v1", public_blobs) == public
        for proxy in (anonymous, wrong):
            status, headers, body = await get(proxy, "team/app/manifests/v1")
            assert status == 401 and codes(body) == ["UNAUTHORIZED"], body
            assert header(headers, "WWW-Authenticate") is None  # the client cannot help
            status, _, body = await get(proxy, f"team/app/blobs/{next(iter(private))}")
            assert status == 401 and codes(body) == ["UNAUTHORIZED"]
        assert b"configure proxy.username" in (await get(anonymous, "team/app/manifests/v1"))[2]
    finally:
        for proxy in (with_credentials, anonymous, wrong):
            await proxy.stop()
        await stop(upstream)


@pytest_twisted.ensureDeferred
async def test_upstream_with_token_auth(tmp_path):
    (tmp_path / "htpasswd").write_text(HTPASSWD)
    (tmp_path / "upstream").mkdir()
    key_path = certs.write(tmp_path / "upstream", "token.key", certs.key_pem(certs.new_key()))
    upstream = await serve(
        tmp_path / "upstream",
        auth={
            "htpasswd": {"realm": "upstream", "path": str(tmp_path / "htpasswd")},
            "token": {"service": "registry.test", "issuer": "registryd-test"},
            "tokenserver": {"key": key_path},
            "access": ACCESS,
        },
    )
    response = await request(
        upstream,
        "GET",
        f"{upstream.url}/auth/token?service=registry.test"
        "&scope=repository:team/app:pull,push&scope=repository:public/tools:"
        "pull,push",
        basic(*ALICE),
    )
    token = json.loads(await response.content())["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    _, _, private = await push_image(upstream, "team/app", "v1", bearer)
    public, _, public_blobs = await push_image(upstream, "public/tools", "v1", bearer)
    with_credentials = await start_proxy(
        tmp_path / "a", upstream.url, "  username: alice\n  password: wonderland\n"
    )
    anonymous = await start_proxy(tmp_path / "b", upstream.url)
    try:
        await pull(with_credentials, "team/app", "v1", private)
        cache = with_credentials.service.proxy
        assert cache.upstream.tokens_fetched == 1  # one token for the manifest and both blobs
        assert await pull(anonymous, "public/tools", "v1", public_blobs) == public
        status, headers, body = await get(anonymous, "team/app/manifests/v1")
        assert status == 401 and codes(body) == ["UNAUTHORIZED"], body
        assert header(headers, "WWW-Authenticate") is None
    finally:
        for proxy in (with_credentials, anonymous):
            await proxy.stop()
        await stop(upstream)


@pytest_twisted.ensureDeferred
async def test_a_big_blob_streams_through(pair, tmp_path):
    """The client's first bytes arrive before the blob is even in the
    cache: the proxy streams, it does not fetch first and serve after."""
    from treq import collect

    upstream, proxy = pair
    layer = os.urandom(64 * 1024 * 1024)
    _, _, blobs = await push_image(upstream, "big/app", "v1", layer=layer)
    digest = sha256(layer)
    del layer, blobs
    target = blob_file(proxy_root(tmp_path), digest)
    response = await proxy.client.get(proxy.v2(f"big/app/blobs/{digest}"), unbuffered=True)
    assert response.code == 200
    assert response.length == 64 * 1024 * 1024  # twisted keeps Content-Length out of headers
    hasher, seen = hashlib.sha256(), {"bytes": 0, "cached_at_first_byte": None}

    def received(data):
        if seen["cached_at_first_byte"] is None:
            seen["cached_at_first_byte"] = target.exists()
        seen["bytes"] += len(data)
        hasher.update(data)

    await collect(response, received)
    assert seen["bytes"] == 64 * 1024 * 1024
    assert "sha256:" + hasher.hexdigest() == digest
    assert seen["cached_at_first_byte"] is False
    await wait_for(target.exists)
    assert target.stat().st_size == 64 * 1024 * 1024
    assert uploads_left(proxy_root(tmp_path), "big/app") == []


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_mid_blob_leaves_nothing_behind(pair, tmp_path):
    from twisted.internet.threads import deferToThread

    upstream, proxy = pair
    layer = os.urandom(24 * 1024 * 1024)
    _, _, blobs = await push_image(upstream, "team/app", "v1", layer=layer)
    digest = sha256(layer)
    port = int(proxy.url.rsplit(":", 1)[1])

    def read_a_little_and_leave():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET /v2/team/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got = b""
            while len(got) < 300_000:
                got += sock.recv(65536)
            return got

    got = await deferToThread(read_a_little_and_leave)
    assert got.startswith(b"HTTP/1.1 200")
    root = proxy_root(tmp_path)
    await wait_for(lambda: uploads_left(root, "team/app") == [])
    assert not blob_file(root, digest).exists()
    # and the next client gets all of it, cached
    status, _, body = await get(proxy, f"team/app/blobs/{digest}")
    assert status == 200 and body == layer
    assert blob_file(root, digest).read_bytes() == layer


@pytest_twisted.ensureDeferred
async def test_concurrent_fetches_of_one_blob(pair, tmp_path):
    from twisted.internet import defer

    upstream, proxy = pair
    layer = os.urandom(3 * 1024 * 1024 + 17)
    await push_image(upstream, "team/app", "v1", layer=layer)
    results = await defer.gatherResults(
        [defer.ensureDeferred(get(proxy, f"team/app/blobs/{sha256(layer)}")) for _ in range(4)]
    )
    assert [(status, body == layer) for status, _, body in results] == [(200, True)] * 4
    root = proxy_root(tmp_path)
    assert blob_file(root, sha256(layer)).read_bytes() == layer
    assert uploads_left(root, "team/app") == []


@pytest_twisted.ensureDeferred
async def test_corrupt_upstream_content_is_neither_cached_nor_served_whole(pair, tmp_path):
    upstream, proxy = pair
    small = os.urandom(2000)
    big = os.urandom(3 * 1024 * 1024)
    manifest, digest, _ = await push_image(upstream, "team/app", "v1", layer=small)
    await push_blob(upstream, "team/app", big, {})
    upstream_v2 = upstream.root / "docker" / "registry" / "v2"
    for data in (small, big):
        blob_file(upstream_v2, sha256(data)).write_bytes(b"X" * len(data))  # same size
    # still a valid manifest, other bytes
    blob_file(upstream_v2, digest).write_bytes(json.dumps(json.loads(manifest), indent=1).encode())
    root = proxy_root(tmp_path)
    status, _, body = await get(proxy, f"team/app/blobs/{sha256(small)}")
    assert status == 503 and codes(body) == ["UNAVAILABLE"]
    assert b"does not match" in body
    # a big one has started streaming: the connection is cut before the end
    response = await proxy.client.get(proxy.v2(f"team/app/blobs/{sha256(big)}"))
    try:
        body = await response.content()
    except Exception:
        body = None
    assert body is None or len(body) < len(big)
    status, _, body = await get(proxy, "team/app/manifests/v1")
    assert status == 503 and b"does not match its digest" in body
    for data in (small, big, manifest):
        assert not blob_file(root, sha256(data)).exists()
    await wait_for(lambda: uploads_left(root, "team/app") == [])


@pytest_twisted.ensureDeferred
async def test_expiry_removes_cached_manifests_then_gc_their_blobs(pair, tmp_path):
    from registryd.ops.gc import collect_garbage
    from registryd.proxy.expiry import expire

    upstream, proxy = pair
    manifest, digest, blobs = await push_image(upstream, "team/app", "v1")
    await pull(proxy, "team/app", "v1", blobs)
    registry = proxy.service.registry
    assert "proxy cache expiry" in proxy.service.namedServices  # the timer (ttl 168h)
    ttl = 168 * 3600.0
    report = await expire(registry, ttl)
    assert report.removed == [] and report.kept == 1
    report = await expire(registry, ttl, clock=lambda: time.time() + ttl + 60)
    assert report.removed == [("team/app", digest, ["v1"])]
    root = proxy_root(tmp_path)
    assert not (root / "repositories/team/app/_manifests/tags/v1").exists()
    assert not (root / "repositories/team/app/_manifests/revisions/sha256" / digest[7:]).exists()
    await collect_garbage(registry, grace_period=0)
    for blob_digest in blobs:
        assert not blob_file(root, blob_digest).exists()
    # the next pull fetches again; with upstream gone there is nothing stale to serve
    assert await pull(proxy, "team/app", "v1", blobs) == manifest
    await expire(registry, ttl, clock=lambda: time.time() + ttl + 60)
    await stop(upstream)
    status, _, body = await get(proxy, "team/app/manifests/v1")
    assert status == 503 and codes(body) == ["UNAVAILABLE"]


@pytest_twisted.ensureDeferred
async def test_an_upstream_that_stalls_mid_blob_is_given_up(tmp_path):
    """An upstream that sends part of a blob and then nothing: the proxy
    gives up after the upstream timeout, cuts the client off (a short body,
    never a complete wrong one) and keeps nothing."""
    from twisted.internet import reactor
    from twisted.web import server
    from twisted.web.resource import Resource

    data = os.urandom(2 * 1024 * 1024)
    digest = sha256(data)

    class Stalling(Resource):
        isLeaf = True

        def render(self, request):
            if request.path == b"/v2/":
                return b"{}"
            request.setHeader(b"Content-Length", b"%d" % len(data))
            request.setHeader(b"Docker-Content-Digest", digest.encode())
            if request.method == b"HEAD":
                return b""
            request.write(data[: len(data) // 2])
            return server.NOT_DONE_YET  # and never finishes

    from registryd.ops import metrics

    site = server.Site(Stalling())
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    proxy = await start_proxy(tmp_path, f"http://127.0.0.1:{port.getHost().port}")
    proxy.service.proxy.upstream.timeout = 0.5
    pulled = metrics.sample("registryd_proxy_pulled_bytes_total", type="blob")
    try:
        response = await proxy.client.get(proxy.v2(f"team/app/blobs/{digest}"))
        try:
            body = await response.content()
        except Exception:
            body = None
        assert body is None or len(body) < len(data)
        # what was relayed is what upstream sent before it stalled
        assert (
            metrics.sample("registryd_proxy_pulled_bytes_total", type="blob") - pulled
            == len(data) // 2
        )
        root = proxy_root(tmp_path)
        assert not blob_file(root, digest).exists()
        await wait_for(lambda: uploads_left(root, "team/app") == [])
    finally:
        await proxy.stop()
        await port.stopListening()


class Endless:
    """A twisted.web upstream whose blob GETs start with the blob's bytes
    and then stream on without end (chunked, or under a claimed
    ``Content-Length``), for as long as the proxy reads."""

    def __init__(self, data, claimed_length=None):
        from twisted.internet import reactor
        from twisted.web import server
        from twisted.web.resource import Resource

        endless = self

        class Registry(Resource):
            isLeaf = True

            def render(self, request):
                if request.path == b"/v2/":
                    return b"{}"
                if endless.claimed_length is not None:
                    request.setHeader(b"Content-Length", b"%d" % endless.claimed_length)
                if request.method == b"HEAD":
                    return b""
                endless.stream(request)
                return server.NOT_DONE_YET

        self.data = data
        self.claimed_length = claimed_length
        self.sent = 0
        self.port = reactor.listenTCP(0, server.Site(Registry()), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def stream(self, request):
        endless = self

        @implementer(IPullProducer)
        class Zeros:
            """Another 64 KiB each time the proxy's side takes more."""

            def resumeProducing(self):
                request.write(b"\0" * 65536)
                endless.sent += 65536

            def stopProducing(self):
                pass

        request.write(self.data)
        self.sent += len(self.data)
        request.registerProducer(Zeros(), False)


@pytest_twisted.ensureDeferred
async def test_an_upstream_that_sends_more_than_the_blob_is_cut_off(tmp_path):
    """Upstream streams on past the blob's end without a Content-Length:
    the proxy takes at most proxy.maxblobsize bytes (the metric of bytes
    pulled says so), cuts the client off with a short body, caches
    nothing; an announced size above proxy.maxblobsize is refused before
    a byte is relayed."""
    from registryd.ops import metrics

    data = os.urandom(256 * 1024)
    digest = sha256(data)
    limit = 4 * 1024 * 1024
    upstream = Endless(data)
    proxy = await start_proxy(tmp_path, upstream.url, f"  maxblobsize: {limit}\n")
    root = proxy_root(tmp_path)
    try:
        pulled = metrics.sample("registryd_proxy_pulled_bytes_total", type="blob")
        response = await proxy.client.get(proxy.v2(f"team/app/blobs/{digest}"))
        try:
            body = await response.content()
        except Exception:
            body = None
        assert body is None or len(body) < limit
        assert metrics.sample("registryd_proxy_pulled_bytes_total", type="blob") - pulled <= limit
        assert not blob_file(root, digest).exists()
        await wait_for(lambda: uploads_left(root, "team/app") == [])

        upstream.claimed_length = limit + 1
        status, _, body = await get(proxy, f"team/app/blobs/{digest}")
        assert status == 503 and codes(body) == ["UNAVAILABLE"]
        assert b"larger than proxy.maxblobsize" in body
        assert metrics.sample("registryd_proxy_pulled_bytes_total", type="blob") - pulled <= limit
        assert not blob_file(root, digest).exists()
    finally:
        await proxy.stop()
        await upstream.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_upstream_that_sends_another_size_than_it_announced(tmp_path):
    """HEAD announces one size, GET sends another (more bytes): the client
    gets an error before any byte, and nothing is kept."""
    from twisted.internet import reactor
    from twisted.web import server
    from twisted.web.resource import Resource

    data = os.urandom(300_000)
    digest = sha256(data)

    class Inconsistent(Resource):
        isLeaf = True

        def render(self, request):
            if request.path == b"/v2/":
                return b"{}"
            request.setHeader(b"Docker-Content-Digest", digest.encode())
            if request.method == b"HEAD":
                request.setHeader(b"Content-Length", b"%d" % len(data))
                return b""
            return data + b"and then some"

    port = reactor.listenTCP(0, server.Site(Inconsistent()), interface="127.0.0.1")
    proxy = await start_proxy(tmp_path, f"http://127.0.0.1:{port.getHost().port}")
    try:
        status, _, body = await get(proxy, f"team/app/blobs/{digest}")
        assert status == 503 and codes(body) == ["UNAVAILABLE"], body[:200]
        assert b"announced a blob of one size and sent another" in body
        root = proxy_root(tmp_path)
        assert not blob_file(root, digest).exists()
        assert uploads_left(root, "team/app") == []
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_blobs_redirected_to_another_origin_without_the_credentials(tmp_path):
    """As Docker Hub does: the registry (Basic auth here) answers a blob GET
    with a 307 to a CDN on another origin.  The cache follows it, gets the
    bytes, and the upstream credentials are not sent to the CDN."""
    import base64

    from twisted.internet import reactor
    from twisted.web import server
    from twisted.web.resource import Resource

    layer = os.urandom(200_000)
    config = b'{"architecture": "amd64", "os": "linux"}'
    blobs = {sha256(layer): layer, sha256(config): config}
    manifest = image_manifest(config, layer)
    expected = "Basic " + base64.b64encode(b"mirror:s3cret").decode()
    cdn_seen, registry_seen = [], []

    class CDN(Resource):
        isLeaf = True

        def render_GET(self, request):
            cdn_seen.append(request.getHeader("authorization"))
            return blobs[request.postpath[-1].decode()]

    cdn_port = reactor.listenTCP(0, server.Site(CDN()), interface="127.0.0.1")
    cdn = f"http://127.0.0.1:{cdn_port.getHost().port}"

    class Registry(Resource):
        isLeaf = True

        def render(self, request):
            registry_seen.append(request.getHeader("authorization"))
            if request.getHeader("authorization") != expected:
                request.setResponseCode(401)
                request.setHeader("WWW-Authenticate", 'Basic realm="upstream"')
                return b""
            path = request.path.decode()
            if "/manifests/" in path:
                request.setHeader("Content-Type", OCI_MANIFEST)
                request.setHeader("Docker-Content-Digest", sha256(manifest))
                return manifest if request.method == b"GET" else b""
            digest = path.rsplit("/", 1)[1]
            request.setResponseCode(307)
            request.setHeader("Location", f"{cdn}/blobs/{digest}?signature=abc")
            return b""

    registry_port = reactor.listenTCP(0, server.Site(Registry()), interface="127.0.0.1")
    remote = f"http://localhost:{registry_port.getHost().port}"  # another origin than the CDN's
    proxy = await start_proxy(tmp_path, remote, "  username: mirror\n  password: s3cret\n")
    try:
        assert await pull(proxy, "library/app", "v1", blobs) == manifest
        assert cdn_seen and all(value is None for value in cdn_seen)
        assert expected in registry_seen
        root = proxy_root(tmp_path)
        assert blob_file(root, sha256(layer)).read_bytes() == layer
    finally:
        await proxy.stop()
        await registry_port.stopListening()
        await cdn_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_upstream_headers_that_are_not_utf8_get_an_answer_not_a_500(tmp_path):
    """A broken upstream's header bytes (a challenge, a digest, a Link to
    the next tags page) are taken as they come: the client gets the
    registry's answer, never an internal error."""
    from twisted.internet import reactor
    from twisted.web import server
    from twisted.web.resource import Resource

    class Garbled(Resource):
        isLeaf = True

        def render(self, request):
            if b"/tags/list" in request.path:
                request.setHeader(b"Link", b'<\xff\xfe?n=1&last=\xff>; rel="next"')
                request.setHeader(b"Content-Type", b"application/json")
                return b'{"name": "team/app", "tags": ["v1"]}'
            if b"/manifests/" in request.path:
                request.setHeader(b"Docker-Content-Digest", b"sha256:\xff")
                request.setResponseCode(401)
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="\xff\xfe"')
                return b""
            return b"{}"

    port = reactor.listenTCP(0, server.Site(Garbled()), interface="127.0.0.1")
    proxy = await start_proxy(tmp_path, f"http://127.0.0.1:{port.getHost().port}")
    try:
        status, _, body = await get(proxy, "team/app/manifests/v1")
        assert status == 503 and codes(body) == ["UNAVAILABLE"], body
        assert b"token challenge has no usable realm" in body
        status, _, body = await get(proxy, "team/app/tags/list")
        assert status == 200 and json.loads(body)["tags"] == ["v1"], body
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_cache_s_tags_are_described_and_no_repository_delete_is_offered(pair):
    """The details listing and the web interface's repository page read
    push times through the cache's tag store (the local one's), and a
    cache offers and does no repository delete."""
    upstream, proxy = pair
    _, digest, blobs = await push_image(upstream, "team/app", "v1")
    await pull(proxy, "team/app", "v1", blobs)
    status, _, body = await get(proxy, "team/app/_registryd/tags")
    assert status == 200, body
    [entry] = json.loads(body)["tags"]
    assert (entry["tag"], entry["digest"]) == ("v1", digest)
    assert entry["pushed"] is not None and entry["pulled"] is not None
    response = await proxy.client.get(proxy.url + "/ui/repositories/team/app")
    page = (await response.content()).decode()
    assert response.code == 200, page
    assert f'<td class="pushed"><time>{entry["pushed"]}</time></td>' in page
    assert 'id="remove-repository"' not in page
    response = await proxy.client.get(proxy.url + "/ui/repositories/team/app/-/remove")
    assert response.code == 405 and b"pull-through cache" in await response.content()

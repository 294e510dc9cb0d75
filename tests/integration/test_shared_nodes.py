"""Two registryd nodes (two whole RegistryServices on their own ports, one
storage root) sharing state through a real ``redis-server``: what one node
learns, the other acts on; and when Redis goes away, both keep serving.
"""

import base64
import json

import pytest_twisted
import treq

from tests.integration.test_auth_api import ALICE, HTPASSWD
from tests.service_support import start_service

NODE = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  debug:
    addr: 127.0.0.1:{debug_port}
auth:
  htpasswd:
    realm: registryd test
    path: {htpasswd}
redis:
  addr: {redis}
  dialtimeout: 500ms
  readtimeout: 500ms
  writetimeout: 500ms
"""


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest_twisted.async_yield_fixture
async def nodes(tmp_path, redis_server):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(HTPASSWD)
    started = []
    try:
        for label in "ab":
            directory = tmp_path / label
            directory.mkdir()
            started.append(await start_service(
                directory, NODE, root=str(tmp_path / "registry-data"), htpasswd=str(htpasswd),
                redis=redis_server.addr,
            ))
        yield started
    finally:
        for node in started:
            await node.stop()


async def get(node, url, headers=None):
    response = await node.client.get(url, headers=headers or {})
    return response.code, response.headers, await response.content()


@pytest_twisted.ensureDeferred
async def test_guesses_spread_over_nodes_are_braked_as_on_one(nodes):
    """Wrong passwords for alice alternate between A and B.  Alone, each
    node lets C{free} (5) failures through before braking: 10 in all.
    Sharing the count, the pair closes after 5 failures wherever they
    happened (for 1 s, then 2, 4...: the test allows for a very slow
    machine taking a whole delay between two requests, twice)."""
    a, b = nodes
    unauthorized = 0
    for attempt in range(12):
        node = (a, b)[attempt % 2]
        code, headers, body = await get(node, node.v2(""), basic("alice", f"guess{attempt}"))
        if code == 429:
            [error] = json.loads(body)["errors"]
            assert error["code"] == "TOOMANYREQUESTS" and "too many failed logins" in error["message"]
            assert int(headers.getRawHeaders("Retry-After")[0]) >= 1
            break
        assert code == 401, body
        unauthorized += 1
    else:
        raise AssertionError("12 wrong passwords over two nodes and never braked")
    assert 5 <= unauthorized <= 7
    checker = b.service.app.authorizer.checker
    runs = checker.bcrypt_runs
    code, _, _ = await get(b, b.v2(""), basic("alice", "one more"))
    assert code == 429 and checker.bcrypt_runs == runs  # refused before bcrypt


@pytest_twisted.ensureDeferred
async def test_redis_gone_nodes_serve_on_and_health_says_so(nodes, redis_server):
    a, b = nodes
    code, _, body = await get(a, a.debug_url + "/health")
    assert (code, json.loads(body)) == (200, {})
    redis_server.stop()
    # logins still work (checked by bcrypt: not yet verified on B), wrong
    # ones are 401, never 500, and the per-node brake still applies
    code, _, _ = await get(b, b.v2(""), basic(*ALICE))
    assert code == 200
    code, _, _ = await get(a, a.v2(""), basic("alice", "wrong"))
    assert code == 401
    code, _, body = await get(a, a.debug_url + "/health")
    assert code == 503 and redis_server.addr in json.loads(body)["redis"]
    redis_server.start()

    await until_healthy(a)
    code, _, _ = await get(a, a.v2(""), basic(*ALICE))
    assert code == 200


async def until_healthy(node, timeout=60.0):
    """Poll the node's /health until it is 200 again."""
    import time

    from twisted.internet import reactor, task

    deadline = time.monotonic() + timeout
    while True:
        response = await treq.get(node.debug_url + "/health", persistent=False)
        await response.content()
        if response.code == 200:
            return
        assert time.monotonic() < deadline, "/health never recovered"
        await task.deferLater(reactor, 0.05, lambda: None)

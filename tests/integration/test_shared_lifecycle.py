"""The lifecycle features on two registryd nodes (two RegistryServices on
their own ports, one storage root) sharing a real ``redis-server``: an
immutable tag cannot be created twice with different digests, a quota
cannot be overrun by spreading pushes over the nodes, and pulls made
through one node are seen by the other after a flush.
"""

import json

import pytest_twisted
from twisted.internet import defer

from tests.integration.test_health_metrics import BASE
from tests.integration.test_manifests_api import push_image, put_manifest
from tests.service_support import start_service
from tests.support import sha256

NODE = (
    BASE
    + """\
redis:
  addr: {redis}
  dialtimeout: 500ms
  readtimeout: 500ms
  writetimeout: 500ms
lifecycle:
  immutable:
    - {{repository: "team/**", tags: ["v*"]}}
  quotas:
    - {{repository: "small/**", bytes: {quota_bytes}}}
"""
)

#: the quota's bytes: one image of push_image (two 2000-byte layers, its
#: config and manifest) fits, a second one does not
QUOTA_BYTES = 7000


@pytest_twisted.async_yield_fixture
async def nodes(tmp_path, redis_server):
    started = []
    try:
        for label in "ab":
            directory = tmp_path / label
            directory.mkdir()
            started.append(
                await start_service(
                    directory,
                    NODE,
                    root=str(tmp_path / "registry-data"),
                    redis=redis_server.addr,
                    quota_bytes=QUOTA_BYTES,
                )
            )
        yield started
    finally:
        for node in started:
            await node.stop()


@pytest_twisted.ensureDeferred
async def test_an_immutable_tag_is_created_once_by_concurrent_puts_on_two_nodes(nodes):
    """For each of several new protected tags, A and B are sent a PUT of
    a different manifest at the same moment.  Each node's check of the tag
    and its write run under the tag's lock in Redis, so for every tag one
    PUT wins (201) and the other is refused (403 DENIED naming the
    winner's digest); the tag names the winner.  With a per-node lock
    both checks find the tag free and both PUTs succeed, the later
    silently moving an immutable tag."""
    a, b = nodes
    tags = [f"v{number}" for number in range(6)]
    bodies = {}
    for tag in tags:
        bodies[tag] = (await push_image(a, "team/app"), await push_image(b, "team/app"))
    racing = []
    for tag in tags:
        body_a, body_b = bodies[tag]
        racing.append(defer.ensureDeferred(put_manifest(a, "team/app", tag, body_a)))
        racing.append(defer.ensureDeferred(put_manifest(b, "team/app", tag, body_b)))
    responses = await defer.gatherResults(racing)
    for index, tag in enumerate(tags):
        pair = responses[2 * index : 2 * index + 2]
        codes = sorted(response.code for response in pair)
        assert codes == [201, 403], (tag, codes)
        winner = bodies[tag][[response.code for response in pair].index(201)]
        loser = pair[[response.code for response in pair].index(403)]
        [error] = json.loads(await loser.content())["errors"]
        assert error["code"] == "DENIED" and error["detail"]["digest"] == sha256(winner)
        for node in (a, b):
            response = await node.client.head(node.v2(f"team/app/manifests/{tag}"))
            await response.content()
            assert response.headers.getRawHeaders("Docker-Content-Digest") == [sha256(winner)]
    for response in responses:
        await response.content()

"""The lifecycle section in a whole RegistryService, from a YAML file:
immutable tags, quotas (refused as a client sees it, and in /metrics),
pull times in the details listing and written to storage when the
service stops, and retention on its interval."""

import json
import time

import pytest_twisted

from tests.integration.test_manifests_api import push_image, put_manifest
from tests.service_support import start_service

CONFIG = """\
version: 0.1
storage:
  filesystem: {{rootdirectory: {root}}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{port}
  debug: {{addr: 127.0.0.1:{debug_port}, prometheus: {{enabled: true}}}}
lifecycle:
  immutable:
    - {{repository: "team/**", tags: ["v*"]}}
  quotas:
    - {{repository: "small/**", bytes: 3000}}
  retention:
    interval: 1s
    rules:
      - {{repository: "ci/**", keep: {{tags: [keep]}}, untagged: delete}}
"""


@pytest_twisted.ensureDeferred
async def test_lifecycle_configured_in_yaml(tmp_path):
    from twisted.internet import reactor, task

    running = await start_service(tmp_path, CONFIG)
    try:
        # immutable
        first, second = [await push_image(running, "team/app", layers=1) for _ in range(2)]
        assert (await put_manifest(running, "team/app", "v1", first)).code == 201
        response = await put_manifest(running, "team/app", "v1", second)
        assert response.code == 403
        assert (
            "lifecycle.immutable[0]" in json.loads(await response.content())["errors"][0]["message"]
        )
        # quota, as a client sees it
        response = await put_manifest(
            running, "small/app", "v1", await push_image(running, "small/app", 2)
        )
        assert response.code == 403
        [error] = json.loads(await response.content())["errors"]
        assert error["code"] == "DENIED"
        assert error["message"].startswith(
            "quota lifecycle.quotas[0] (repository 'small/**', bytes 2.9 KiB) exceeded: "
            "this push would make its usage "
        )
        response = await running.client.get(f"{running.debug_url}/metrics")
        assert (
            'registryd_quota_limit_bytes{quota="lifecycle.quotas[0]"} 3000.0'
            in (await response.content()).decode()
        )
        # pull times: shown at once, written to storage when the service stops
        response = await running.client.get(running.v2("team/app/manifests/v1"))
        await response.content()
        response = await running.client.get(running.v2("team/app/_registryd/tags"))
        [entry] = json.loads(await response.content())["tags"]
        assert entry["pulled"] is not None and entry["protected"] is True
        # retention every second
        for tag in ("keep", "drop"):
            assert (
                await put_manifest(running, "ci/app", tag, await push_image(running, "ci/app", 1))
            ).code == 201

        async def ci_tags():
            response = await running.client.get(running.v2("ci/app/tags/list"))
            return json.loads(await response.content())["tags"]

        deadline = time.monotonic() + 60
        while await ci_tags() != ["keep"]:  # the timer's next run
            assert time.monotonic() < deadline, await ci_tags()
            await task.deferLater(reactor, 0.1, lambda: None)
    finally:
        await running.stop()
    from registryd.storage.drivers.filesystem import FilesystemDriver
    from registryd.storage.registry import Registry

    tags, _ = (
        await Registry(FilesystemDriver(str(tmp_path / "registry-data")))
        .repository("team/app")
        .pulls.read()
    )
    assert set(tags) == {"v1"}

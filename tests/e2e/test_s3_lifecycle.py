"""Repository lifecycle on two registryd nodes sharing one S3 bucket (a
real Swift): what one node records or enforces, the other sees.

- pull times from both nodes merge in the shared record, and each node's
  details listing shows the other's pulls once flushed;
- an immutable tag pushed through A cannot be moved through B;
- a quota counts what was pushed through A when B admits a push;
- a repository deleted through A is gone from B's catalog and tags list;
- ``python -m registryd retention --dry-run`` on the bucket reports.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from tests.e2e import tools
from tests.e2e.test_s3_nodes import two_nodes
from tests.e2e.tools import get_manifest, http_request, make_image, push_image

pytestmark = pytest.mark.e2e

LIFECYCLE = {
    "immutable": [{"repository": "life/**", "tags": ["v*"]}],
    "quotas": [{"repository": "quota/**", "bytes": 300 * 1024}],
    "retention": {
        "rules": [
            {"repository": "life/**", "keep": {"tags": ["v*", "keep-*"]}, "untagged": "delete"}
        ]
    },
}


class LifecycleNode(tools.S3Registryd):
    """An S3 node with the lifecycle section above."""

    def config(self):
        document = super().config()
        document["lifecycle"] = LIFECYCLE
        return document


@pytest.fixture(scope="module")
def nodes(swift, tmp_path_factory):
    yield from two_nodes(swift, tmp_path_factory, "lifecycle", LifecycleNode)


def details(node, name):
    response = http_request("GET", f"{node.url}/v2/{name}/_registryd/tags")
    assert response.status == 200, response.body
    return {entry["tag"]: entry for entry in response.json()["tags"]}


def eventually(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {predicate}")
        time.sleep(0.2)


def test_pull_times_from_both_nodes_merge(nodes):
    a, b = nodes
    for tag in ("v1", "v2"):
        push_image(a.url, "life/pulls", tag, make_image((1024,)))
    assert get_manifest(a.url, "life/pulls", "v1").status == 200
    assert get_manifest(b.url, "life/pulls", "v2").status == 200
    # Each node flushes every 5 s into the one record; each then sees both.
    for node in (a, b):
        eventually(
            lambda node=node: all(
                entry["pulled"] is not None for entry in details(node, "life/pulls").values()
            )
        )
    assert details(b, "life/pulls")["v1"]["protected"] is True


def test_an_immutable_tag_pushed_through_a_cannot_move_through_b(nodes):
    a, b = nodes
    push_image(a.url, "life/pinned", "v1", make_image((1024,)))
    other = make_image((2048,))
    for digest, blob in [(other["config_digest"], other["config"])] + other["layers"]:
        assert tools.push_blob(b.url, "life/pinned", blob) == digest
    response = http_request(
        "PUT",
        f"{b.url}/v2/life/pinned/manifests/v1",
        body=other["manifest"],
        headers={"Content-Type": tools.OCI_MANIFEST},
    )
    assert response.status == 403
    [error] = response.json()["errors"]
    assert error["code"] == "DENIED" and "lifecycle.immutable[0]" in error["message"]


def test_a_quota_counts_pushes_through_the_other_node(nodes):
    a, b = nodes
    push_image(a.url, "quota/one", "latest", make_image((200 * 1024,)))
    big = make_image((200 * 1024,))
    for digest, blob in [(big["config_digest"], big["config"])] + big["layers"]:
        assert tools.push_blob(b.url, "quota/two", blob) == digest
    response = http_request(
        "PUT",
        f"{b.url}/v2/quota/two/manifests/latest",
        body=big["manifest"],
        headers={"Content-Type": tools.OCI_MANIFEST},
    )
    assert response.status == 403, response.body
    [error] = response.json()["errors"]
    assert error["message"].startswith(
        "quota lifecycle.quotas[0] (repository 'quota/**', bytes 300.0 KiB) exceeded"
    )
    usage = http_request("GET", f"{b.url}/v2/quota/one/_registryd/usage").json()
    assert usage["quotas"][0]["repositories"] == 1


def test_a_repository_deleted_through_a_is_gone_on_b(nodes):
    a, b = nodes
    push_image(a.url, "gone/app", "latest", make_image((1024,)))
    assert "gone/app" in http_request("GET", f"{b.url}/v2/_catalog").json()["repositories"]
    assert http_request("DELETE", f"{a.url}/v2/gone/app/_registryd/repository").status == 202
    assert "gone/app" not in http_request("GET", f"{b.url}/v2/_catalog").json()["repositories"]
    response = http_request("GET", f"{b.url}/v2/gone/app/tags/list")
    assert response.status == 404 and response.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_retention_dry_run_on_the_bucket(nodes, tmp_path):
    a, _ = nodes
    for tag in ("drop-1", "keep-1"):
        push_image(a.url, "life/retained", tag, make_image((1024,)))
    config = tmp_path / "registryd.yaml"
    config.write_text(yaml.safe_dump(a.config()))
    env = dict(os.environ, PYTHONPATH=str(tools.REPO_ROOT))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "registryd",
            "retention",
            "--config",
            str(config),
            "--dry-run",
            "--json",
        ],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    retained = next(r for r in report["repositories"] if r["repository"] == "life/retained")
    actions = {t["tag"]: t["action"] for t in retained["tags"]}
    assert actions == {"drop-1": "delete", "keep-1": "keep"}
    assert http_request("GET", f"{a.url}/v2/life/retained/tags/list").json()["tags"] == [
        "drop-1",
        "keep-1",
    ]  # a dry run

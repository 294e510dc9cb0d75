"""Notifications side by side with Debian's docker-registry (CNCF
Distribution 2.8): the same pushes, pulls and deletes against both, each
with a webhook endpoint, must produce the same events (actions, targets,
the fields each carries) in the same envelope media type."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.e2e import tools


class Receiver:
    """A plain-thread webhook receiver (these e2e tests run no reactor)."""

    def __init__(self):
        self.events = []
        self.content_types = set()
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    receiver.content_types.add(self.headers["Content-Type"])
                    receiver.events.extend(json.loads(body)["events"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def settled(self, at_least, quiet=1.0, timeout=30):
        """The events, once at least ``at_least`` came and none for ``quiet``s."""
        deadline = time.monotonic() + timeout
        count, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if len(self.events) != count:
                count, since = len(self.events), time.monotonic()
            elif count >= at_least and time.monotonic() - since >= quiet:
                return list(self.events)
            time.sleep(0.05)
        pytest.fail(f"{len(self.events)} events after {timeout}s, expected {at_least}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def endpoint(url):
    return {
        "endpoints": [
            {"name": "interop", "url": url, "timeout": "2s", "threshold": 3, "backoff": "1s"}
        ]
    }


def exercise(base_url, image):
    """Push an image by tag, pull its manifest and a layer, delete it."""
    name = "interop/app"
    digest = tools.push_image(base_url, name, "v1", image)
    assert tools.get_manifest(base_url, name, "v1").status == 200
    layer_digest, layer = image["layers"][0]
    assert tools.get_blob(base_url, name, layer_digest) == layer
    response = tools.http_request("DELETE", f"{base_url}/v2/{name}/manifests/{digest}")
    assert response.status == 202, response


def summary(events):
    return sorted(
        (
            e["action"],
            e["target"].get("mediaType", ""),
            e["target"].get("digest", ""),
            e["target"].get("size", -1),
            e["target"].get("tag", ""),
            e["target"].get("repository", ""),
        )
        for e in events
    )


def shapes(events):
    """Which keys each action's event, target, request and source carry."""
    found = {}
    for event in events:
        key = (event["action"], "tag" in event["target"], event["target"].get("mediaType", ""))
        found[key] = (
            sorted(event),
            sorted(event["target"]),
            sorted(event["request"]),
            sorted(event["source"]),
        )
    return found


def test_same_events_as_distribution(distribution_factory, registryd_factory, tmp_path):
    image = tools.make_image(layer_sizes=(4096, 2048))
    theirs, ours = Receiver(), Receiver()
    try:
        distribution = distribution_factory(
            root=tmp_path / "distribution-root",
            extra_config={"notifications": endpoint(theirs.url)},
        )
        notifications = endpoint(ours.url)
        notifications["journal"] = {"directory": str(tmp_path / "journal")}
        registryd = registryd_factory(
            root=tmp_path / "registryd-root", extra_config={"notifications": notifications}
        )
        exercise(distribution.url, image)
        exercise(registryd.url, image)
        expected = theirs.settled(at_least=6)
        got = ours.settled(at_least=len(expected))
    finally:
        theirs.close()
        ours.close()
    assert summary(got) == summary(expected)
    assert shapes(got) == shapes(expected)
    assert (
        ours.content_types
        == theirs.content_types
        == {"application/vnd.docker.distribution.events.v1+json"}
    )

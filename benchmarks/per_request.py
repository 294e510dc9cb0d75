#!/usr/bin/env python3
"""CPU per small request, in process: the site driven without sockets.

    python benchmarks/per_request.py                 # every workload, 5000 requests each
    python benchmarks/per_request.py --requests 20000 --only manifest-tag
    python benchmarks/per_request.py --profile manifest-tag   # cProfile's top entries
    python benchmarks/per_request.py --tree /work/main        # another checkout's registryd
    python benchmarks/per_request.py --redis 127.0.0.1:6379   # with the nodes' shared state
    python benchmarks/per_request.py --redis 127.0.0.1:6379 --metadatacache on  # reads consult it

A registry is composed exactly as ``twistd registryd`` composes it
(``registryd.runtime.startup.from_config`` and ``registryd.runtime.composition.compose``:
instrumented driver, access log and metrics included) on a fresh
filesystem root, with the same configuration keys as
``benchmarks/compare.py`` gives it (no access log line, log level warn).
One keep-alive connection (``StringTransport``) then sends each workload's
request over and over; the figure is the process CPU time per request, in
microseconds: what the server spends on the request itself, without the
kernel's socket work, the client, or the noise of other processes that
make req/s figures on a shared machine wander.  Whatever the reactor has to
do for a request (a thread's answer, a callLater) is waited for, so a
request that leaves the reactor thread is counted whole (its thread's CPU
included, as process CPU time).
"""

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # tests.certs

ACCEPT = (
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json"
)


def config_text(root, auth=None, redis=None, metadatacache=None):
    text = (
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        "http:\n  addr: 127.0.0.1:0\n  headers:\n    X-Content-Type-Options: [nosniff]\n"
    )
    if redis:  # the nodes' shared state and metadata cache (registryd.storage.shared_cache)
        text += f"redis:\n  addr: {redis}\n"
        if metadatacache:  # on a filesystem, auto (the default) does not consult it
            text += f"  metadatacache: {metadatacache}\n"
    return text + (auth or "")


class Client:
    """One keep-alive connection to ``site``, without a socket."""

    def __init__(self, site, reactor):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        self.reactor = reactor
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel = site.buildProtocol(self.transport.getPeer())
        self.channel.makeConnection(self.transport)

    async def send(self, raw):
        """Send request bytes ``raw``; the response bytes."""
        from twisted.internet import task

        self.transport.clear()
        self.channel.dataReceived(raw)
        while self.channel.requests:
            # Wait for the request to finish rather than spin the reactor:
            # one waiting for a thread's answer (Redis) would count the
            # spinning as its CPU.
            await self.channel.requests[0].notifyFinish()
            await task.deferLater(self.reactor, 0, lambda: None)
        return self.transport.value()


def request(method, path, headers=(), body=b""):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:5000", "User-Agent: bench"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def status_of(response):
    return int(response.split(b" ", 2)[1])


async def push(client, name, blobs, tag):
    """Push ``blobs`` (config first) and a manifest naming them; its digest."""
    descriptors = []
    for content in blobs:
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        response = await client.send(
            request("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", body=content)
        )
        assert status_of(response) == 201, response
        descriptors.append(
            {"mediaType": "application/octet-stream", "digest": digest, "size": len(content)}
        )
    config, *layers = descriptors
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        }
    ).encode()
    response = await client.send(
        request(
            "PUT",
            f"/v2/{name}/manifests/{tag}",
            [("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            manifest,
        )
    )
    assert status_of(response) == 201, response
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), descriptors[1]["digest"]


def token_auth(workdir):
    """(auth configuration, bearer token) for ``/v2/`` with token auth: a
    token signed by a key whose self-signed certificate is the
    rootcertbundle, carried in the token's ``x5c`` header (as Distribution's
    token servers do)."""
    from benchmarks.tokens import SigningKey

    key = SigningKey(workdir)
    return key.external_token_config(), key.mint()


def workloads(manifest, layer):
    return {
        "manifest-tag": request("GET", "/v2/bench/warm/manifests/latest", [("Accept", ACCEPT)]),
        "manifest-digest": request(
            "GET", f"/v2/bench/warm/manifests/{manifest}", [("Accept", ACCEPT)]
        ),
        "manifest-head": request("HEAD", "/v2/bench/warm/manifests/latest", [("Accept", ACCEPT)]),
        "blob-head": request("HEAD", f"/v2/bench/warm/blobs/{layer}"),
        "tags-10": request("GET", "/v2/bench/warm/tags/list"),
        "v2": request("GET", "/v2/"),
    }


async def measure(client, raw, count):
    """CPU microseconds per request over ``count`` requests of ``raw``."""
    expected = status_of(await client.send(raw))
    started = time.process_time()
    for _ in range(count):
        response = await client.send(raw)
    elapsed = time.process_time() - started
    if status_of(response) != expected or expected >= 300:
        raise SystemExit(f"unexpected answer: {response[:200]!r}")
    return elapsed / count * 1e6


async def run(reactor, args):
    from twisted.internet import task

    from registryd.config import load_config
    from registryd.runtime.composition import compose
    from registryd.runtime.startup import from_config

    workdir = tempfile.mkdtemp(prefix="registryd-per-request-")
    try:
        path = os.path.join(workdir, "config.yml")
        with open(path, "w") as file:
            file.write(
                config_text(
                    os.path.join(workdir, "root"),
                    redis=args.redis,
                    metadatacache=args.metadatacache,
                )
            )
        components = compose(from_config(load_config(path), path), reactor=reactor)
        shared_cache = getattr(components.registry, "shared_cache", None)  # older trees: none
        if shared_cache is not None:
            shared_cache.startService()
            while not shared_cache.trusted:
                await task.deferLater(reactor, 0.05, lambda: None)
        client = Client(components.site, reactor)
        manifest, layer = await push(
            client,
            "bench/warm",
            [b'{"architecture":"amd64","os":"linux"}', os.urandom(1024)],
            "latest",
        )
        for index in range(9):
            response = await client.send(
                request(
                    "PUT",
                    f"/v2/bench/warm/manifests/t{index}",
                    [("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                    (
                        await client.send(
                            request(
                                "GET", f"/v2/bench/warm/manifests/{manifest}", [("Accept", ACCEPT)]
                            )
                        )
                    ).split(b"\r\n\r\n", 1)[1],
                )
            )
            assert status_of(response) == 201, response
        # Tags are pulled long after they were pushed; the tag cache
        # (registryd.storage.cache.LinkCache) keeps no link younger than
        # its settled time, so let the pushed ones age past it.
        await task.deferLater(reactor, 2.5, lambda: None)
        table = workloads(manifest, layer)
        auth, token = token_auth(workdir)
        path = os.path.join(workdir, "token.yml")
        with open(path, "w") as file:
            file.write(config_text(os.path.join(workdir, "root"), auth))
        secured = compose(from_config(load_config(path), path), reactor=reactor)
        clients = {"v2-token": Client(secured.site, reactor)}
        table["v2-token"] = request("GET", "/v2/", [("Authorization", f"Bearer {token}")])
        chosen = args.only.split(",") if args.only else list(table)
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            await measure(clients.get(args.profile, client), table[args.profile], args.requests)
            profile.disable()
            pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)
            return
        for name in chosen:
            figures = sorted(
                [
                    await measure(clients.get(name, client), table[name], args.requests)
                    for _ in range(args.rounds)
                ]
            )
            print(
                f"{name:16} {figures[len(figures) // 2]:7.1f} us/request "
                f"(rounds: {', '.join(f'{f:.1f}' for f in figures)})",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument(
        "--redis", default=None, help="HOST:PORT of a redis-server: the nodes' shared cache"
    )
    parser.add_argument(
        "--metadatacache",
        default=None,
        choices=("auto", "on", "off"),
        help="with --redis: redis.metadatacache (default auto: not consulted on a filesystem)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per workload (median)")
    parser.add_argument("--only", default=None, help="comma-separated workloads")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="WORKLOAD",
        help="profile one workload with cProfile instead",
    )
    parser.add_argument(
        "--tree", default=REPO, help="registryd source tree to measure (default: this checkout)"
    )
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.tree))  # its registryd before this one
    from twisted.internet import defer, task

    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Peak server memory while pushing and pulling one large blob.

Starts a registryd process (``twistd -n registryd``) on a fresh filesystem
root, pushes a blob of ``--size`` bytes generated on the fly (never held in
memory here either) twice -- once as a monolithic chunked-encoding POST, once
as 64 MiB PATCH chunks -- pulls it back, and samples the server's RSS every
20 ms.  The claim it checks: server memory does not grow with blob size.

    python benchmarks/memory.py --size 2G
"""

import argparse
import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = 1024 * 1024


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def blocks(size, seed=b"registryd"):
    """Deterministic pseudo-random data, one 1 MiB block at a time."""
    base = hashlib.sha512(seed).digest() * (BLOCK // 64)
    sent = 0
    counter = 0
    while sent < size:
        counter += 1
        block = counter.to_bytes(8, "big") + base[8:]
        block = block[: min(BLOCK, size - sent)]
        sent += len(block)
        yield block


def digest_of(size):
    hasher = hashlib.sha256()
    for block in blocks(size):
        hasher.update(block)
    return "sha256:" + hasher.hexdigest()


class RSSSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    def reset(self):
        self.peak = self.process.memory_info().rss


def start_registryd(root, port):
    config = os.path.join(root, "registryd.yaml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "registryd",
            "--config",
            config,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("registryd did not start")


def request(port, method, path, body=None, headers=None, encode_chunked=False):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request(
        method, path, body=body, headers=headers or {}, encode_chunked=encode_chunked
    )
    response = connection.getresponse()
    payload = response.read()
    return response, payload


def push_monolithic(port, name, size, digest):
    response, payload = request(
        port,
        "POST",
        f"/v2/{name}/blobs/uploads/?digest={digest}",
        body=blocks(size),
        headers={"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    assert response.status == 201, (response.status, payload)


def push_chunked(port, name, size, digest, chunk=64 * BLOCK):
    response, _ = request(port, "POST", f"/v2/{name}/blobs/uploads/")
    location = response.getheader("Location").split(f":{port}", 1)[1]
    offset = 0
    source = blocks(size)
    while offset < size:
        length = min(chunk, size - offset)

        def piece(n=length):
            taken = 0
            while taken < n:
                block = next(source)
                taken += len(block)
                yield block

        response, payload = request(
            port,
            "PATCH",
            location,
            body=piece(),
            headers={
                "Content-Range": f"{offset}-{offset + length - 1}",
                "Content-Length": str(length),
            },
        )
        assert response.status == 202, (response.status, payload)
        location = response.getheader("Location").split(f":{port}", 1)[1]
        offset += length
    response, payload = request(port, "PUT", f"{location}?digest={digest}")
    assert response.status == 201, (response.status, payload)


def pull(port, name, digest):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request("GET", f"/v2/{name}/blobs/{digest}")
    response = connection.getresponse()
    hasher = hashlib.sha256()
    while True:
        data = response.read(BLOCK)
        if not data:
            break
        hasher.update(data)
    assert "sha256:" + hasher.hexdigest() == digest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2G")
    parser.add_argument("--port", type=int, default=5077)
    args = parser.parse_args()
    size = parse_size(args.size)
    digest = digest_of(size)
    mib = size / BLOCK
    with tempfile.TemporaryDirectory(prefix="registryd-mem-") as root:
        process = start_registryd(root, args.port)
        try:
            sampler = RSSSampler(process.pid)
            sampler.start()
            idle = psutil.Process(process.pid).memory_info().rss
            print(f"blob {mib:.0f} MiB; server RSS at rest {idle / BLOCK:.1f} MiB")
            for label, action in [
                (
                    "monolithic POST (chunked encoding)",
                    lambda: push_monolithic(args.port, "mem/mono", size, digest),
                ),
                (
                    "PATCH in 64 MiB chunks + PUT",
                    lambda: push_chunked(args.port, "mem/chunked", size, digest),
                ),
                ("GET (pull)", lambda: pull(args.port, "mem/mono", digest)),
            ]:
                sampler.reset()
                started = time.perf_counter()
                action()
                elapsed = time.perf_counter() - started
                print(
                    f"{label:40s} {mib / elapsed:8.1f} MiB/s   peak RSS {sampler.peak / BLOCK:7.1f} MiB"
                )
            sampler.stop.set()
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()

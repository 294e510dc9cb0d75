#!/usr/bin/env python3
"""Garbage collection: registryd-gc and docker-registry garbage-collect on
copies of one directory, timed, and their results compared.

    python benchmarks/gc.py                       # 500 repositories
    python benchmarks/gc.py --repositories 2000 --delete-untagged

The data set is written directly in Distribution's on-disk layout (which
both share): per repository, ``--images`` images of a fresh config and
three layers (one of them shared across the registry), the last image
tagged and the others untagged, plus one orphan blob.  Every file is
dated two hours back, past registryd's default grace period.  Both
collectors then run on their own copy; the script prints wall time, peak
RSS and what each removed, and exits 1 if they disagree on the blobs
(with --delete-untagged they must agree too: there are no indexes here).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
V2 = "docker/registry/v2"


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    write(root / V2 / "blobs/sha256" / digest[:2] / digest / "data", data)
    return "sha256:" + digest


def link(path, digest):
    write(path / "link", digest.encode())


def build(root, repositories, images):
    shared = blob(root, b"shared layer" * 100)
    for r in range(repositories):
        repo = root / V2 / "repositories" / f"bench/repo{r}"
        for i in range(images):
            config = blob(root, json.dumps({"repo": r, "image": i}).encode())
            layers = [shared] + [blob(root, os.urandom(512)) for _ in range(2)]
            for digest in [config] + layers:
                link(repo / "_layers/sha256" / digest.split(":")[1], digest)
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": config,
                        "size": 30,
                    },
                    "layers": [
                        {
                            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": d,
                            "size": 512,
                        }
                        for d in layers
                    ],
                }
            ).encode()
            digest = blob(root, manifest)
            link(repo / "_manifests/revisions/sha256" / digest.split(":")[1], digest)
            if i == images - 1:
                link(repo / "_manifests/tags/latest/current", digest)
                link(repo / "_manifests/tags/latest/index/sha256" / digest.split(":")[1], digest)
        orphan = blob(root, os.urandom(300))
        link(repo / "_layers/sha256" / orphan.split(":")[1], orphan)
    old = time.time() - 7200
    for directory, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(directory, name), (old, old))


def config_file(directory, root):
    path = directory / f"{root.name}.yml"
    path.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
    )
    return path


#: Runs argv[1:] and prints its peak RSS (KiB) to stderr: a fresh process
#: per measurement, since RUSAGE_CHILDREN keeps the maximum over children.
_MEASURE = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def timed(command, env=None):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *map(str, command)], capture_output=True, env=env
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, command))}\n{result.stderr.decode()[-3000:]}")
    peak_kib = int(result.stderr.decode().split()[-1])
    return result.stdout.decode(), elapsed, peak_kib / 1024


def remaining_blobs(root):
    return {p.parent.name for p in (root / V2 / "blobs").rglob("data")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repositories", type=int, default=500)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--delete-untagged", action="store_true")
    options = parser.parse_args()
    flags = ["--delete-untagged"] if options.delete_untagged else []
    with tempfile.TemporaryDirectory(prefix="gcbench") as tmp:
        tmp = Path(tmp)
        original = tmp / "original"
        build(original, options.repositories, options.images)
        ours, theirs = tmp / "ours", tmp / "theirs"
        shutil.copytree(original, ours)
        shutil.copytree(original, theirs)
        total = len(remaining_blobs(original))
        print(
            f"{options.repositories} repositories, {options.repositories * options.images} "
            f"manifests, {total} blobs{' (--delete-untagged)' if flags else ''}"
        )

        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        out, ours_time, ours_rss = timed(
            [
                sys.executable,
                "-m",
                "registryd",
                "gc",
                "--config",
                config_file(tmp, ours),
                *flags,
                "--json",
            ],
            env,
        )
        report = json.loads(out)
        _, theirs_time, theirs_rss = timed(
            ["docker-registry", "garbage-collect", *flags, config_file(tmp, theirs)],
            {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
        )
        ours_left, theirs_left = remaining_blobs(ours), remaining_blobs(theirs)
        print(
            f"registryd-gc:                   {ours_time:6.2f} s, peak RSS {ours_rss:6.0f} MiB, "
            f"removed {total - len(ours_left)} blobs ({report['bytes_reclaimed']} bytes), "
            f"{len(report['manifests_removed'])} manifests"
        )
        print(
            f"docker-registry garbage-collect: {theirs_time:6.2f} s, peak RSS {theirs_rss:6.0f} MiB, "
            f"removed {total - len(theirs_left)} blobs"
        )
        same = ours_left == theirs_left
        print("same blobs left:", "yes" if same else f"NO ({len(ours_left ^ theirs_left)} differ)")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

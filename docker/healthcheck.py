"""The image's HEALTHCHECK: GET /health on the debug listener, whose address
is http.debug.addr of the image's configuration (:5001) unless
REGISTRY_HTTP_DEBUG_ADDR moves it.  Exit 0 healthy, 1 not."""

import os
import sys
import urllib.request

address = os.environ.get("REGISTRY_HTTP_DEBUG_ADDR") or ":5001"
host, _, port = address.rpartition(":")
host = host.strip("[]") or "127.0.0.1"
if host in ("0.0.0.0", "::"):
    host = "127.0.0.1"
if ":" in host:
    host = f"[{host}]"
try:
    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:  # any failure is "unhealthy", said in one line
    print(f"unhealthy: {error}", file=sys.stderr)
    sys.exit(1)

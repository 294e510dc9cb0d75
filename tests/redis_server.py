"""A real ``redis-server`` (Debian's package) on loopback for the tests of
the nodes' shared state.

It keeps nothing on disk (``--save '' --appendonly no``) and can be
stopped and started again on the same port, for the tests of what the
nodes do while Redis is away.  Missing ``redis-server`` skips the test
locally and fails it under ``CI=true`` (``tests.e2e.tools.require_tool``).
Plain synchronous code: nothing here imports the reactor.
"""

import socket
import subprocess
import time

import pytest

from tests.e2e.tools import ToolError, free_port, require_tool


class RedisServer:
    def __init__(self, executable, directory):
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.process = None
        self.log_path = directory / "redis.log"

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=30):
        """Start (again, on the same port) and wait until it answers PING."""
        for attempt in range(3):
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--logfile",
                    str(self.log_path),
                    "--protected-mode",
                    "no",
                    "--enable-debug-command",
                    "local",
                ],  # DEBUG SLEEP: a Redis that hangs
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                if self.command("PING", timeout=1) == b"+PONG":
                    return self
                time.sleep(0.05)
            self.stop()
            if attempt == 0 and self.process.returncode is not None:
                self.port = free_port()  # lost the race for the port
        raise ToolError(f"redis-server did not start on port {self.port}; see {self.log_path}")

    def stop(self):
        """Kill it (as a crash would: nothing is saved anyway) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def command(self, *words, timeout=5):
        """One command in Redis's inline protocol; the reply's first line,
        or None when nothing answers."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    data = sock.recv(4096)
                    if not data:
                        break
                    reply += data
                return reply.split(b"\r\n")[0]
        except OSError:
            return None

    def info(self, section):
        """INFO ``section`` as text."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(f"INFO {section}\r\n".encode())
            reply = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
                header, _, rest = reply.partition(b"\r\n")
                if header.startswith(b"$") and len(rest) >= int(header[1:]):
                    return rest[: int(header[1:])].decode()
        raise ToolError("redis-server closed the connection during INFO")

    def monitor(self):
        """A :class:`Monitor` of the commands this server runs from now on."""
        return Monitor(self.port)

    def flush(self):
        if self.command("FLUSHALL") != b"+OK":
            raise ToolError("redis-server did not flush")


class Monitor:
    """The commands redis-server runs from now on (``MONITOR``), for a test
    to wait until one is seen: proof that a node got that far (a lock
    tried, say), where counting commands would also count other nodes'.
    A context manager; closes its connection on exit."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""
        self.sock.sendall(b"MONITOR\r\n")
        if self._line(time.monotonic() + 30) != "+OK":
            raise ToolError("redis-server refused MONITOR")

    def _line(self, deadline):
        while b"\r\n" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no such command seen")
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise ToolError("redis-server closed the MONITOR connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def wait_for(self, *words, timeout=120):
        """The first line run from now on whose arguments begin with
        ``words`` (compared ignoring case), e.g. ``("SET", key)``."""
        wanted = " ".join(f'"{word}"' for word in words).lower()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._line(deadline)
            except TimeoutError:
                raise AssertionError(f"redis-server ran no {wanted} within {timeout}s") from None
            if wanted in line.lower():
                return line

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.sock.close()


def redis_state(server, **overrides):
    """A registryd.shared.redis_state client of ``server``, as one node
    makes it from its redis section (short timeouts unless overridden)."""
    from twisted.internet import reactor

    from registryd.config import RedisConfig
    from registryd.shared.redis_state import RedisSharedState

    host, port = server.addr.rsplit(":", 1)
    values = dict(addrs=[(host, int(port))], dial_timeout=1.0, read_timeout=1.0, write_timeout=1.0)
    values.update(overrides)
    return RedisSharedState.from_config(RedisConfig(**values), reactor=reactor)


@pytest.fixture(scope="session")
def redis_server_process(tmp_path_factory):
    server = RedisServer(require_tool("redis-server"), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(redis_server_process):
    """The session's redis-server, running and empty."""
    if redis_server_process.process.poll() is not None:
        redis_server_process.start()
    redis_server_process.flush()
    return redis_server_process

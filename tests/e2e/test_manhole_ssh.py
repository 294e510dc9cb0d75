"""The SSH manhole of registryd running under twistd, used with the real
OpenSSH client: commands without a terminal, an interactive session on a
pty, the host key it generated, and refusals (wrong key; no password
authentication offered at all).  While admins sort, count, iterate and
index every helper's result, run away and eat memory, a client keeps
pulling and each of its requests is answered."""

import os
import pty
import re
import select
import stat
import subprocess
import threading
import time

import psutil
import pytest

from tests.e2e import tools
from tests.e2e.tools import SSH, http_request, make_image, push_blob, push_image

pytestmark = pytest.mark.e2e


def read_until(process, marker, timeout=20):
    """Read the process's stdout until ``marker`` (bytes) appears."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} in {seen[-2000:]!r}"
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, f"ssh ended before {marker!r}: {seen[-2000:]!r}"
            seen += chunk
    return seen


@pytest.fixture
def manhole(tmp_path, registryd_factory):
    ssh = SSH(tools.free_port(), tmp_path)
    ssh.admin_key = ssh.new_key("admin")
    ssh.rsa_key = ssh.new_key("admin-rsa", "rsa")
    ssh.stranger_key = ssh.new_key("stranger")
    authorized = tmp_path / "authorized_keys"
    authorized.write_bytes(
        (tmp_path / "admin.pub").read_bytes() + (tmp_path / "admin-rsa.pub").read_bytes()
    )
    ssh.host_key = tmp_path / "state" / "manhole_host_key"
    ssh.registry = registryd_factory(
        extra_config={
            "manhole": {
                "listen": f"tcp:{ssh.port}:interface=127.0.0.1",
                "authorized_keys": str(authorized),
                "host_key": str(ssh.host_key),
                "timelimit": f"{TIME_LIMIT}s",
                "memorylimit": MEMORY_LIMIT,
            }
        }
    )
    # Learn the host key now, so that no test's first command has ssh's
    # "Permanently added" warning on its stderr.
    assert ssh.run(ssh.admin_key, "1").returncode == 0
    return ssh


#: The manhole's limits in these tests (manhole.timelimit, manhole.memorylimit).
TIME_LIMIT = 2
MEMORY_LIMIT = 128 * 1024 * 1024
#: How long any one pull may take while the manhole is busy (generous: the
#: machine is shared; a frozen reactor answers never).
PULL_BOUND = 10.0


class Puller(threading.Thread):
    """Pulls an image's manifest and a layer in a loop, noting how long
    each answer took, until stopped (``with Puller(...) as puller:``)."""

    def __init__(self, url, name, image):
        super().__init__(daemon=True)
        self.paths = [
            f"{url}/v2/{name}/manifests/{image['digest']}",
            f"{url}/v2/{name}/blobs/{image['layers'][0][0]}",
        ]
        self.answers = []  # (status, seconds)
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            for path in self.paths:
                started = time.monotonic()
                try:
                    status = http_request("GET", path, timeout=60).status
                except OSError as error:
                    status = repr(error)
                self.answers.append((status, time.monotonic() - started))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        self.join(120)
        if exc_info[0] is None:
            self.check()

    def check(self):
        assert len(self.answers) >= 2, self.answers
        assert {status for status, _ in self.answers} == {200}, self.answers
        slowest = max(seconds for _, seconds in self.answers)
        assert slowest < PULL_BOUND, f"a pull took {slowest:.1f}s"


class PtySession:
    """``ssh -tt`` on a pseudo-terminal of its own, as from an admin's terminal."""

    def __init__(self, command):
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.seen = b""

    def read_until(self, marker, timeout=30):
        """Everything up to and including ``marker``, from what was not yet read."""
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} in {self.seen[-2000:]!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: ssh ended
                    chunk = b""
                assert chunk, f"ssh ended before {marker!r}: {self.seen[-2000:]!r}"
                self.seen += chunk
        found, self.seen = self.seen.split(marker, 1)
        return found + marker

    def statement(self, line, timeout=30):
        """Type ``line``; the lines it printed before the next prompt."""
        os.write(self.master, line.encode() + b"\r")
        text = self.read_until(b"\n>>> ", timeout)[: -len(b"\n>>> ")]
        lines = text.decode("utf-8", "replace").replace("\r", "").split("\n")
        assert lines[0].endswith(line), lines  # the echo of what was typed
        return lines[1:]

    def block(self, line):
        """Type the one-line compound statement ``line`` and the empty line
        that ends it; the lines it printed."""
        os.write(self.master, line.encode() + b"\r")
        self.read_until(b"... ")
        return self.statement("")

    def send(self, data):
        os.write(self.master, data)

    def close(self):
        try:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(20)
        finally:
            os.close(self.master)


def test_commands_with_the_openssh_client(manhole):
    url = manhole.registry.url
    image = pushed_app(url)
    orphan = push_blob(url, "e2e/app", os.urandom(5000))

    result = manhole.run(manhole.admin_key, "repos()")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"['e2e/app']\n"
    # The RSA key works too (rsa-sha2 signatures: OpenSSH no longer signs with SHA-1).
    result = manhole.run(manhole.rsa_key, "tags('e2e/app')")
    assert (result.returncode, result.stdout) == (0, b"['v1']\n"), result.stderr

    result = manhole.run(manhole.admin_key, "gc()")
    assert b"would remove 0 blobs" in result.stdout  # the orphan is younger than an hour
    assert b"kept blob " + orphan.encode() + b": younger than the grace period" in result.stdout
    result = manhole.run(manhole.admin_key, "gc(dry_run=False, grace_period=0)")
    assert result.returncode == 0, result.stderr
    assert f"removed blob {orphan} (5000 bytes)".encode() in result.stdout
    assert http_request("HEAD", f"{url}/v2/e2e/app/blobs/{orphan}").status == 404
    assert http_request("HEAD", f"{url}/v2/e2e/app/blobs/{image['layers'][0][0]}").status == 200

    result = manhole.run(manhole.admin_key, "readonly(True)")
    assert result.stdout == b"True\n"
    response = http_request(
        "POST", f"{url}/v2/e2e/app/blobs/uploads/", b"", {"Content-Length": "0"}
    )
    assert response.status == 405 and response.json()["errors"][0]["code"] == "UNSUPPORTED"
    manhole.run(manhole.admin_key, "readonly(False)")
    push_blob(url, "e2e/app", b"writable again")

    result = manhole.run(manhole.admin_key, "uploads()")
    assert (result.returncode, result.stdout) == (0, b"[]\n")
    result = manhole.run(manhole.admin_key, "tags('no/such')")
    assert result.returncode == 1 and b"NameUnknown" in result.stderr

    # The host key was generated on first start, private, and it is the
    # key the client was shown.
    assert stat.S_IMODE(os.stat(manhole.host_key).st_mode) == 0o600
    public = tools.run([manhole.keygen, "-y", "-f", manhole.host_key]).stdout.split()[:2]
    known = manhole.known_hosts.read_bytes().split()
    assert known[1:3] == public


def test_interactive_session_on_a_pty(manhole):
    push_image(manhole.registry.url, "e2e/app", "v1", make_image((1000,)))
    process = subprocess.Popen(
        manhole.command(manhole.admin_key, tty=True),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        read_until(process, b">>> ")  # after the banner with the helpers
        process.stdin.write(b"tags('e2e/app')\r")
        process.stdin.flush()
        read_until(process, b"['v1']")
        process.stdin.write(b"readonly()\r")
        process.stdin.flush()
        read_until(process, b"False")
        process.stdin.write(b"\x04")  # ^D ends the session
        process.stdin.flush()
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_wrong_key_is_refused_and_only_publickey_is_offered(manhole):
    result = manhole.run(manhole.stranger_key, "repos()", verbose=True)
    assert result.returncode == 255
    assert b"Permission denied (publickey)." in result.stderr
    assert b"Authentications that can continue: publickey\r\n" in result.stderr.replace(
        b"\r\n", b"\n"
    ).replace(b"\n", b"\r\n")
    assert (
        b"password"
        not in result.stderr.split(b"Authentications that can continue:")[1].split(b"\n")[0]
    )
    result = manhole.run(manhole.admin_key, "repos()", user="root")
    assert result.returncode == 255 and b"Permission denied (publickey)." in result.stderr


#: Every helper, and the namespace's objects a user may try the same on.
HELPER_RESULTS = (
    "repos()",
    "tags('e2e/app')",
    "uploads()",
    "gc()",
    "purge_uploads(older_than='1000h')",
    "rebuild_referrers(dry_run=True)",
    "readonly()",
    "stats()",
    "maintenance",
    "config",
    "registry",
)
#: What an admin types over a result: sort, count, iterate, index.
USES = ("sorted({})", "len({})", "[item for item in {}]", "{}[0]")
#: An error, as the manhole reports one: its type and message on one line.
ERROR_LINE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*(: .*)?")


def pushed_app(url):
    """A small image pushed as e2e/app:v1, for the helpers to find and a
    ``Puller`` to pull."""
    image = make_image((4000,))
    push_image(url, "e2e/app", "v1", image)
    return image


def _plain(text):
    """A value's text without the layout: pprint (commands) and repr (the
    prompt) differ only in whitespace, and a str is printed bare by one."""
    return re.sub(r"[\s'\"]", "", text)


def test_every_helper_result_sorts_counts_iterates_and_indexes_while_a_client_pulls(manhole):
    url = manhole.registry.url
    image = pushed_app(url)
    session = PtySession(manhole.command(manhole.admin_key, tty=True))
    try:
        session.read_until(b">>> ")
        with Puller(url, "e2e/app", image):
            for helper in HELPER_RESULTS:
                for use in USES:
                    expression = use.format(helper)
                    command = manhole.run(manhole.admin_key, expression)
                    lines = session.statement(expression)
                    assert "Deferred" not in command.stdout.decode() + "".join(lines)
                    if command.returncode == 0:
                        assert command.stderr == b"", (expression, command.stderr)
                        assert _plain("".join(lines)) == _plain(command.stdout.decode()), expression
                    else:
                        error = command.stderr.decode()
                        assert command.returncode == 1 and error.endswith("\n"), (expression, error)
                        assert ERROR_LINE.fullmatch(error[:-1]), (expression, error)
                        assert lines == [error[:-1]], expression

            assert manhole.run(manhole.admin_key, "sorted(repos())").stdout == b"['e2e/app']\n"
            assert manhole.run(manhole.admin_key, "len(tags('e2e/app'))").stdout == b"1\n"
            assert manhole.run(manhole.admin_key, 'stats()["read_only"]').stdout == b"False\n"
            assert (
                manhole.run(manhole.admin_key, "for r in repos(): print(r)").stdout == b"e2e/app\n"
            )
            assert session.statement('stats()["read_only"]') == ["False"]
            assert session.statement("repos()[0]") == ["'e2e/app'"]
            assert session.statement("_.upper()") == ["'E2E/APP'"]
            assert session.block("for r in repos(): print(r)") == ["e2e/app"]
            # The model's own coroutines run on the reactor, their value shown.
            assert session.statement("on_reactor(registry.repositories)") == ["['e2e/app']"]
            assert session.statement("sorted(registry.repositories())") == [
                "TypeError: 'coroutine' object is not iterable"
            ]
            assert session.statement("registry.repositories()") == ["['e2e/app']"]
            assert (
                manhole.run(manhole.admin_key, "registry.repositories()").stdout == b"['e2e/app']\n"
            )
        session.send(b"\x04")
        assert session.process.wait(20) == 0
    finally:
        session.close()


def test_runaway_statements_are_stopped_while_a_client_pulls(manhole):
    url = manhole.registry.url
    image = pushed_app(url)
    stopped = f"TimeLimitExceeded: stopped after computing for {TIME_LIMIT}s (manhole.timelimit)\n"
    with Puller(url, "e2e/app", image):
        result = manhole.run(manhole.admin_key, "while True: pass")
        assert (result.returncode, result.stderr.decode()) == (1, stopped)
        # Catching Exception does not keep it running.
        result = manhole.run(
            manhole.admin_key, "while True:\n  try:\n    while True: pass\n  except Exception: pass"
        )
        assert (result.returncode, result.stderr.decode()) == (1, stopped)

        session = PtySession(manhole.command(manhole.admin_key, tty=True))
        try:
            session.read_until(b">>> ")
            assert session.block("while True: pass") == [stopped[:-1]]
            session.send(b"while True: pass\r\r\x03")  # ^C stops it at once
            assert (
                session.read_until(b"\n>>> ")
                .replace(b"\r", b"")
                .endswith(b"\nKeyboardInterrupt\n>>> ")
            )
            assert session.statement("1 + 1") == ["2"]
        finally:
            session.close()


def test_a_memory_hungry_statement_is_stopped_and_the_daemon_stays_bounded(manhole):
    url = manhole.registry.url
    image = pushed_app(url)
    daemon = psutil.Process(manhole.registry.pid)
    baseline = daemon.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], daemon.memory_info().rss)
            done.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with Puller(url, "e2e/app", image):
            result = manhole.run(manhole.admin_key, "x = []\nwhile True: x.append(b'x' * 100000)")
            assert result.returncode == 1
            assert result.stderr.decode() == (
                f"MemoryLimitExceeded: stopped: the daemon grew by more than {MEMORY_LIMIT} bytes"
                " (manhole.memorylimit)\n"
            )
            # One allocation in C, which nothing can interrupt, meets the
            # address-space cap instead of the machine's memory.
            result = manhole.run(manhole.admin_key, "len('x' * 10**10)")
            assert (result.returncode, result.stderr) == (1, b"MemoryError\n")
    finally:
        done.set()
        watcher.join(10)
    # The watchdog looks ten times a second: the daemon overshoots the limit
    # by what the statement allocated in between, never without bound.
    assert peak[0] - baseline < MEMORY_LIMIT + 512 * 1024 * 1024, (baseline, peak[0])
    # Handed back: what the stopped statement held does not stay.  The
    # allocator returns it when the statement's frame is gone (the watchdog
    # trims), which on a busy machine may take a moment: wait for it, and
    # allow what other work (the puller, thread stacks, arenas) keeps: less
    # than the statement itself had taken (the limit it was stopped at).
    deadline = time.monotonic() + 60
    while True:
        after = daemon.memory_info().rss
        if after - baseline < MEMORY_LIMIT or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after - baseline < MEMORY_LIMIT, (baseline, after)
    assert manhole.run(manhole.admin_key, "len(repos())").stdout == b"1\n"

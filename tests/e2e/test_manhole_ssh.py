"""The SSH manhole of registryd running under twistd, used with the real
OpenSSH client: commands without a terminal, an interactive session on a
pty, the host key it generated, and refusals (wrong key; no password
authentication offered at all)."""

import os
import select
import stat
import subprocess
import time

import pytest

from tests.e2e import tools
from tests.e2e.tools import SSH, http_request, make_image, push_blob, push_image

pytestmark = pytest.mark.e2e


def read_until(process, marker, timeout=20):
    """Read the process's stdout until C{marker} (bytes) appears."""
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
    ssh.registry = registryd_factory(extra_config={"manhole": {
        "listen": f"tcp:{ssh.port}:interface=127.0.0.1",
        "authorized_keys": str(authorized),
        "host_key": str(ssh.host_key),
    }})
    return ssh


def test_commands_with_the_openssh_client(manhole):
    url = manhole.registry.url
    image = make_image((4000,))
    push_image(url, "e2e/app", "v1", image)
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
    response = http_request("POST", f"{url}/v2/e2e/app/blobs/uploads/", b"", {"Content-Length": "0"})
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
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        read_until(process, b">>> ")  # after the banner with the helpers
        process.stdin.write(b"tags('e2e/app')\r")
        process.stdin.flush()
        read_until(process, b"Deferred #0 called back: ['v1']")
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
        b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"password" not in result.stderr.split(b"Authentications that can continue:")[1].split(b"\n")[0]
    result = manhole.run(manhole.admin_key, "repos()", user="root")
    assert result.returncode == 255 and b"Permission denied (publickey)." in result.stderr

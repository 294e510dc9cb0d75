"""End-to-end: real docker and skopeo against registryd with TLS and
authentication.

* htpasswd over TLS with client certificates: the test CA and a client
  certificate go into dockerd's ``/etc/docker/certs.d/<host:port>/``
  (dockerd reads that fixed place; the directory is removed afterwards),
  then ``docker login --password-stdin``, push, pull; a wrong password and
  a pull-only user are refused, and the refused push writes nothing.

  dockerd treats every registry on 127.0.0.0/8 as insecure: it still
  speaks TLS first, but skips certificate verification and ignores
  ``certs.d``.  So registryd listens on the IPv6 loopback ``::1`` under a
  host name added to ``/etc/hosts`` for the test (references cannot hold
  an IPv6 literal in dockerd 20.10): that address is outside 127.0.0.0/8,
  so dockerd verifies the server certificate against the test CA and
  presents the client certificate.
* The Docker token flow with registryd's built-in token server: ``docker
  login`` (a refresh token is stored), push as a user with push rights, a
  pull-only user refused, ``skopeo --creds``.
* Debian's docker-registry (Distribution 2.8) trusting registryd's token
  server: skopeo follows its challenge to registryd's ``/auth/token``.

Images are tiny; the tests share the session's dockerd.
"""

import contextlib
import json
import shutil
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests import certs
from tests.e2e import tools

pytestmark = pytest.mark.e2e

HOSTNAME = "registryd-e2e.test"
CERTS_D = Path("/etc/docker/certs.d")

ACCESS = {
    "groups": {"admins": ["alice"]},
    "rules": [
        {"repositories": ["**"], "groups": ["admins"], "actions": ["*"]},
        {"repositories": ["**"], "users": ["bob"], "actions": ["pull"]},
    ],
}


def write_htpasswd(path):
    """The users, written by the real ``htpasswd -B``."""
    htpasswd = tools.require_tool("htpasswd")
    tools.run([htpasswd, "-B", "-c", "-b", path, "alice", "wonderland"])
    tools.run([htpasswd, "-B", "-b", path, "bob", "builder"])
    assert Path(path).read_text().count("$2y$") == 2
    return str(path)


def ipv6_loopback_works():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def host_alias(name, address):
    """``address name`` in /etc/hosts for the duration (root only)."""
    line = f"{address} {name}  # registryd e2e test\n"
    hosts = Path("/etc/hosts")
    original = hosts.read_text()
    hosts.write_text(original + ("" if original.endswith("\n") else "\n") + line)
    try:
        yield
    finally:
        current = hosts.read_text()
        hosts.write_text(
            "".join(kept for kept in current.splitlines(keepends=True) if kept != line)
        )


@contextlib.contextmanager
def docker_certs_d(host, files):
    """``/etc/docker/certs.d/<host>/`` with ``files``; removed afterwards,
    with any parent directory this created."""
    created = [p for p in (CERTS_D.parent, CERTS_D) if not p.exists()]
    directory = CERTS_D / host
    directory.mkdir(parents=True)
    try:
        for name, data in files.items():
            (directory / name).write_bytes(data)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()


class TLSRegistryd(tools.Registryd):
    """registryd with http.tls, on ::1 under a host name (or 127.0.0.1)."""

    scheme = "https"
    ready_status = 401  # authentication is on

    def __init__(self, *args, hostname, address, tls_context, **kwargs):
        super().__init__(*args, **kwargs)
        self.hostname, self.address, self.tls_context = hostname, address, tls_context

    @property
    def host(self):
        return f"{self.hostname}:{self.port}"

    def command(self, config_path):
        command = super().command(config_path)
        if self.address == "::1":
            index = command.index("--listen") + 1
            command[index] = f"tcp6:{self.port}:interface=\\:\\:1"
        return command


def docker_login(dockerd, host, user, password, check=True):
    return dockerd.docker(
        "login", "--username", user, "--password-stdin", host, input=password + "\n", check=check
    )


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def test_docker_login_push_pull_with_htpasswd_over_tls(dockerd, skopeo, tmp_path):
    tools.require_root("writing /etc/hosts and /etc/docker/certs.d")
    ca, client_ca = certs.CA("registryd e2e CA"), certs.CA("registryd e2e clients")
    use_ipv6 = ipv6_loopback_works()
    address = "::1" if use_ipv6 else "127.0.0.1"
    server_key, server_cert = ca.issue(HOSTNAME, dns=[HOSTNAME], ips=["127.0.0.1", "::1"])
    client_key, client_cert = client_ca.issue("docker client", client=True)
    files = {
        "server.crt": certs.cert_pem(server_cert),
        "server.key": certs.key_pem(server_key),
        "clients.pem": client_ca.pem,
    }
    paths = {name: certs.write(tmp_path, name, data) for name, data in files.items()}
    context = ssl.create_default_context(cadata=ca.pem.decode())
    context.load_cert_chain(
        certs.write(tmp_path, "client.cert", certs.cert_pem(client_cert)),
        certs.write(tmp_path, "client.key", certs.key_pem(client_key)),
    )
    config = {
        "http": {
            "tls": {
                "certificate": paths["server.crt"],
                "key": paths["server.key"],
                "clientcas": [paths["clients.pem"]],
            }
        },
        "auth": {
            "htpasswd": {"realm": "registryd e2e", "path": write_htpasswd(tmp_path / "htpasswd")},
            "access": ACCESS,
        },
    }
    hostname = HOSTNAME if use_ipv6 else "127.0.0.1"
    with contextlib.ExitStack() as stack:
        if use_ipv6:
            stack.enter_context(host_alias(HOSTNAME, "::1"))
            alias_added = time.monotonic()
        registry = TLSRegistryd(
            root=tmp_path / "root",
            tmpdir=tmp_path / "registryd",
            extra_config=config,
            hostname=hostname,
            address=address,
            tls_context=context,
        )
        stack.callback(registry.stop)
        registry.start()
        # Without client certificate, no TLS session at all.
        bare = ssl.create_default_context(cadata=ca.pem.decode())
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tools.http_request("GET", f"{registry.url}/v2/", context=bare)
        stack.enter_context(
            docker_certs_d(
                registry.host,
                {
                    "ca.crt": ca.pem,
                    "client.cert": certs.cert_pem(client_cert),
                    "client.key": certs.key_pem(client_key),
                },
            )
        )
        stack.callback(dockerd.docker, "logout", registry.host, check=False)
        if use_ipv6:
            # dockerd's Go resolver re-reads /etc/hosts at most every 5 s.
            time.sleep(max(0.0, alias_added + 5.5 - time.monotonic()))

        refused = docker_login(dockerd, registry.host, "alice", "wrong", check=False)
        assert refused.returncode != 0
        assert b"unauthorized" in refused.stderr.lower(), refused.stderr
        docker_login(dockerd, registry.host, "alice", "wonderland")
        reference = f"{registry.host}/e2e/tls-app:v1"
        context_dir = tools.write_scratch_context(tmp_path / "context")
        image_id = dockerd.build(context_dir, reference)
        digest = dockerd.push(reference)
        dockerd.rmi(reference)
        dockerd.pull(reference)
        assert dockerd.image_id(reference) == image_id
        assert f"{registry.host}/e2e/tls-app@{digest}" in dockerd.inspect(reference)["RepoDigests"]

        # bob may pull but not push: the push is refused and writes nothing.
        docker_login(dockerd, registry.host, "bob", "builder")
        dockerd.pull(reference)
        other = f"{registry.host}/e2e/tls-app:bob"
        dockerd.build(tools.write_scratch_context(tmp_path / "context-bob"), other)
        before = files_under(registry.root)
        pushed = dockerd.docker("push", other, check=False)
        assert pushed.returncode != 0
        assert b"denied" in (pushed.stdout + pushed.stderr).lower(), pushed
        assert files_under(registry.root) == before
        dockerd.rmi(reference, other)

        # skopeo with --creds, verifying the server against the CA and
        # presenting the client certificate from the same directory.
        cert_dir = str(CERTS_D / registry.host)
        info = tools.skopeo_json(
            "inspect",
            "--tls-verify=true",
            "--cert-dir",
            cert_dir,
            "--creds",
            "bob:builder",
            f"docker://{registry.host}/e2e/tls-app:v1",
        )
        assert info["Digest"] == digest
        denied = skopeo(
            "inspect",
            "--tls-verify=true",
            "--cert-dir",
            cert_dir,
            "--creds",
            "bob:nope",
            f"docker://{registry.host}/e2e/tls-app:v1",
            check=False,
        )
        assert denied.returncode != 0


def test_docker_and_skopeo_with_the_built_in_token_server(
    dockerd, skopeo, registryd_factory, tmp_path
):
    key = certs.write(tmp_path, "token.key", certs.key_pem(certs.new_key()))
    config = {
        "auth": {
            "htpasswd": {"realm": "registryd e2e", "path": write_htpasswd(tmp_path / "htpasswd")},
            "token": {"service": "registryd-e2e", "issuer": "registryd-e2e"},
            "tokenserver": {"key": key},
            "access": ACCESS,
        }
    }
    registry = registryd_factory(extra_config=config, ready_status=401)
    challenge = tools.http_request("GET", f"{registry.url}/v2/").headers["www-authenticate"]
    assert challenge == f'Bearer realm="{registry.url}/auth/token",service="registryd-e2e"'
    try:
        docker_login(dockerd, registry.host, "alice", "wonderland")
        stored = json.loads(Path(dockerd._env["DOCKER_CONFIG"], "config.json").read_text())
        assert stored["auths"][registry.host].get("identitytoken")  # a refresh token
        reference = f"{registry.host}/e2e/token-app:v1"
        image_id = dockerd.build(tools.write_scratch_context(tmp_path / "context"), reference)
        digest = dockerd.push(reference)
        dockerd.rmi(reference)

        docker_login(dockerd, registry.host, "bob", "builder")
        dockerd.pull(reference)
        assert dockerd.image_id(reference) == image_id
        other = f"{registry.host}/e2e/token-app:bob"
        dockerd.build(tools.write_scratch_context(tmp_path / "context-bob"), other)
        before = files_under(registry.root)
        pushed = dockerd.docker("push", other, check=False)
        assert pushed.returncode != 0 and b"denied" in (pushed.stdout + pushed.stderr).lower(), (
            pushed
        )
        assert files_under(registry.root) == before
        dockerd.rmi(reference, other)
    finally:
        dockerd.docker("logout", registry.host, check=False)

    source = f"docker://{registry.host}/e2e/token-app:v1"
    assert tools.skopeo_json("inspect", "--creds", "bob:builder", source)["Digest"] == digest
    copy = f"docker://{registry.host}/e2e/token-copy:v1"
    refused = skopeo(
        "copy",
        "--src-creds",
        "bob:builder",
        "--dest-creds",
        "bob:builder",
        source,
        copy,
        check=False,
    )
    assert refused.returncode != 0
    skopeo("copy", "--src-creds", "bob:builder", "--dest-creds", "alice:wonderland", source, copy)
    assert tools.skopeo_json("inspect", "--creds", "alice:wonderland", copy)["Digest"] == digest
    anonymous = skopeo("inspect", source, check=False)
    assert anonymous.returncode != 0
    assert b"unauthorized" in anonymous.stderr.lower() or b"denied" in anonymous.stderr.lower()


def test_distribution_accepts_tokens_from_the_built_in_token_server(
    skopeo, registryd_factory, distribution_factory, tmp_path
):
    """Debian's docker-registry (Distribution 2.8), configured with the
    token server's certificate as rootcertbundle, takes registryd's tokens:
    skopeo follows Distribution's challenge to registryd's /auth/token."""
    key = certs.new_key()
    key_path = certs.write(tmp_path, "token.key", certs.key_pem(key))
    cert_path = certs.write(tmp_path, "token.crt", certs.cert_pem(certs.self_signed(key)))
    token_config = {"service": "shared-service", "issuer": "registryd-e2e"}
    issuer = registryd_factory(
        root=tmp_path / "registryd-root",
        ready_status=401,
        extra_config={
            "auth": {
                "htpasswd": {
                    "realm": "registryd e2e",
                    "path": write_htpasswd(tmp_path / "htpasswd"),
                },
                "token": token_config,
                "tokenserver": {"key": key_path, "certificate": cert_path},
                "access": ACCESS,
            }
        },
    )
    distribution = distribution_factory(
        ready_status=401,
        extra_config={
            "auth": {
                "token": dict(
                    token_config, realm=f"{issuer.url}/auth/token", rootcertbundle=cert_path
                )
            }
        },
    )
    image = tools.make_image(layer_sizes=(16 * 1024,))
    layout = tools.make_oci_layout(tmp_path / "oci", "v1", image)
    target = f"docker://{distribution.host}/e2e/shared:v1"
    refused = skopeo("copy", "--dest-creds", "bob:builder", f"oci:{layout}:v1", target, check=False)
    assert refused.returncode != 0  # bob may only pull: the token lacks push
    skopeo("copy", "--dest-creds", "alice:wonderland", f"oci:{layout}:v1", target)
    assert (
        tools.skopeo_json("inspect", "--creds", "bob:builder", target)["Digest"] == image["digest"]
    )

"""The SSH manhole over a real loopback port, driven by Twisted's own SSH
client (conch): public key logins run helpers; a wrong key, a wrong user
and a password are refused.  (The OpenSSH client is in tests/e2e.)"""

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.endpoints import AuthenticationFailed, SSHCommandClientEndpoint
from twisted.conch.ssh import keys
from twisted.cred.credentials import ISSHPrivateKey
from twisted.internet import defer, protocol
from twisted.python.filepath import FilePath

from registryd.config import Config
from registryd.ops.maintenance import Maintenance
from registryd.ops.manhole import make_factory, make_namespace
from tests.support import sha256


def new_key():
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


class _Collect(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback((self.data, reason.value))


class Manhole:
    def __init__(self, port, host_key, tmp_path):
        self.port = port
        known = KnownHostsFile(FilePath(str(tmp_path / "known_hosts")))
        known.addHostKey(b"127.0.0.1", host_key.public())
        self.known_hosts = known

    async def run(self, command, key, user=b"admin", password=None):
        from twisted.internet import reactor

        endpoint = SSHCommandClientEndpoint.newConnection(
            reactor,
            command.encode(),
            user,
            "127.0.0.1",
            self.port,
            keys=[key] if key else None,
            password=password,
            knownHosts=self.known_hosts,
            ui=None,
        )
        proto = await endpoint.connect(protocol.Factory.forProtocol(_Collect))
        data, reason = await proto.done
        return data.decode(), reason


@pytest_twisted.async_yield_fixture
async def manhole(server, tmp_path):
    from twisted.internet import reactor

    admin_key = new_key()
    host_key = new_key()
    config = Config()
    maintenance = Maintenance(server.registry, config)
    factory = make_factory(
        "admin",
        [admin_key.public()],
        host_key,
        lambda: make_namespace(server.registry, maintenance, config),
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    running = Manhole(port.getHost().port, host_key, tmp_path)
    running.admin_key = admin_key
    running.factory = factory
    yield running
    await port.stopListening()


async def _push_tagged(server, name, tag):
    import json

    config = b"{}"
    response = await server.client.post(
        server.v2(f"{name}/blobs/uploads/?digest={sha256(config)}"), data=config
    )
    assert response.code == 201
    await response.content()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    response = await server.client.put(
        server.v2(f"{name}/manifests/{tag}"),
        data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert response.code == 201, await response.content()
    await response.content()


@pytest_twisted.ensureDeferred
async def test_helpers_over_conch(server, manhole):
    from twisted.internet.error import ConnectionDone

    await _push_tagged(server, "team/app", "v1")
    await _push_tagged(server, "team/app", "v2")

    out, reason = await manhole.run("repos()", manhole.admin_key)
    assert out == "['team/app']\n" and isinstance(reason, ConnectionDone)
    out, _ = await manhole.run("tags('team/app')", manhole.admin_key)
    assert out == "['v1', 'v2']\n"
    out, _ = await manhole.run("gc()", manhole.admin_key)
    assert "would remove 0 blobs" in out
    out, _ = await manhole.run("readonly(True)", manhole.admin_key)
    assert out == "True\n" and server.registry.read_only
    response = await server.client.post(server.v2("team/app/blobs/uploads/"))
    assert response.code == 405
    await response.content()
    await manhole.run("readonly(False)", manhole.admin_key)
    assert not server.registry.read_only
    out, _ = await manhole.run("stats()", manhole.admin_key)
    assert "'repositories': 1,\n 'blobs': 2," in out and "'read_only': False" in out
    out, _ = await manhole.run("registry.guard.held, registry.read_only", manhole.admin_key)
    assert out == "([], False)\n"


@pytest_twisted.ensureDeferred
async def test_a_failing_command_exits_non_zero(manhole):
    from twisted.internet.error import ProcessTerminated

    out, reason = await manhole.run("tags('no/such/repo')", manhole.admin_key)
    assert isinstance(reason, ProcessTerminated) and reason.exitCode == 1


@pytest_twisted.ensureDeferred
async def test_wrong_key_wrong_user_and_passwords_are_refused(manhole):
    for kwargs in (
        {"key": new_key()},
        {"key": manhole.admin_key, "user": b"root"},
        {"key": None, "password": b"admin"},
    ):
        with pytest.raises(AuthenticationFailed):
            await manhole.run("repos()", **kwargs)
    # Public keys are the only credentials the server knows how to check,
    # so "publickey" is the only method it offers.
    assert manhole.factory.portal.listCredentialsInterfaces() == [ISSHPrivateKey]


@pytest_twisted.ensureDeferred
async def test_a_command_is_stopped_when_its_client_goes(manhole):
    """Without a pty there is no ^C: closing the session is the way to stop
    a command, well before the time limit would."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    runner = manhole.factory.portal.realm.runner
    runner.time_limit = 600
    endpoint = SSHCommandClientEndpoint.newConnection(
        reactor,
        b"while True: pass",
        b"admin",
        "127.0.0.1",
        manhole.port,
        keys=[manhole.admin_key],
        knownHosts=manhole.known_hosts,
        ui=None,
    )
    proto = await endpoint.connect(protocol.Factory.forProtocol(_Collect))
    deadline = reactor.seconds() + 60
    while not runner.running:
        assert reactor.seconds() < deadline, "the command never started"
        await deferLater(reactor, 0.05)
    proto.transport.loseConnection()
    await proto.done
    while runner.running:
        assert reactor.seconds() < deadline, "the command still runs after its client went"
        await deferLater(reactor, 0.05)

"""The manhole's pure parts: keys, the command runner, the namespace."""

import os
import stat

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.internet import defer

from registryd.admin.maintenance import Maintenance
from registryd.admin.manhole import (
    HELP,
    load_authorized_keys,
    load_or_create_host_key,
    make_namespace,
    run_source,
)
from registryd.config import Config, ConfigError
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.registry import Registry


def new_key():
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def test_host_key_is_generated_once_with_private_permissions(tmp_path):
    path = tmp_path / "sub" / "host_key"
    key = load_or_create_host_key(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    again = load_or_create_host_key(str(path))
    assert again == key and not again.isPublic()
    assert again.sshType() == b"ssh-ed25519"


def test_a_public_or_broken_host_key_is_refused(tmp_path):
    public = tmp_path / "public"
    public.write_bytes(new_key().public().toString("OPENSSH"))
    with pytest.raises(ConfigError) as info:
        load_or_create_host_key(str(public))
    assert str(info.value).startswith("manhole.host_key: ") and "public key" in str(info.value)
    broken = tmp_path / "broken"
    broken.write_bytes(b"not a key")
    with pytest.raises(ConfigError) as info:
        load_or_create_host_key(str(broken))
    assert str(info.value).startswith("manhole.host_key: cannot load host key")


def test_authorized_keys(tmp_path):
    first, second = new_key(), new_key()
    path = tmp_path / "authorized_keys"
    path.write_bytes(
        b"# admins\n\n" + first.public().toString("OPENSSH") + b" alice@example\n"
        + b"garbage line\n" + second.public().toString("OPENSSH") + b"\n"
    )
    assert load_authorized_keys(str(path)) == [first.public(), second.public()]
    with pytest.raises(ConfigError) as info:
        load_authorized_keys(str(tmp_path / "missing"))
    assert str(info.value).startswith("manhole.authorized_keys: cannot read")
    (tmp_path / "empty").write_bytes(b"# nobody\n")
    with pytest.raises(ConfigError) as info:
        load_authorized_keys(str(tmp_path / "empty"))
    assert "holds no public key" in str(info.value)


@pytest_twisted.ensureDeferred
async def test_run_source_prints_values_awaits_deferreds_and_reports_errors():
    namespace = {"later": lambda: defer.succeed({"a": 1})}
    assert await run_source("1 + 1", namespace) == ("2\n", "", 0)
    assert await run_source("later()", namespace) == ("{'a': 1}\n", "", 0)
    assert await run_source("x = 5\nprint(x * 2)", namespace) == ("10\n", "", 0)
    assert namespace["x"] == 5
    assert await run_source("'text'", namespace) == ("text\n", "", 0)
    assert await run_source("None", namespace) == ("", "", 0)
    out, err, status = await run_source("print('before'); 1/0", namespace)
    assert out == "before\n" and status == 1 and "ZeroDivisionError" in err
    out, err, status = await run_source("def (", namespace)
    assert status == 1 and "SyntaxError" in err


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'


@pytest_twisted.ensureDeferred
async def test_namespace_helpers():
    registry = Registry(InMemoryDriver())
    namespace = make_namespace(registry, Maintenance(registry, Config()), Config())
    assert namespace["registry"] is registry and namespace["config"] == Config()
    assert await namespace["repos"]() == []
    assert namespace["readonly"]() is False
    assert namespace["readonly"](True) is True and registry.read_only
    assert namespace["readonly"]() is True
    namespace["readonly"](False)
    stats = await namespace["stats"]()
    assert stats["repositories"] == 0 and stats["blobs"] == 0 and stats["read_only"] is False
    report = await namespace["gc"]()
    assert report.dry_run  # the manhole's gc() is a dry run unless told otherwise
    purge = await namespace["purge_uploads"](older_than="1h")
    assert purge.older_than == 3600.0 and not purge.dry_run
    assert await namespace["uploads"]() == []
    rebuilt = await namespace["rebuild_referrers"]()
    assert rebuilt.repositories == 0 and not rebuilt.dry_run
    await registry.repository("team/app").manifests.put("v1", INDEX, OCI_INDEX)
    assert await namespace["repos"]() == ["team/app"]
    removed = await namespace["delete_repository"]("team/app")
    assert removed["tags"] == ["v1"] and len(removed["manifests"]) == 1 and removed["kept"] == []
    assert await namespace["repos"]() == []
    assert await namespace["retention"]() == (
        "retention (dry run): 0 repositories, would delete 0 tags and 0 manifests")
    assert (await namespace["retention"](json=True))["dry_run"] is True
    assert await namespace["usage"]() == {"quotas": []}
    out, _, status = await run_source("help_registryd()", namespace)
    assert status == 0 and out == HELP
    out, _, status = await run_source("exit()", namespace)
    assert status == 0 and out.startswith("Use Ctrl-D (^D) to leave")
    assert (await run_source("raise SystemExit(3)", namespace))[2] == 3
    with pytest.raises(ConfigError):
        await namespace["purge_uploads"](older_than="soon")


def test_twistd_options_refuse_a_bad_manhole_before_starting(tmp_path):
    from twisted.python import usage

    from registryd.tap import Options

    keys_path = tmp_path / "authorized_keys"
    config = tmp_path / "registryd.yaml"

    def options(manhole):
        config.write_text("version: 0.1\nstorage:\n  inmemory:\nmanhole:\n" + manhole)
        parsed = Options()
        parsed.parseOptions(["--config", str(config)])
        return parsed

    with pytest.raises(usage.UsageError) as info:
        options(f"  authorized_keys: {keys_path}\n")
    assert "manhole.authorized_keys: cannot read" in str(info.value)
    keys_path.write_bytes(new_key().public().toString("OPENSSH") + b"\n")
    with pytest.raises(usage.UsageError) as info:
        options(f"  authorized_keys: {keys_path}\n  listen: 'tcp:notaport'\n")
    assert "manhole.listen 'tcp:notaport'" in str(info.value)
    host_key = tmp_path / "host_key"
    parsed = options(f"  authorized_keys: {keys_path}\n  host_key: {host_key}\n")
    assert parsed.registry_config.manhole.host_key == str(host_key)
    assert host_key.exists()  # generated while checking, before twistd forks


def test_sessions_and_realm_provide_conch_interfaces():
    from twisted.conch.interfaces import IConchUser, ISession
    from twisted.cred.portal import IRealm
    from zope.interface.verify import verifyObject

    from registryd.admin.manhole import ManholeRealm

    realm = ManholeRealm(dict)
    verifyObject(IRealm, realm)
    interface, user, logout = realm.requestAvatar(b"admin", None, IConchUser)
    assert interface is IConchUser and IConchUser.providedBy(user)
    session = user.original.getComponent(ISession)
    verifyObject(ISession, session)
    assert session.namespace_factory is dict

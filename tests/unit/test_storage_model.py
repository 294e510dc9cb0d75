"""The storage model's boundary: its stores provide the declared interfaces,
the layout is known only inside ``registryd.storage``, and every deletion
goes through the vacuum."""

import ast
import functools
import pathlib

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from registryd import interfaces
from registryd.digest import Digest
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.registry import Registry
from tests.unit.test_gc import _Source

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "registryd"
STORAGE = PACKAGE / "storage"


@functools.lru_cache(maxsize=1)
def _modules():
    return [
        (path, ast.parse(path.read_text(), str(path))) for path in sorted(PACKAGE.rglob("*.py"))
    ]


def _inside_storage(path):
    return STORAGE in path.parents


def test_the_layout_is_private_to_the_storage_model():
    """Nothing outside registryd/storage imports the layout module."""
    offenders = []
    for path, tree in _modules():
        if _inside_storage(path):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(
                name.startswith(("registryd.storage._paths", "registryd.storage.paths"))
                for name in names
            ):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []
    assert not (STORAGE / "paths.py").exists()


def test_only_the_model_touches_the_driver():
    """Handlers, admin tools and the pull-through cache reach storage only
    through the model: none of them uses a registry's ``driver``."""
    offenders = []
    for path, tree in _modules():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] not in ("admin", "api", "proxy"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "driver":
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []


def test_the_vacuum_is_the_only_deleter():
    """No module but the vacuum (and the drivers themselves) calls a
    driver's delete, and nobody cuts a link path back to its directory."""
    offenders = []
    for path, tree in _modules():
        relative = path.relative_to(PACKAGE)
        if relative.parts[:2] == ("storage", "drivers") or relative.name in (
            "vacuum.py",
            "instrumented.py",
        ):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "delete"
                and "driver" in ast.unparse(node.func.value)
            ):
                offenders.append(f"{relative}:{node.lineno} {ast.unparse(node)}")
        if '.rsplit("/", 1)[0]' in path.read_text():
            offenders.append(f"{relative}: rsplit")
    assert offenders == []


@pytest.fixture
def registry():
    return Registry(InMemoryDriver(), delete_enabled=True)


def _verify_repository(repository):
    assert verifyObject(interfaces.IRepository, repository)
    assert verifyObject(interfaces.ILinkedBlobStore, repository.blobs)
    assert verifyObject(interfaces.IManifestStore, repository.manifests)
    assert verifyObject(interfaces.ITagStore, repository.tags)
    assert verifyObject(interfaces.IUploadStore, repository.uploads)


def test_the_stores_provide_their_interfaces(registry):
    _verify_repository(registry.repository("team/app"))
    assert verifyObject(interfaces.IBlobStore, registry.blobs)


@pytest_twisted.ensureDeferred
async def test_enumerators_and_vacuum_round_trip(registry):
    """What the stores write, their enumerators find, and the vacuum removes."""
    repository = registry.repository("team/app")
    data = b"layer bytes"
    digest = Digest.of(data)
    async with await repository.uploads.start() as upload:
        await upload.append(_Source(data))
        await upload.complete(digest)
    async with await repository.uploads.start():
        pass  # left in storage
    assert await registry.blobs.enumerate() == [digest]
    assert await repository.blobs.enumerate() == [digest]
    assert len(await repository.uploads.enumerate()) == 1
    assert await registry.repositories_with_content() == ["team/app"]
    assert await registry.repositories_with_uploads() == ["team/app"]

    assert await registry.vacuum.remove_layer_link("team/app", digest)
    assert not await registry.vacuum.remove_layer_link("team/app", digest)  # gone already
    assert await repository.blobs.enumerate() == []
    assert await registry.vacuum.remove_blob(digest)
    assert await registry.blobs.enumerate() == []
    (leftover,) = await repository.uploads.enumerate()
    assert await registry.vacuum.remove_upload("team/app", leftover.id)
    assert await repository.uploads.enumerate() == []


def test_the_pull_through_cache_implements_the_same_interfaces(registry):
    """The cache is another implementation of the model (Distribution's
    proxy stores), not a mode the handlers check."""
    from twisted.internet import reactor

    from registryd.proxy import ProxyRegistry
    from registryd.proxy.upstream import Upstream

    cache = ProxyRegistry(registry, Upstream("http://127.0.0.1:9", reactor=reactor), ttl=60.0)
    _verify_repository(cache.repository("team/app"))
    refusal = cache.write_refusal()
    assert refusal.status == 405 and "pull-through cache" in refusal.message
    assert registry.write_refusal() is None


def test_handlers_have_no_proxy_branch():
    """Which registry the API serves is chosen once, when the service is
    composed: no handler (nor the app) asks whether it is a cache."""
    offenders = []
    for path, tree in _modules():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] != "api" and relative.name != "app.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and "proxy" in node.attr:
                offenders.append(f"{relative}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Constant) and node.value == "proxy":
                offenders.append(f"{relative}:{node.lineno} 'proxy'")
    assert offenders == []


def test_a_repository_is_made_once_per_name_and_kept_bounded(registry, monkeypatch):
    """Requests for one name share one Repository (building its stores per
    request cost more CPU than a manifest's answer), and the kept ones are
    bounded: the least recently used go first."""
    from registryd.errors import NameInvalid
    from registryd.storage import registry as model

    monkeypatch.setattr(model, "MAX_KEPT_REPOSITORIES", 3)
    first = registry.repository("a/b")
    assert registry.repository("a/b") is first
    for name in ("c", "d", "e"):
        registry.repository(name)
    assert registry.repository("a/b") is not first  # evicted, made anew
    assert len(registry._repositories_made) == 3
    with pytest.raises(NameInvalid):
        registry.repository("Not/Valid")
    assert "Not/Valid" not in registry._repositories_made

"""Where reads consult the nodes' metadata cache
(registryd.storage.shared_cache): ``redis.metadatacache`` (auto, on, off)
and what the storage driver declares, decided once by the composition
root.  With ``auto`` a driver whose metadata reads are local (filesystem,
inmemory: :class:`registryd.interfaces.ILocalMetadata`) revalidates its
per-process caches by a stat, cheaper than a Redis call; S3 and
third-party drivers, whose reads are taken to be requests, consult Redis.
A node that does not consult the cache still makes every node forget
what its writes change.
"""

import pytest
import pytest_twisted
import yaml
from hypothesis import given
from hypothesis import strategies as st
from zope.interface import implementer

from registryd.config import ConfigError, error_lines, parse_config
from registryd.digest import Digest
from registryd.interfaces import IStorageDriver
from registryd.shared.memory import MemorySharedState
from registryd.storage.drivers import create_driver
from registryd.storage.drivers.filesystem import FilesystemDriver
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.registry import Registry
from registryd.storage.shared_cache import consulted_for, shared_cache_for
from tests.unit.test_gc import push_image

S3 = {
    "region": "us-east-1",
    "bucket": "registry-bucket",
    "accesskey": "key",
    "secretkey": "secret",
    "regionendpoint": "http://127.0.0.1:9",
}


@implementer(IStorageDriver)
class ThirdPartyDriver:
    """A driver of another distribution, which declares nothing."""

    name = "thirdparty"


def drivers(tmp_path):
    return {
        "filesystem": FilesystemDriver(tmp_path),
        "inmemory": InMemoryDriver(),
        "s3": create_driver("s3", dict(S3)),
        "thirdparty": ThirdPartyDriver(),
    }


#: (driver, setting) -> whether reads consult the cache
EXPECTED = {
    ("filesystem", "auto"): False,
    ("inmemory", "auto"): False,
    ("s3", "auto"): True,
    ("thirdparty", "auto"): True,
    **{(driver, "on"): True for driver in ("filesystem", "inmemory", "s3", "thirdparty")},
    **{(driver, "off"): False for driver in ("filesystem", "inmemory", "s3", "thirdparty")},
}


@pytest.mark.parametrize(("driver", "setting"), sorted(EXPECTED))
def test_each_driver_and_setting(tmp_path, driver, setting):
    assert consulted_for(setting, drivers(tmp_path)[driver]) is EXPECTED[(driver, setting)]


def redis_config(**redis):
    document = {
        "version": 0.1,
        "storage": {"inmemory": None},
        "redis": {"addr": "127.0.0.1:6379", **redis},
    }
    return parse_config(yaml.safe_load(yaml.safe_dump(document)))


def test_the_setting_is_auto_by_default():
    assert redis_config().redis.metadata_cache == "auto"


@pytest.mark.parametrize(
    ("written", "setting"),
    [("auto", "auto"), ("on", "on"), ("off", "off"), ("ON", "on"), ("Auto", "auto")],
)
def test_the_setting_as_written(written, setting):
    assert redis_config(metadatacache=written).redis.metadata_cache == setting


@pytest.mark.parametrize(("written", "setting"), [("on", "on"), ("off", "off"), ("yes", "on")])
def test_a_bare_yaml_on_or_off_is_read_as_meant(written, setting):
    """YAML 1.1 reads a bare ``on``/``off`` (and ``yes``) as a boolean."""
    document = yaml.safe_load(
        f"version: 0.1\nstorage: {{inmemory: }}\n"
        f"redis: {{addr: 127.0.0.1:6379, metadatacache: {written}}}\n"
    )
    assert parse_config(document).redis.metadata_cache == setting


@given(
    st.one_of(
        st.text(max_size=20),
        st.integers(),
        st.floats(allow_nan=False),
        st.none(),
        st.lists(st.text(max_size=5), max_size=3),
        st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    )
)
def test_any_value_is_a_setting_or_one_line_naming_the_key(value):
    """Hostile values: a setting, or a ConfigError naming the key on one
    line per problem, never another exception."""
    document = {
        "version": 0.1,
        "storage": {"inmemory": None},
        "redis": {"addr": "127.0.0.1:6379", "metadatacache": value},
    }
    try:
        config = parse_config(document)
    except ConfigError as error:
        lines = error_lines(error)
        assert any("redis.metadatacache" in line for line in lines), lines
        assert all("\n" not in line for line in lines)
        return
    assert config.redis.metadata_cache in ("auto", "on", "off")
    assert isinstance(value, str) and value.lower() == config.redis.metadata_cache


def compose_registry(tmp_path, **redis):
    """The registry the composition root builds from a configuration on
    a filesystem root, with the ``redis`` section ``redis`` (none: {})."""
    from registryd.runtime.composition import compose
    from registryd.runtime.startup import from_config

    document = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "root")}},
        "http": {"addr": "127.0.0.1:0"},
    }
    if redis:
        document["redis"] = redis
    components = compose(from_config(parse_config(document)))
    return components.registry, components.shared_state


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(("setting", "consulted"), [(None, False), ("on", True), ("off", False)])
async def test_the_composition_root_decides_for_a_filesystem(tmp_path, setting, consulted):
    """With a redis section the node always has the cache (its writes
    forget); whether reads consult it is the setting's (auto: not on a
    filesystem).  No connection is made: building connects nothing."""
    redis = {"addr": "127.0.0.1:9"}
    if setting is not None:
        redis["metadatacache"] = setting
    registry, state = compose_registry(tmp_path, **redis)
    try:
        assert state.shared
        assert registry.shared_cache is not None
        assert registry.shared_cache.consulted is consulted
    finally:
        await state.close()


@pytest_twisted.ensureDeferred
async def test_without_redis_there_is_no_shared_cache(tmp_path):
    registry, state = compose_registry(tmp_path)
    try:
        assert registry.shared_cache is None
    finally:
        await state.close()


class SharedMemory(MemorySharedState):
    """The in-process state, seen as the nodes' (as Redis is)."""

    shared = True


@pytest_twisted.ensureDeferred
async def test_a_node_that_does_not_consult_the_cache_looks_nothing_up_but_forgets():
    """Reads (a manifest by tag and digest, a blob HEAD) make no lookup;
    a tag pushed still forgets the tag's entry for every node."""
    from twisted.internet import reactor

    state = SharedMemory()
    cache = shared_cache_for(state, reactor, consulted=False)
    cache.trusted = True  # as once its epoch has begun (no service running here)
    registry = Registry(InMemoryDriver(), shared_state=state, shared_cache=cache)
    repository = registry.repository("alice/app")
    entry = "tag:alice/app:v1"
    [(_, stamp)] = await state.cache_lookup([entry])
    assert await state.cache_fill(entry, stamp, b"sha256:" + b"0" * 64, 30)
    digest, blobs, _ = await push_image(registry, "alice/app", "v1")
    [(value, _)] = await state.cache_lookup([entry])
    assert value is None  # forgotten by the push's tag write
    assert await repository.manifests.resolve("v1") == digest
    assert await repository.manifests.resolve(str(digest)) == digest
    for blob in blobs:
        await repository.blobs.stat(Digest.parse(blob["digest"]))
    assert (cache.hits, cache.misses, cache.bypassed) == (0, 0, 0)

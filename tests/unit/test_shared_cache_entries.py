"""What the model makes of the entries of the nodes' metadata cache
(registryd.storage.shared_cache): Redis is not trusted to hold well-formed
values (another program may write its keys), so any bytes at all in a
tag's, revision's, blob link's or blob's entry are either a value the
model can use or a miss answered from storage, never an error.
"""

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor

from registryd.digest import Digest
from registryd.shared.memory import MemorySharedState
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.registry import Registry
from registryd.storage.shared_cache import (
    SharedMetadataCache,
    blob_entry,
    link_entry,
    revision_entry,
    tag_entry,
)
from tests.unit.test_gc import push_image


def now(coroutine):
    """The result of a model call that storage and state answer at once
    (the in-memory driver and shared state)."""
    done = defer.ensureDeferred(coroutine)
    assert done.called
    return done.result


def stuff(state, name, value):
    """Put ``value`` (bytes) in entry ``name``, as a program writing
    Redis could."""
    [(_, stamp)] = now(state.cache_lookup([name]))
    assert now(state.cache_fill(name, stamp, value, 30))


@pytest_twisted.ensureDeferred
async def test_any_bytes_in_an_entry_are_a_usable_value_or_a_miss():
    state = MemorySharedState(reactor=reactor)
    cache = SharedMetadataCache(state, reactor)
    cache.startService()
    try:
        registry = Registry(InMemoryDriver(), shared_state=state, shared_cache=cache)
        digest, blobs, _ = await push_image(registry, "team/app", tag="v1")
        await cache._renew()
        assert cache.trusted
        repository = registry.repository("team/app")
        layer = Digest.parse(blobs[0]["digest"])
        truth = await repository.blobs.stat(layer)

        @settings(max_examples=300, deadline=None)
        @given(
            st.sampled_from(["tag", "revision", "link", "blob"]),
            st.one_of(
                st.binary(max_size=80),
                st.sampled_from(
                    [b"", b"1", b"-1", b"12\n", b"\xff", b"sha256:", str(layer).encode()]
                ),
            ),
        )
        def check(which, value):
            name = {
                "tag": tag_entry("team/app", "v1"),
                "revision": revision_entry("team/app", digest),
                "link": link_entry("team/app", layer),
                "blob": blob_entry(layer),
            }[which]
            stuff(state, name, value)
            resolved = now(repository.manifests.resolve("v1"))
            assert resolved == digest or str(resolved).encode() == value
            assert now(repository.manifests.has(digest))
            blob = now(repository.blobs.stat(layer))
            assert blob == truth or (which == "blob" and str(blob.size).encode() == value)
            now(state.cache_forget([name], 30))

        check()
    finally:
        cache.stopService()

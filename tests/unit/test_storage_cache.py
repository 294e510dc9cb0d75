"""ContentCache (a bounded LRU of immutable content by digest) and LinkCache."""

from registryd.storage.cache import ContentCache, LinkCache


def test_hit_miss_and_lru_eviction_by_size():
    cache = ContentCache(max_bytes=100, max_entry=60)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C", 40)  # over 100: evicts b, the least recent
    assert cache.get("b") is None
    assert cache.get("a") == "A" and cache.get("c") == "C"
    assert cache.size == 80 and len(cache) == 2


def test_entries_larger_than_max_entry_are_not_kept():
    cache = ContentCache(max_bytes=100, max_entry=10)
    cache.put("big", "X", 11)
    assert cache.get("big") is None and cache.size == 0


def test_replacing_an_entry_keeps_the_size_right():
    cache = ContentCache(max_bytes=100)
    cache.put("a", "A", 30)
    cache.put("a", "A2", 50)
    assert cache.get("a") == "A2" and cache.size == 50


# LinkCache: what a tag resolved to, under the validator of its link


def test_tag_cache_hits_only_under_the_same_validator():
    now = [1000.0]
    cache = LinkCache(clock=lambda: now[0])
    cache.put("app", "v1", (71, 900.0), "sha256:a")
    assert cache.get("app", "v1", (71, 900.0)) == "sha256:a"
    assert cache.get("other", "v1", (71, 900.0)) is None
    # The link was rewritten (another process re-pointed the tag): a miss,
    # and the old entry is gone even if the old validator came back.
    assert cache.get("app", "v1", (71, 950.0)) is None
    assert cache.get("app", "v1", (71, 900.0)) is None
    cache.put("app", "v1", (71, 900.0), "sha256:a")
    cache.invalidate("app", "v1")
    assert cache.get("app", "v1", (71, 900.0)) is None


def test_tag_cache_keeps_no_link_written_within_the_settled_time():
    """Two writes within one tick of the file clock could leave the same
    validator: a link that new is not trusted to tell them apart."""
    now = [1000.0]
    cache = LinkCache(clock=lambda: now[0])
    cache.put("app", "v1", (71, 999.0), "sha256:a")
    assert cache.get("app", "v1", (71, 999.0)) is None
    now[0] = 999.0 + LinkCache.settled
    cache.put("app", "v1", (71, 999.0), "sha256:a")
    assert cache.get("app", "v1", (71, 999.0)) == "sha256:a"


def test_tag_cache_is_bounded():
    cache = LinkCache(max_entries=2, clock=lambda: 1000.0)
    for tag in ("a", "b", "c"):
        cache.put("app", tag, (71, 1.0), f"sha256:{tag}")
    assert len(cache) == 2 and cache.get("app", "a", (71, 1.0)) is None

"""ContentCache: a bounded LRU of immutable content by digest."""

from registryd.storage.cache import ContentCache


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

"""Small helpers of the fast paths: allocator tuning, tag filtering."""

import sys

import pytest
from twisted.internet.task import Clock

from registryd.names import is_valid_tag, valid_tags
from registryd.runtime import tuning


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_allocator_tuning_and_delayed_release(monkeypatch):
    assert tuning.tune_allocator() is True
    assert tuning.tune_allocator() is True  # once is enough
    tuning.release_memory()  # returns memory; must not fail
    released = []
    monkeypatch.setattr(tuning, "release_memory", lambda: released.append(True))
    monkeypatch.setattr(tuning, "_pending_release", None)
    clock = Clock()
    tuning.release_memory_later(clock)
    clock.advance(tuning.RELEASE_DELAY - 0.5)
    tuning.release_memory_later(clock)  # another upload ended: wait again
    clock.advance(1.0)
    assert released == []
    clock.advance(tuning.RELEASE_DELAY)
    assert released == [True]


def test_valid_tags_agrees_with_is_valid_tag():
    names = sorted(
        [f"v{i}" for i in range(50)]
        + ["latest", "bad tag", ".hidden", "-dash", "_ok", "a" * 128, "b" * 129, "", "x/y", "é"]
    )
    assert valid_tags(names) == [name for name in names if is_valid_tag(name)]
    assert valid_tags([]) == []


def test_valid_tags_with_line_breaks_in_names():
    # A file name may hold a line break; it must not split into valid tags.
    names = ["good", "evil\nlatest", "ok\n"]
    assert valid_tags(names) == ["good"]

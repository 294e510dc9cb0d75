"""Registry.repository_page: one catalog page without walking the whole tree.

Checked against the full walk (Registry.repositories) plus plain slicing,
on names whose sort order a depth-first walk would get wrong ("a-b" sorts
before "a/b"), nested names, directories that are not repositories, and
an include filter (what a caller may list).
"""

import bisect
import random

import pytest
import pytest_twisted

from registryd.storage import _paths as paths  # to plant states another registry may leave
from registryd.storage.drivers.memory import InMemoryDriver
from registryd.storage.registry import Registry

NAMES = [
    "a",
    "a-b",
    "a.b",
    "a/b",
    "a/b/c",
    "a/b-c",
    "a/b.c",
    "a-b/c",
    "a0",
    "b",
    "b/a",
    "c/d/e/f",
    "library/alpine",
    "library/alpine-mini",
    "library/alpine/extra",
    "z9",
    "zz/top",
]
# Directories that exist but are not repositories (no _manifests).
NOT_REPOSITORIES = ["c", "c/d", "c/d/e", "empty/dir", "library"]
# Repositories emptied by deletes: manifest directories without a revision.
EMPTIED = ["a/emptied", "b-emptied", "library/alpine/gone"]
REVISION = "_manifests/revisions/sha256/" + "ab" * 32 + "/link"


@pytest.fixture
def registry():
    return Registry(InMemoryDriver())


async def populate(registry):
    driver = registry.driver
    base = paths.repositories()
    for name in NAMES:
        await driver.put_content(f"{base}/{name}/{REVISION}", b"x")
    for name in EMPTIED:
        await driver.put_content(f"{base}/{name}/_manifests/revisions/sha256/.keep", b"")
        await driver.delete(f"{base}/{name}/_manifests/revisions/sha256/.keep")
        await driver.put_content(f"{base}/{name}/_manifests/tags/.keep", b"")
    for name in NOT_REPOSITORIES:
        await driver.put_content(f"{base}/{name}/_layers/sha256/ab/link", b"x")
    await driver.put_content(f"{base}/a/_uploads/u/startedat", b"x")


def expected_page(everything, last, limit, include=None):
    names = [n for n in everything if include is None or include(n)]
    start = bisect.bisect_right(names, last) if last else 0
    if limit is None:
        return names[start:], False
    return names[start : start + limit], start + limit < len(names)


@pytest_twisted.ensureDeferred
async def test_every_page_matches_the_full_walk(registry):
    await populate(registry)
    everything = await registry.repositories()
    assert everything == sorted(NAMES)
    for limit in (None, 0, 1, 2, 3, 5, 100):
        for last in [
            None,
            "",
            "0",
            "a",
            "a-",
            "a/b",
            "a/b/c",
            "b",
            "library",
            "library/alpine",
            "m",
            "zz/top",
            "zzz",
        ] + NAMES:
            got = await registry.repository_page(last or None, limit)
            assert got == expected_page(everything, last, limit), (last, limit)


@pytest_twisted.ensureDeferred
async def test_paging_through_yields_every_name_once_in_order(registry):
    await populate(registry)
    collected, last = [], None
    while True:
        page, more = await registry.repository_page(last, 3)
        collected += page
        if not more:
            break
        last = page[-1]
    assert collected == sorted(NAMES)


@pytest_twisted.ensureDeferred
async def test_include_filter(registry):
    await populate(registry)
    everything = await registry.repositories()

    def include(name):
        return not name.startswith("a")

    for limit in (1, 2, 4, None):
        for last in (None, "a/b", "b"):
            got = await registry.repository_page(last, limit, include=include)
            assert got == expected_page(everything, last, limit, include)


@pytest_twisted.ensureDeferred
async def test_random_trees(registry):
    rng = random.Random(7)
    alphabet = ["a", "b", "a-b", "a.b", "ab", "b-a", "c"]
    names = set()
    for _ in range(60):
        depth = rng.randint(1, 3)
        names.add("/".join(rng.choice(alphabet) for _ in range(depth)))
    base = paths.repositories()
    for name in names:
        await registry.driver.put_content(f"{base}/{name}/{REVISION}", b"x")
    everything = await registry.repositories()
    assert everything == sorted(names)
    for limit in (1, 4, 7):
        for last in [None] + rng.sample(sorted(names), 10) + ["a/", "b-", "c/c/c"]:
            assert await registry.repository_page(last, limit) == expected_page(
                everything, last, limit
            )

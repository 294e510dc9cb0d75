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


def settled_now(coroutine):
    """The result of ``coroutine`` over the in-memory driver, whose calls
    all answer at once: no reactor needed (hypothesis runs examples in a
    plain loop)."""
    from twisted.internet import defer

    results = []
    defer.ensureDeferred(coroutine).addBoth(results.append)
    (result,) = results
    if isinstance(result, Exception) or hasattr(result, "raiseException"):
        result.raiseException()
    return result


def test_pages_over_random_nested_names_equal_the_sorted_listing():
    """The walk starts each listed directory's children at ``last`` and
    hands them out one at a time: whatever the nesting, the names (``a-b``
    sorts before ``a/b``, ``a.b`` between them), the emptied repositories,
    ``last`` (a name, a beginning of one, anything) and ``n``, a page is
    the sorted full listing's slice after ``last``."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    component = st.sampled_from(["a", "b", "a-b", "a.b", "ab", "a0", "b-a", "c", "z"])
    name = st.lists(component, min_size=1, max_size=4).map("/".join)
    lasts = st.one_of(
        st.none(),
        name,
        st.text(alphabet="ab-./0z", max_size=8),
    )

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(
        st.sets(name, min_size=1, max_size=25),
        st.sets(name, max_size=5),
        st.lists(lasts, min_size=1, max_size=4),
        st.sampled_from([None, 0, 1, 2, 3, 5, 8]),
    )
    def check(names, emptied, lasts, limit):
        registry = Registry(InMemoryDriver())
        base = paths.repositories()

        async def populate():
            for repository in names:
                await registry.driver.put_content(f"{base}/{repository}/{REVISION}", b"x")
            for repository in emptied - names:
                await registry.driver.put_content(
                    f"{base}/{repository}/_manifests/tags/latest/current/link", b"x"
                )

        settled_now(populate())
        everything = sorted(names)
        for last in lasts:
            got = settled_now(registry.repository_page(last or None, limit))
            assert got == expected_page(everything, last, limit), (last, limit)
        collected, last = [], None
        while True:  # paging through, as a client does
            page, more = settled_now(registry.repository_page(last, limit or 1))
            collected += page
            if not more:
                break
            last = page[-1]
        assert collected == everything

    check()


class ListingRecorder(InMemoryDriver):
    """The in-memory driver, remembering every directory listed."""

    def __init__(self):
        super().__init__()
        self.listed = []

    def list_many(self, paths):
        self.listed.extend(paths)
        return super().list_many(paths)


@pytest_twisted.ensureDeferred
async def test_revisions_are_looked_for_in_sha512_only_where_sha256_has_none():
    """Nearly every revision is sha256: a catalog page asks about one
    revisions directory per repository, not one per digest algorithm,
    and a repository whose only revision is sha512 is still listed."""
    registry = Registry(ListingRecorder())
    base = paths.repositories()
    for name in ("a", "b", "c"):
        await registry.driver.put_content(f"{base}/{name}/{REVISION}", b"x")
    sha512_revision = "_manifests/revisions/sha512/" + "cd" * 64 + "/link"
    await registry.driver.put_content(f"{base}/only512/{sha512_revision}", b"x")
    assert await registry.repository_page(None, 10) == (["a", "b", "c", "only512"], False)
    sha512_listed = [path for path in registry.driver.listed if path.endswith("/sha512")]
    assert sha512_listed == [f"{base}/only512/_manifests/revisions/sha512"]


@pytest_twisted.ensureDeferred
async def test_kept_listings_never_serve_a_stale_page(tmp_path):
    """The filesystem driver keeps the listings of a walk while a stat shows
    each directory unchanged.  Another process (or node, on shared
    storage) pushing a repository, deleting one's last revision, or
    nesting one under another, all behind this registry's back, shows on
    the next page."""
    import os
    import shutil

    from registryd.storage.drivers.filesystem import FilesystemDriver
    from tests.unit.test_filesystem_fastpaths import age_tree

    registry = Registry(FilesystemDriver(str(tmp_path / "root")))
    base = paths.repositories()
    names = [f"team/r{index}" for index in range(6)] + ["solo"]
    for name in names:
        await registry.driver.put_content(f"{base}/{name}/{REVISION}", b"x")
    age_tree(tmp_path / "root")
    assert await registry.repository_page(None, 4) == (sorted(names)[:4], True)
    assert await registry.repository_page("team/r1", 4) == (
        ["team/r2", "team/r3", "team/r4", "team/r5"],
        False,
    )

    host = tmp_path / "root" / base.lstrip("/")
    for name in ("team/r2b", "team/r3/nested", "aaa"):
        path = host / name / REVISION
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    shutil.rmtree(host / "team" / "r4" / REVISION.rsplit("/", 2)[0])  # its only revision
    os.rename(host / "solo", host / "team" / "solo")
    expected = sorted(
        set(names) - {"team/r4", "solo"} | {"team/r2b", "team/r3/nested", "aaa", "team/solo"}
    )
    for last in (None, "team/r1", "team/r3"):
        assert await registry.repository_page(last, 4) == expected_page(expected, last, 4)

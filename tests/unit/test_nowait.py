"""registryd.storage.drivers.nowait: reads and stats that never wait for the disk."""

import os

import pytest

from registryd.storage.drivers import nowait

pytestmark = pytest.mark.skipif(not nowait.available(), reason="needs Linux openat2")


def _answer(function, *args):
    """Call until the caches are warm (a fresh path may not be cached yet)."""
    for _ in range(3):
        result = function(*args)
        if result is not nowait.WOULD_BLOCK:
            return result
        os.stat(args[0])  # warm the dentry cache the blocking way
    return result


def test_reads_a_small_cached_file(tmp_path):
    path = tmp_path / "link"
    path.write_bytes(b"sha256:" + b"a" * 64)
    assert _answer(nowait.read_small_file, str(path)) == b"sha256:" + b"a" * 64
    assert _answer(nowait.read_small_file, str(path)) == path.read_bytes()


def test_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert _answer(nowait.read_small_file, str(path)) == b""


def test_large_files_and_directories_are_left_to_threads(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (nowait.MAX_SIZE + 1))
    os.stat(big)
    assert nowait.read_small_file(str(big)) is nowait.WOULD_BLOCK
    assert nowait.read_small_file(str(tmp_path)) is nowait.WOULD_BLOCK


def test_missing_files_are_reported_or_left_to_threads(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        os.stat(missing)  # leaves a negative dentry
    try:
        result = nowait.read_small_file(missing)
    except FileNotFoundError:
        pass
    else:
        assert result is nowait.WOULD_BLOCK
    (tmp_path / "file").write_bytes(b"x")
    below_a_file = str(tmp_path / "file" / "below")
    try:
        result = nowait.stat_cached(below_a_file)
    except (FileNotFoundError, NotADirectoryError):
        pass
    else:
        assert result is nowait.WOULD_BLOCK


def test_stat(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"12345")
    result = _answer(nowait.stat_cached, str(path))
    assert result.st_size == 5
    assert _answer(nowait.stat_cached, str(tmp_path)).st_size == os.stat(tmp_path).st_size

"""Fixtures of the S3 tests (the session's Swift is ``tests.s3.swift.swift``)."""

import pytest


@pytest.fixture
def prefix(swift):
    """A fresh key prefix in the shared bucket (a driver's ``rootdirectory``),
    purged afterwards, so tests never see each other's objects."""
    prefix = swift.new_prefix()
    yield prefix
    swift.purge(prefix)

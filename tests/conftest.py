"""Shared pytest set-up.  Imports nothing from Twisted's reactor: pytest-twisted
installs its reactor in pytest_configure, after this module is imported."""

import pytest

# The driver suite lives outside test modules; rewrite its asserts too so
# failures show the values compared.
pytest.register_assert_rewrite("tests.drivers.driver_suite")

# The session's OpenStack Swift (S3 API), for the s3 driver's tests and the
# several-nodes tests under e2e/; it starts only when a test asks for it.
# The session's redis-server, for the nodes' shared state (tests/redis_server.py).
from tests.redis_server import redis_server, redis_server_process  # noqa: E402,F401
from tests.s3.swift import swift  # noqa: E402,F401

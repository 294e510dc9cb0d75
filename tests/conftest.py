"""Shared pytest set-up.  Imports nothing from Twisted's reactor: pytest-twisted
installs its reactor in pytest_configure, after this module is imported."""

import pytest

# The driver suite lives outside test modules; rewrite its asserts too so
# failures show the values compared.
pytest.register_assert_rewrite("tests.drivers.driver_suite")

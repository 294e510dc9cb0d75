"""Unit tests run on the one reactor of the whole session: a timer one
leaves behind fires later in whichever test is running then (a channel's
60 s idle timeout on a test transport once logged "Cannot unregister a
producer" into an API test's hypothesis examples a minute later)."""

import pytest

from tests import reactor_leaks

nothing_left_on_the_reactor = pytest.fixture(autouse=True)(
    reactor_leaks.nothing_left_by_a_unit_test
)

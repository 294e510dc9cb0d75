"""API tests serve on real ports of the session's one reactor: a timer, a
port or a connection one test leaves behind acts in whichever test runs
later.  (The end-to-end tests under ``tests/e2e`` run no reactor in the
test process: their servers and clients are processes of their own.)"""

import pytest_twisted

from tests import reactor_leaks
from tests.support import logged_failures, server  # noqa: F401  (fixtures)

nothing_left_on_the_reactor = pytest_twisted.async_yield_fixture(autouse=True)(
    reactor_leaks.nothing_left_by_an_api_test
)

from tests.support import server  # noqa: F401  (fixture)

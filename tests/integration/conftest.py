from tests.support import logged_failures, server  # noqa: F401  (fixtures)

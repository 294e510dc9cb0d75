"""The one error of the nodes' shared state."""


class SharedStateUnavailable(Exception):
    """Redis did not answer in time, or refused: the caller falls back to
    what this node knows by itself (it never fails a client's request)."""

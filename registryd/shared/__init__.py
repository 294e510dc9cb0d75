"""State shared by the registryd nodes that serve one storage backend.

One node keeps it in process (:mod:`registryd.shared.memory`); several
nodes behind a load balancer keep it in one Redis
(:mod:`registryd.shared.redis_state`), configured by Distribution's
``redis`` section.  Both provide :class:`registryd.interfaces.ISharedState`,
so the features using it (the login brake, ...) are written once.
"""

from registryd.shared.errors import SharedStateUnavailable

__all__ = ["SharedStateUnavailable", "shared_state_for"]


def shared_state_for(config, reactor=None):
    """The ISharedState a node with configuration ``config`` uses: Redis
    when ``config.redis`` is set, else in process."""
    if config.redis is None:
        from registryd.shared.memory import MemorySharedState

        return MemorySharedState(reactor=reactor)
    from registryd.shared.redis_state import RedisSharedState

    return RedisSharedState.from_config(config.redis, reactor=reactor)

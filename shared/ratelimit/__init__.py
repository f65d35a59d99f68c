"""Rate limits shared by every API process (see ``limiter`` for how and how exact)."""

from shared.ratelimit.limiter import Limits, RateLimiter
from shared.ratelimit.stores import (
    CounterStore,
    PostgresCounterStore,
    RedisCounterStore,
    make_store,
)

__all__ = [
    "CounterStore",
    "Limits",
    "PostgresCounterStore",
    "RateLimiter",
    "RedisCounterStore",
    "make_store",
]

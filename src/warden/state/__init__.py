"""Shared counters (budgets, rate limits, circuit breakers, invalidation) behind
one interface: in-process by default, Redis when a URL is configured."""

from __future__ import annotations

from typing import Any

from warden.state.base import (
    FLUSH_ALL,
    PICO_PER_USD,
    BreakerConfig,
    BreakerState,
    BudgetScope,
    RateBatchResult,
    RateLimit,
    RateResult,
    ReserveResult,
    StateStore,
    StateUnavailable,
    Usage,
    budget_period,
    from_pico,
    to_pico,
)
from warden.state.memory import MemoryState


def create_state(redis_url: str | None, **options: Any) -> StateStore:
    """The in-process store, or a Redis one when ``redis_url`` is set.

    ``options`` go to the backend (e.g. ``breaker=BreakerConfig(...)``).
    No I/O happens here: a Redis that is down shows in ``ping()`` and calls.
    """
    if redis_url is None:
        return MemoryState(**options)
    from warden.state.redis import RedisState  # redis-py only loaded when used

    return RedisState.from_url(redis_url, **options)


__all__ = [
    "FLUSH_ALL",
    "PICO_PER_USD",
    "BreakerConfig",
    "BreakerState",
    "BudgetScope",
    "MemoryState",
    "RateBatchResult",
    "RateLimit",
    "RateResult",
    "ReserveResult",
    "StateStore",
    "StateUnavailable",
    "Usage",
    "budget_period",
    "create_state",
    "from_pico",
    "to_pico",
]

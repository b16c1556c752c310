"""Pieces outside the shared contract: money conversion, period buckets,
validation, and the memory backend's own housekeeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from tests.support.state import FakeClock

from warden.state import (
    BreakerConfig,
    BudgetScope,
    MemoryState,
    RateLimit,
    budget_period,
    from_pico,
    to_pico,
)
from warden.state import memory as memory_module
from warden.state.base import rate_result


def test_to_pico_rounds_up_and_round_trips() -> None:
    assert to_pico(Decimal("1")) == 10**12
    assert to_pico(Decimal("0.0000000000001")) == 1  # 0.1 pico rounds up to 1
    assert to_pico(Decimal("0.000002500000000001")) == 2_500_001
    assert to_pico(Decimal("12345.678901234567")) == 12_345_678_901_234_567
    assert from_pico(12_345_678_901_234_567) == Decimal("12345.678901234567")
    assert from_pico(to_pico(Decimal("0.00042"))) == Decimal("0.00042")


def test_budget_period_buckets_and_lifetimes() -> None:
    at = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    assert budget_period("total", at) == ("total", None)
    assert budget_period("day", at, grace_s=0) == ("day:2026-11-30", 3600)
    assert budget_period("month", at, grace_s=10) == ("month:2026-11", 3610)
    december = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    assert budget_period("month", december, grace_s=0) == ("month:2026-12", 12 * 3600)
    # Buckets are UTC whatever zone the caller's clock is in.
    tokyo = datetime(2026, 12, 1, 8, 0, tzinfo=timezone(timedelta(hours=9)))
    assert budget_period("month", tokyo)[0] == "month:2026-11"
    with pytest.raises(ValueError):
        budget_period("week", at)  # type: ignore[arg-type]


def test_value_objects_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        BudgetScope("", 1)
    with pytest.raises(ValueError):
        BudgetScope("k", -1)
    with pytest.raises(ValueError):
        BudgetScope("k", 1, ttl_s=0)
    with pytest.raises(ValueError):
        BreakerConfig(failures=0)
    with pytest.raises(ValueError):
        BreakerConfig(cooldown_s=0)


def test_rate_result_describes_a_bucket() -> None:
    rl = RateLimit("k", 4, 60, cost=2)
    after_take = rate_result(rl, 3.0, consumed=True)
    assert (after_take.allowed, after_take.remaining, after_take.retry_after_s) == (True, 1, 0.0)
    assert after_take.reset_after_s == pytest.approx(45.0)
    refused = rate_result(rl, 3.0, consumed=False)
    assert (refused.allowed, refused.remaining) == (False, 1)
    assert refused.retry_after_s == pytest.approx(15.0)  # one unit must drain


async def test_memory_scope_counter_ends_with_its_period(clock: FakeClock) -> None:
    store = MemoryState(clock=clock)
    scope = BudgetScope("ws:day:2026-11-30", 100, ttl_s=60)
    await store.reserve([scope], 10, "r1")
    await store.settle("r1", 10)

    clock.advance(61)

    assert await store.usage("ws:day:2026-11-30") == (0, 0)


async def test_memory_forgets_finished_reservations_after_grace(clock: FakeClock) -> None:
    store = MemoryState(clock=clock, reservation_ttl_s=10)
    await store.reserve([BudgetScope("ws", 100)], 10, "r1")
    await store.settle("r1", 5)

    clock.advance(memory_module.RECORD_GRACE_S + 1)

    assert await store.settle("r1", 5) is False
    # Once forgotten, the id may be used again.
    assert (await store.reserve([BudgetScope("ws", 100)], 10, "r1")).ok


async def test_memory_sweep_drops_everything_expired(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_module, "_SWEEP_EVERY", 16)
    store = MemoryState(clock=clock, breaker=BreakerConfig(failures=5, window_s=10, cooldown_s=5))
    await store.reserve([BudgetScope("ws:old", 100, ttl_s=60)], 10, "old")
    await store.rate_acquire("rpm:old", 10, 60)
    await store.breaker_record("dep:flaky", False)
    await store.breaker_record("dep:dead", False)
    for _ in range(4):
        await store.breaker_record("dep:dead", False)  # now open: must be kept
    await store.rate_acquire("rpm:adjusted", 10, 60)
    await store.rate_adjust("rpm:adjusted", 10, 60, -1)  # drained to 0 already

    clock.advance(memory_module.RECORD_GRACE_S + 1000)
    for _ in range(16):
        await store.usage("tick")

    assert "old" not in store._reservations
    assert "ws:old" not in store._scopes
    assert store._buckets == {}
    assert set(store._breakers) == {"dep:dead"}
    assert await store.breaker_states(["dep:dead"]) == {"dep:dead": "half_open"}

"""The in-process state store's own corners: housekeeping, restored spend, argument
checks. The properties both backends share (budgets, rate buckets, the combined
admission, against one model) are in ``test_store_properties.py``."""

from __future__ import annotations

import pytest

from tests.support.state import FakeClock
from warden.state import MemoryState
from warden.state.base import RECORD_GRACE_S, BreakerConfig, BudgetScope, RateLimit


async def test_an_all_or_nothing_batch_takes_nothing_when_one_limit_is_full() -> None:
    state = MemoryState(clock=FakeClock())
    full, roomy = RateLimit("full", 1, 60.0), RateLimit("roomy", 10, 60.0)
    assert (await state.rate_acquire_many([full])).allowed
    batch = await state.rate_acquire_many([roomy, full])
    assert not batch.allowed and [r.allowed for r in batch.results] == [True, False]
    assert (await state.rate_adjust("roomy", 10, 60.0, 0)).remaining == 10


async def test_bad_arguments_are_refused() -> None:
    state = MemoryState(clock=FakeClock())
    with pytest.raises(ValueError, match="actual_pico"):
        await state.settle("r", -1)
    with pytest.raises(ValueError, match="spent_pico"):
        state.restore_spent(BudgetScope("b", 10), -1)
    assert (await state.reserve([BudgetScope("b", 10)], 5, "r")).ok
    with pytest.raises(ValueError, match="already used"):
        await state.reserve([BudgetScope("b", 10)], 1, "r")
    assert await state.settle("never-reserved", 1) is False


async def test_restore_spent_starts_the_counter_and_its_ttl() -> None:
    clock = FakeClock()
    state = MemoryState(clock=clock)
    state.restore_spent(BudgetScope("b", 100, ttl_s=10), 60)
    assert tuple(await state.usage("b")) == (60, 0)
    assert not (await state.reserve([BudgetScope("b", 100, ttl_s=10)], 41, "r1")).ok
    clock.advance(10)
    assert tuple(await state.usage("b")) == (0, 0)  # the period's counter expired


async def test_housekeeping_drops_what_expired() -> None:
    """Every few thousand operations the sweep drops expired reservations, counters and drained
    buckets, and closed breakers with no recent failure, so abandoned keys do not pile up."""
    clock = FakeClock()
    state = MemoryState(clock=clock, reservation_ttl_s=1.0)
    for i in range(50):
        await state.reserve([BudgetScope(f"s{i}", None, ttl_s=2)], 1, f"r{i}")
        await state.rate_acquire_many([RateLimit(f"k{i}", 10, 1.0)])
    await state.breaker_record("d", False)
    await state.reserve([BudgetScope("kept", None)], 1, "live", ttl_s=10**6)
    clock.advance(RECORD_GRACE_S + 100)
    sizes = (len(state._scopes), len(state._reservations), len(state._buckets), len(state._breakers))
    assert sizes == (51, 51, 50, 1)
    while state._ops % 4096:
        await state.usage("kept")
    assert (len(state._scopes), len(state._reservations), len(state._buckets), len(state._breakers)) == (
        1, 1, 0, 0)


async def test_a_breaker_below_its_threshold_stays_closed_and_a_trip_needs_a_cooldown() -> None:
    clock = FakeClock()
    state = MemoryState(clock=clock)
    assert await state.breaker_record("d", False) == "closed"  # one failure: still closed
    clock.advance(10**6)
    assert await state.breaker_allow("d") is True
    assert await state.breaker_states(["d", "never-seen"]) == {"d": "closed", "never-seen": "closed"}
    with pytest.raises(ValueError, match="^cooldown_s must be positive$"):
        await state.breaker_trip("d", 0)


async def test_restore_spent_of_zero_and_over_live_holds() -> None:
    clock = FakeClock()
    state = MemoryState(clock=clock)
    scope = BudgetScope("b", 100)
    assert (await state.reserve([scope], 30, "r1")).ok
    state.restore_spent(scope, 0)
    assert tuple(await state.usage("b")) == (0, 30)  # the live hold is kept
    state.restore_spent(scope, 50)
    assert tuple(await state.usage("b")) == (50, 30)


async def test_the_sweep_keeps_what_is_still_live() -> None:
    """A bucket still draining, and a breaker with recent failures, survive the sweep."""
    clock = FakeClock()
    state = MemoryState(clock=clock, breaker=BreakerConfig(failures=3, window_s=10, cooldown_s=5))
    await state.rate_acquire_many([RateLimit("slow", 1, 10**6)])  # drains over a million seconds
    await state.rate_acquire_many([RateLimit("full", 10, 60.0, 10)])  # drained after 60 s
    clock.advance(61)
    assert await state.breaker_record("d", False) == "closed"
    assert await state.breaker_record("d", False) == "closed"
    while state._ops % 4096:
        await state.usage("x")
    assert set(state._buckets) == {"slow"} and set(state._breakers) == {"d"}
    assert (await state.rate_adjust("slow", 1, 10**6, 0)).remaining == 0
    assert await state.breaker_record("d", False) == "open"  # the failures before the sweep still count


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    clock = FakeClock()
    state = MemoryState(clock=clock, breaker=BreakerConfig(failures=3, window_s=10, cooldown_s=5))
    await state.breaker_trip("d", 5)
    assert await state.breaker_states(["d"]) == {"d": "open"} and await state.breaker_allow("d") is False
    clock.advance(5)
    assert await state.breaker_allow("d") is True  # the half-open probe
    assert await state.breaker_states(["d"]) == {"d": "half_open"}
    assert await state.breaker_record("d", False) == "open"
    assert await state.breaker_states(["d"]) == {"d": "open"}
    clock.advance(5)
    assert await state.breaker_allow("d") is True
    assert await state.breaker_record("d", True) == "closed"
    assert await state.breaker_states(["d"]) == {"d": "closed"}

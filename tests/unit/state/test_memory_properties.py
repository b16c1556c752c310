"""Properties of the in-process state store's budgets and rate limits.

Concurrent requests (asyncio tasks that yield between their steps, in orders
Hypothesis picks) reserve, settle and release against a model written out
here; after every step the store must agree with the model, and no limited
counter may ever hold more than its limit. Rate buckets are checked the same
way against the leaky-bucket rule, under a clock that only moves when told.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.properties import FEW, PROPERTIES
from tests.support.state import FakeClock
from warden.state import MemoryState
from warden.state.base import RATE_EPSILON, RECORD_GRACE_S, BreakerConfig, BudgetScope, RateLimit

TTL = 30.0


@dataclass
class ModelScope:
    limit: int | None
    ttl: int | None
    spent: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)
    expires_at: float | None = None


class Model:
    """The budget rules, as plainly as they can be said."""

    def __init__(self) -> None:
        self.scopes: dict[str, ModelScope] = {}
        self.records: dict[str, tuple[tuple[str, ...], float, bool]] = {}  # rid -> keys, forget_at, done

    def scope(self, s: BudgetScope, now: float) -> ModelScope:
        m = self.scopes.get(s.key)
        if m is None or (m.expires_at is not None and m.expires_at <= now):
            m = self.scopes[s.key] = ModelScope(s.limit_pico, s.ttl_s)
        m.limit, m.ttl = s.limit_pico, s.ttl_s
        m.holds = {r: h for r, h in m.holds.items() if h[1] > now}
        return m

    def reserved(self, key: str) -> int:
        return sum(a for a, _ in self.scopes[key].holds.values())

    def reserve(self, scopes: list[BudgetScope], amount: int, rid: str, now: float) -> bool:
        ms = [self.scope(s, now) for s in scopes]
        ok = all(m.limit is None or m.spent + sum(a for a, _ in m.holds.values()) + amount <= m.limit
                 for m in ms)
        if ok:
            for m in ms:
                m.holds[rid] = (amount, now + TTL)
                if m.ttl is not None:
                    m.expires_at = now + m.ttl
            self.records[rid] = (tuple(s.key for s in scopes), now + TTL + RECORD_GRACE_S, False)
        return ok

    def finish(self, rid: str, actual: int, scopes: dict[str, BudgetScope], now: float) -> bool:
        record = self.records.get(rid)
        if record is None or record[1] <= now or record[2]:
            return False
        for key in record[0]:
            m = self.scope(scopes[key], now)
            m.holds.pop(rid, None)
            m.spent += actual
            if m.ttl is not None:
                m.expires_at = now + m.ttl
        self.records[rid] = (record[0], now + RECORD_GRACE_S, True)
        return True


@dataclass(frozen=True)
class Request:
    amount: int
    actual_share: float  # of the amount, for a settle
    fails: bool  # released instead of settled
    scopes: tuple[int, ...]  # which of the scopes it charges
    pauses: int  # yields between reserve and settle
    wait_s: float  # the clock moves by this much before it settles


requests = st.builds(Request, st.integers(0, 400), st.floats(0, 1), st.booleans(),
                     st.sets(st.integers(0, 2), min_size=1).map(lambda s: tuple(sorted(s))),
                     st.integers(0, 3), st.sampled_from([0.0, 0.0, 1.0, TTL + 1, TTL + RECORD_GRACE_S + 1]))
scope_sets = st.tuples(st.none() | st.integers(0, 1500), st.none() | st.integers(0, 1500),
                       st.none() | st.integers(0, 1500), st.sampled_from([None, 5, 100]))


@FEW
@given(scope_sets, st.lists(requests, min_size=1, max_size=10))
async def test_concurrent_reservations_never_exceed_a_budget(limits: tuple, reqs: list[Request]) -> None:
    clock = FakeClock()
    state = MemoryState(clock=clock, reservation_ttl_s=TTL)
    *limit_picos, ttl = limits
    scopes = [BudgetScope(f"b{i}", limit, ttl) for i, limit in enumerate(limit_picos)]
    by_key = {s.key: s for s in scopes}
    model = Model()

    async def check() -> None:
        for s in scopes:
            model.scope(s, clock())
            used = await state.usage(s.key)
            assert tuple(used) == (model.scopes[s.key].spent, model.reserved(s.key))
            if s.limit_pico is not None and not any(r.wait_s > TTL for r in reqs):
                # Holds only ever charge what fits, and a settle never charges more than its hold.
                assert used.spent_pico + used.reserved_pico <= s.limit_pico

    async def one(i: int, r: Request) -> None:
        chosen = [scopes[j] for j in r.scopes]
        rid = f"r{i}"
        result = await state.reserve(chosen, r.amount, rid)
        assert result.ok == model.reserve(chosen, r.amount, rid, clock())
        for s in chosen:
            m = model.scopes[s.key]
            want = None if s.limit_pico is None else max(0, s.limit_pico - m.spent - model.reserved(s.key))
            assert result.remaining_pico[s.key] == want
        if not result.ok:
            assert result.denied_scope == next(
                s.key for s in chosen if s.limit_pico is not None
                and model.scopes[s.key].spent + model.reserved(s.key) + r.amount > s.limit_pico)
        await check()
        for _ in range(r.pauses):
            await asyncio.sleep(0)
        clock.advance(r.wait_s)
        if r.fails:
            done = await state.release(rid)
            assert done == model.finish(rid, 0, by_key, clock())
        else:
            actual = int(r.amount * r.actual_share)
            done = await state.settle(rid, actual)
            assert done == model.finish(rid, actual, by_key, clock())
        await check()
        assert await state.settle(rid, 1) is False  # exactly once
        assert await state.release(rid) is False

    await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs)))
    await check()
    for s in scopes:
        assert model.reserved(s.key) == 0 or clock() < max(h[1] for h in model.scopes[s.key].holds.values())


@PROPERTIES
@given(st.integers(1, 50), st.integers(1, 10), st.integers(1, 80))
async def test_a_frozen_window_admits_exactly_the_limit(limit: int, cost: int, tries: int) -> None:
    state = MemoryState(clock=FakeClock())
    rl = RateLimit("k", limit, 60.0, cost)
    admitted = 0
    for _ in range(tries):
        batch = await state.rate_acquire_many([rl])
        assert batch.allowed == batch.results[0].allowed
        admitted += batch.allowed
        r = batch.results[0]
        assert r.remaining == limit - admitted * cost
        if not batch.allowed:
            assert r.retry_after_s is None if cost > limit else r.retry_after_s > 0
    assert admitted == min(tries, limit // cost)


rate_ops = st.lists(st.tuples(st.sampled_from(["acquire", "acquire", "adjust"]), st.integers(-20, 20),
                              st.floats(0, 40)), min_size=1, max_size=40)


@PROPERTIES
@given(st.integers(1, 60), st.integers(1, 12), rate_ops)
async def test_buckets_follow_the_leaky_bucket_rule(limit: int, cost: int, ops: list) -> None:
    """Level = what was taken, drained at limit/period; admitted only while it fits; so any
    interval of t seconds admits at most limit + t * limit / period units."""
    clock = FakeClock()
    state = MemoryState(clock=clock)
    period = 60.0
    level, admitted_log = 0.0, []
    for kind, delta, wait in ops:
        clock.advance(wait)
        level = max(0.0, level - wait * limit / period)
        if kind == "acquire":
            batch = await state.rate_acquire_many([RateLimit("k", limit, period, cost),
                                                   RateLimit("other", 10_000, period, 1)])
            fits = level + cost <= limit + RATE_EPSILON
            assert batch.allowed == fits
            if fits:
                level += cost
                admitted_log.append((clock(), cost))
            result = batch.results[0]
        else:
            result = await state.rate_adjust("k", limit, period, delta)
            level = max(0.0, level + delta)
        assert result.remaining == max(0, math.floor(limit - level + RATE_EPSILON))
        assert result.reset_after_s == pytest.approx(level * period / limit, abs=1e-6)
    if all(kind == "acquire" for kind, _, _ in ops):  # no refunds: the window bound holds
        for i, (start, _) in enumerate(admitted_log):
            for end, _ in admitted_log[i:]:
                taken = sum(c for t, c in admitted_log if start <= t <= end)
                assert taken <= limit + (end - start) * limit / period + RATE_EPSILON


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

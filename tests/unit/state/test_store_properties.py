"""Properties of budgets, rate limits and the combined admission, on both backends
against one model.

Concurrent requests (asyncio tasks that yield between their steps, in orders
Hypothesis picks) reserve or admit, then settle or release, against a model
written out here; after every step the store must agree with the model, and no
limited counter may ever hold more than its limit. Rate buckets follow the
leaky-bucket rule under a clock that only moves when told (by whole seconds, so
the backends' arithmetic, in seconds or in microseconds, rounds alike).

Each store call and the model's step after it run under one lock: the memory
store never yields inside a call, so there the lock is never waited on; Redis
yields on every round trip, and the lock keeps the model's order the store's.
Redis' key TTLs run on real time, not the test's clock (they are only garbage
collection there), so on Redis scope TTLs are left unset and no wait passes a
reservation record's grace; the memory store gets both.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.properties import FEW, PROPERTIES
from tests.support.state import FakeClock, RedisFactory
from warden.state import MemoryState, StateStore
from warden.state.base import RATE_EPSILON, RECORD_GRACE_S, BudgetScope, RateLimit

TTL = 30.0
PERIOD = 3600.0  # long: a Redis bucket key's real-time expiry never comes within a test
Opener = Callable[..., AbstractAsyncContextManager[StateStore]]


@pytest.fixture(scope="session", params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, Opener]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    @contextlib.asynccontextmanager
    async def open_store(clock: FakeClock, **options: object) -> AsyncIterator[StateStore]:
        if url is None:
            yield MemoryState(clock=clock, **options)  # type: ignore[arg-type]
            return
        factory = RedisFactory(url, clock)
        try:
            yield factory(**options)
        finally:
            await factory.cleanup()

    return request.param, open_store


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

    def fits(self, scopes: list[BudgetScope], amount: int, now: float) -> bool:
        ms = [self.scope(s, now) for s in scopes]
        return all(m.limit is None or m.spent + sum(a for a, _ in m.holds.values()) + amount <= m.limit
                   for m in ms)

    def reserve(self, scopes: list[BudgetScope], amount: int, rid: str, now: float) -> bool:
        ok = self.fits(scopes, amount, now)
        if ok:
            for s in scopes:
                m = self.scopes[s.key]
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


class Buckets:
    """Leaky buckets: a level drains at limit / period; a take adds its cost."""

    def __init__(self) -> None:
        self.levels: dict[str, tuple[float, float]] = {}  # key -> level, when

    def level(self, rl: RateLimit, now: float) -> float:
        level, at = self.levels.get(rl.key, (0.0, now))
        return max(0.0, level - (now - at) * rl.limit / PERIOD)

    def fit(self, limits: list[RateLimit], now: float) -> bool:
        return all(self.level(rl, now) + rl.cost <= rl.limit + RATE_EPSILON for rl in limits)

    def take(self, limits: list[RateLimit], now: float) -> None:
        for rl in limits:
            self.levels[rl.key] = (self.level(rl, now) + rl.cost, now)

    def remaining(self, rl: RateLimit, now: float) -> int:
        return max(0, math.floor(rl.limit - self.level(rl, now) + RATE_EPSILON))


@dataclass(frozen=True)
class Request:
    amount: int
    actual_share: float  # of the amount, for a settle
    fails: bool  # released instead of settled
    scopes: tuple[int, ...]  # which of the scopes it charges
    pauses: int  # yields between reserve and settle
    wait_s: float  # the clock moves by this much before it settles
    rates: tuple[int, ...] = ()  # which rate limits it takes from (admit; none: reserve)
    tokens: int = 0  # the token limit's cost


LATE = TTL + RECORD_GRACE_S + 1  # past the record's grace: the settle is refused
requests = st.builds(Request, st.integers(0, 400), st.floats(0, 1), st.booleans(),
                     st.sets(st.integers(0, 2), min_size=1).map(lambda s: tuple(sorted(s))),
                     st.integers(0, 3), st.sampled_from([0.0, 0.0, 1.0, TTL + 1, LATE]),
                     st.sets(st.integers(0, 1)).map(lambda s: tuple(sorted(s))), st.integers(0, 900))
scope_sets = st.tuples(st.none() | st.integers(0, 1500), st.none() | st.integers(0, 1500),
                       st.none() | st.integers(0, 1500), st.sampled_from([None, 5, 100]))
rate_sets = st.tuples(st.integers(1, 6), st.integers(1, 2000))


@FEW
@given(scope_sets, rate_sets, st.lists(requests, min_size=1, max_size=10))
async def test_concurrent_admissions_never_exceed_a_budget_or_a_limit(
        backend: tuple[str, Opener], limits: tuple, rates: tuple, reqs: list[Request]) -> None:
    """Reservations alone, and admissions (rate units and a hold in one step) beside them."""
    kind, open_store = backend
    if kind == "redis":
        reqs = [replace(r, wait_s=TTL + 1) if r.wait_s == LATE else r for r in reqs]
    clock = FakeClock()
    *limit_picos, ttl = limits
    ttl = ttl if kind == "memory" else None
    scopes = [BudgetScope(f"b{i}", limit, ttl) for i, limit in enumerate(limit_picos)]
    by_key = {s.key: s for s in scopes}
    rpm, tpm = rates
    model, buckets, lock = Model(), Buckets(), asyncio.Lock()

    async def check(state: StateStore) -> None:
        for s in scopes:
            model.scope(s, clock())
            used = await state.usage(s.key)
            assert tuple(used) == (model.scopes[s.key].spent, model.reserved(s.key))
            if s.limit_pico is not None and not any(r.wait_s > TTL for r in reqs):
                # Holds only ever charge what fits, and a settle never charges more than its hold.
                assert used.spent_pico + used.reserved_pico <= s.limit_pico
        for rl in (RateLimit("rpm", rpm, PERIOD), RateLimit("tpm", tpm, PERIOD)):
            got = await state.rate_adjust(rl.key, rl.limit, rl.period_s, 0)
            assert got.remaining == buckets.remaining(rl, clock())

    async def admit(state: StateStore, r: Request, chosen: list[BudgetScope], rid: str) -> bool:
        limits = [[RateLimit("rpm", rpm, PERIOD), RateLimit("tpm", tpm, PERIOD, r.tokens)][i]
                  for i in r.rates]
        now = clock()
        if not limits:
            result = await state.reserve(chosen, r.amount, rid)
        else:
            got = await state.admit(limits, chosen, r.amount, rid)
            room = buckets.fit(limits, now)
            assert got.rate.allowed == room
            if not room:
                assert got.reserve is None and not got.ok
                return False
            assert got.reserve is not None
            result = got.reserve
        assert result.ok == model.reserve(chosen, r.amount, rid, now)
        if limits and result.ok:
            buckets.take(limits, now)
        if limits:
            assert [x.remaining for x in got.rate.results] == [buckets.remaining(rl, now) for rl in limits]
        for s in chosen:
            m = model.scopes[s.key]
            want = None if s.limit_pico is None else max(0, s.limit_pico - m.spent - model.reserved(s.key))
            assert result.remaining_pico[s.key] == want
        if not result.ok:
            assert result.denied_scope == next(
                s.key for s in chosen if s.limit_pico is not None
                and model.scopes[s.key].spent + model.reserved(s.key) + r.amount > s.limit_pico)
        return result.ok

    async def one(state: StateStore, i: int, r: Request) -> None:
        chosen = [scopes[j] for j in r.scopes]
        rid = f"r{i}"
        async with lock:
            await admit(state, r, chosen, rid)
            await check(state)
        for _ in range(r.pauses):
            await asyncio.sleep(0)
        async with lock:
            clock.advance(r.wait_s)
            if r.fails:
                done = await state.release(rid)
                assert done == model.finish(rid, 0, by_key, clock())
            else:
                actual = int(r.amount * r.actual_share)
                done = await state.settle(rid, actual)
                assert done == model.finish(rid, actual, by_key, clock())
            await check(state)
            assert await state.settle(rid, 1) is False  # exactly once
            assert await state.release(rid) is False

    async with open_store(clock, reservation_ttl_s=TTL) as state:
        await asyncio.gather(*(one(state, i, r) for i, r in enumerate(reqs)))
        await check(state)
    for s in scopes:
        assert model.reserved(s.key) == 0 or clock() < max(h[1] for h in model.scopes[s.key].holds.values())


@PROPERTIES
@given(st.integers(1, 50), st.integers(1, 10), st.integers(1, 80))
async def test_a_frozen_window_admits_exactly_the_limit(
        backend: tuple[str, Opener], limit: int, cost: int, tries: int) -> None:
    rl = RateLimit("k", limit, PERIOD, cost)
    admitted = 0
    async with backend[1](FakeClock()) as state:
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
                              st.integers(0, 40 * 60).map(float)), min_size=1, max_size=40)


@PROPERTIES
@given(st.integers(1, 60), st.integers(1, 12), rate_ops)
async def test_buckets_follow_the_leaky_bucket_rule(
        backend: tuple[str, Opener], limit: int, cost: int, ops: list) -> None:
    """Level = what was taken, drained at limit/period; admitted only while it fits; so any
    interval of t seconds admits at most limit + t * limit / period units."""
    clock = FakeClock()
    level, admitted_log = 0.0, []
    async with backend[1](clock) as state:
        for kind, delta, wait in ops:
            clock.advance(wait)
            level = max(0.0, level - wait * limit / PERIOD)
            if kind == "acquire":
                batch = await state.rate_acquire_many([RateLimit("k", limit, PERIOD, cost),
                                                       RateLimit("other", 10_000, PERIOD, 1)])
                fits = level + cost <= limit + RATE_EPSILON
                assert batch.allowed == fits
                if fits:
                    level += cost
                    admitted_log.append((clock(), cost))
                result = batch.results[0]
            else:
                result = await state.rate_adjust("k", limit, PERIOD, delta)
                level = max(0.0, level + delta)
            assert result.remaining == max(0, math.floor(limit - level + RATE_EPSILON))
            assert result.reset_after_s == pytest.approx(level * PERIOD / limit, abs=1e-6)
    if all(kind == "acquire" for kind, _, _ in ops):  # no refunds: the window bound holds
        for i, (start, _) in enumerate(admitted_log):
            for end, _ in admitted_log[i:]:
                taken = sum(c for t, c in admitted_log if start <= t <= end)
                assert taken <= limit + (end - start) * limit / PERIOD + RATE_EPSILON

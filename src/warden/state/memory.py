"""In-process shared state: the embedded default (one process, one event loop).

Nothing here outlives the process: at start the budget counters are rebuilt
from the spend ledger (``restore_spent``, called from services.py), and with
more than one worker process Redis is required (config.py refuses otherwise).

Every method runs to completion without awaiting in between, so each is atomic
with respect to other coroutines; no locks are needed. Time comes from an
injectable ``clock`` (seconds, default ``time.monotonic``) so tests can move it.
Expired entries are dropped lazily when touched, plus a sweep every few
thousand operations so abandoned keys do not pile up.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from warden.state.base import (
    DEFAULT_RESERVATION_TTL_S,
    RECORD_GRACE_S,
    AdmitResult,
    BreakerConfig,
    BreakerState,
    BudgetScope,
    InvalidationCallback,
    RateBatchResult,
    RateLimit,
    RateResult,
    ReserveResult,
    StateStore,
    Usage,
    check_rate_batch,
    check_reserve_args,
    deliver,
    rate_fits,
    rate_leak,
    rate_result,
    remaining_after,
)

_SWEEP_EVERY = 4096


def _fit(limits: Sequence[RateLimit], levels: list[float]) -> bool:
    return all(rate_fits(lv, rl.cost, rl.limit) for rl, lv in zip(limits, levels, strict=True))


def _batch(
    limits: Sequence[RateLimit], levels: list[float], *, room: bool, taken: bool
) -> RateBatchResult:
    return RateBatchResult(
        room,
        tuple(rate_result(rl, lv, consumed=taken) for rl, lv in zip(limits, levels, strict=True)),
    )


@dataclass(slots=True)
class _Scope:
    spent: int = 0
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (amount, expires)
    expires_at: float | None = None


@dataclass(slots=True)
class _Reservation:
    amount: int
    scopes: tuple[BudgetScope, ...]
    forget_at: float
    done: bool = False


@dataclass(slots=True)
class _Bucket:
    level: float
    updated: float
    drained_at: float  # when the level reaches 0 again (so the sweep may drop it)


@dataclass(slots=True)
class _Breaker:
    state: BreakerState = "closed"
    since: float = 0.0  # when it opened, or when the half-open probe was claimed
    failures: deque[float] = field(default_factory=deque)
    cooldown_s: float | None = None  # set by a trip; None: the store's cooldown


class MemoryState(StateStore):
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        breaker: BreakerConfig | None = None,
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
    ) -> None:
        self._clock = clock
        self._breaker_cfg = breaker or BreakerConfig()
        self._reservation_ttl_s = reservation_ttl_s
        self._scopes: dict[str, _Scope] = {}
        self._reservations: dict[str, _Reservation] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._callbacks: list[InvalidationCallback] = []
        self._ops = 0

    # ------------------------------------------------------------ budgets

    async def reserve(
        self,
        scopes: Sequence[BudgetScope],
        amount_pico: int,
        reservation_id: str,
        *,
        ttl_s: float | None = None,
    ) -> ReserveResult:
        check_reserve_args(scopes, amount_pico)
        now = self._tick()
        self._check_unused(reservation_id, now)
        return self._reserve(scopes, amount_pico, reservation_id, ttl_s, now)

    async def admit(
        self,
        limits: Sequence[RateLimit],
        scopes: Sequence[BudgetScope],
        amount_pico: int,
        reservation_id: str,
        *,
        ttl_s: float | None = None,
    ) -> AdmitResult:
        check_rate_batch(limits)
        check_reserve_args(scopes, amount_pico)
        now = self._tick()
        self._check_unused(reservation_id, now)
        levels = [self._level(rl, now) for rl in limits]
        if not _fit(limits, levels):
            return AdmitResult(_batch(limits, levels, room=False, taken=False), None)
        reserved = self._reserve(scopes, amount_pico, reservation_id, ttl_s, now)
        if reserved.ok:
            levels = self._take(limits, levels, now)
        return AdmitResult(_batch(limits, levels, room=True, taken=reserved.ok), reserved)

    def _check_unused(self, reservation_id: str, now: float) -> None:
        if self._live_reservation(reservation_id, now) is not None:
            raise ValueError("reservation id already used")

    def _reserve(
        self,
        scopes: Sequence[BudgetScope],
        amount_pico: int,
        reservation_id: str,
        ttl_s: float | None,
        now: float,
    ) -> ReserveResult:
        counters = [self._scope(s.key, now) for s in scopes]
        denied = next(
            (
                s.key
                for s, c in zip(scopes, counters, strict=True)
                if s.limit_pico is not None and c.spent + c.reserved + amount_pico > s.limit_pico
            ),
            None,
        )
        if denied is None:
            expires = now + (ttl_s if ttl_s is not None else self._reservation_ttl_s)
            for s, c in zip(scopes, counters, strict=True):
                c.reserved += amount_pico
                c.holds[reservation_id] = (amount_pico, expires)
                self._touch(c, s, now)
            self._reservations[reservation_id] = _Reservation(
                amount_pico, tuple(scopes), forget_at=expires + RECORD_GRACE_S
            )
        return ReserveResult(
            ok=denied is None,
            denied_scope=denied,
            remaining_pico={
                s.key: remaining_after(s.limit_pico, c.spent, c.reserved)
                for s, c in zip(scopes, counters, strict=True)
            },
        )

    # ``scopes`` is only a hint for stores that must look the reservation up first;
    # this one holds the record itself.
    async def settle(
        self, reservation_id: str, actual_pico: int, *, scopes: Sequence[BudgetScope] | None = None
    ) -> bool:
        if actual_pico < 0:
            raise ValueError("actual_pico must be >= 0")
        return self._finish(reservation_id, actual_pico)

    async def release(
        self, reservation_id: str, *, scopes: Sequence[BudgetScope] | None = None
    ) -> bool:
        return self._finish(reservation_id, 0)

    def restore_spent(self, scope: BudgetScope, spent_pico: int) -> None:
        """Start ``scope``'s counter at ``spent_pico`` (at start, from the spend ledger:
        this store forgets everything when the process ends; Redis does not)."""
        if spent_pico < 0:
            raise ValueError("spent_pico must be >= 0")
        now = self._tick()
        counter = self._scope(scope.key, now)
        counter.spent = spent_pico
        self._touch(counter, scope, now)

    async def usage(self, scope_key: str) -> Usage:
        counter = self._scope(scope_key, self._tick())
        return Usage(counter.spent, counter.reserved)

    def _finish(self, reservation_id: str, actual_pico: int) -> bool:
        now = self._tick()
        record = self._live_reservation(reservation_id, now)
        if record is None or record.done:
            return False
        for s in record.scopes:
            counter = self._scope(s.key, now)
            hold = counter.holds.pop(reservation_id, None)
            if hold is not None:
                counter.reserved -= hold[0]
            counter.spent += actual_pico
            self._touch(counter, s, now)
        record.done = True
        record.forget_at = now + RECORD_GRACE_S
        return True

    def _live_reservation(self, reservation_id: str, now: float) -> _Reservation | None:
        record = self._reservations.get(reservation_id)
        if record is not None and record.forget_at <= now:
            del self._reservations[reservation_id]
            return None
        return record

    def _scope(self, key: str, now: float) -> _Scope:
        """The live counter for ``key``, with holds past their TTL dropped."""
        counter = self._scopes.get(key)
        if counter is None or (counter.expires_at is not None and counter.expires_at <= now):
            counter = self._scopes[key] = _Scope()
        for rid, (amount, expires) in list(counter.holds.items()):
            if expires <= now:
                counter.reserved -= amount
                del counter.holds[rid]
        return counter

    @staticmethod
    def _touch(counter: _Scope, scope: BudgetScope, now: float) -> None:
        if scope.ttl_s is not None:
            counter.expires_at = now + scope.ttl_s

    # ------------------------------------------------------------ rate limits

    async def rate_acquire_many(self, limits: Sequence[RateLimit]) -> RateBatchResult:
        check_rate_batch(limits)
        now = self._tick()
        levels = [self._level(rl, now) for rl in limits]
        allowed = _fit(limits, levels)
        if allowed:
            levels = self._take(limits, levels, now)
        return _batch(limits, levels, room=allowed, taken=allowed)

    def _take(self, limits: Sequence[RateLimit], levels: list[float], now: float) -> list[float]:
        levels = [lv + rl.cost for rl, lv in zip(limits, levels, strict=True)]
        for rl, lv in zip(limits, levels, strict=True):
            self._store_bucket(rl, lv, now)
        return levels

    async def rate_adjust_many(
        self, adjustments: Sequence[tuple[RateLimit, int]]
    ) -> tuple[RateResult, ...]:
        check_rate_batch([rl for rl, _ in adjustments])
        now = self._tick()
        out: list[RateResult] = []
        for rl, delta in adjustments:
            level = max(0.0, self._level(rl, now) + delta)
            self._store_bucket(rl, level, now)
            out.append(rate_result(rl, level, consumed=True))
        return tuple(out)

    def _store_bucket(self, rl: RateLimit, level: float, now: float) -> None:
        self._buckets[rl.key] = _Bucket(level, now, now + level * rl.period_s / rl.limit)

    def _level(self, rl: RateLimit, now: float) -> float:
        bucket = self._buckets.get(rl.key)
        if bucket is None:
            return 0.0
        return rate_leak(bucket.level, now - bucket.updated, rl.limit, rl.period_s)

    # ------------------------------------------------------------ breakers

    async def breaker_allow(self, deployment_id: str) -> bool:
        now = self._tick()
        b = self._breakers.get(deployment_id)
        if b is None or b.state == "closed":
            return True
        # Open past its cooldown, or a half-open probe that never reported.
        if now >= b.since + self._cooldown(b):
            b.state, b.since = "half_open", now
            return True
        return False

    async def breaker_record(self, deployment_id: str, ok: bool) -> BreakerState:
        now = self._tick()
        cfg = self._breaker_cfg
        b = self._breakers.get(deployment_id)
        if b is None or b.state == "closed":
            if ok:
                return "closed"
            b = self._breakers.setdefault(deployment_id, _Breaker())
            b.failures.append(now)
            while b.failures and b.failures[0] <= now - cfg.window_s:
                b.failures.popleft()
            if len(b.failures) >= cfg.failures:
                self._breakers[deployment_id] = _Breaker("open", now)
                return "open"
            return "closed"
        if b.state == "open":
            return "open"  # a straggler that started before the breaker opened
        if ok:  # the half-open probe succeeded
            del self._breakers[deployment_id]
            return "closed"
        self._breakers[deployment_id] = _Breaker("open", now, cooldown_s=b.cooldown_s)
        return "open"

    async def breaker_trip(self, deployment_id: str, cooldown_s: float) -> None:
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self._breakers[deployment_id] = _Breaker("open", self._tick(), cooldown_s=cooldown_s)

    def _cooldown(self, b: _Breaker) -> float:
        return self._breaker_cfg.cooldown_s if b.cooldown_s is None else b.cooldown_s

    async def breaker_states(self, deployment_ids: Iterable[str]) -> dict[str, BreakerState]:
        now = self._tick()
        out: dict[str, BreakerState] = {}
        for dep in deployment_ids:
            b = self._breakers.get(dep)
            if b is None or b.state == "closed":
                out[dep] = "closed"
            elif b.state == "open" and now < b.since + self._cooldown(b):
                out[dep] = "open"
            else:
                out[dep] = "half_open"
        return out

    # ------------------------------------------------------------ invalidation

    async def publish(self, topic: str, key: str) -> None:
        await deliver(self._callbacks, topic, key)

    async def subscribe(self, callback: InvalidationCallback) -> Callable[[], None]:
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------ health

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._callbacks.clear()

    # ------------------------------------------------------------ housekeeping

    def _tick(self) -> float:
        now = self._clock()
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        for rid in [r for r, rec in self._reservations.items() if rec.forget_at <= now]:
            del self._reservations[rid]
        for key in [
            k for k, c in self._scopes.items() if c.expires_at is not None and c.expires_at <= now
        ]:
            del self._scopes[key]
        # A drained bucket and a missing one both mean level 0.
        for key in [k for k, b in self._buckets.items() if b.drained_at <= now]:
            del self._buckets[key]
        window = self._breaker_cfg.window_s
        for dep in [
            d
            for d, b in self._breakers.items()
            if b.state == "closed" and (not b.failures or b.failures[-1] <= now - window)
        ]:
            del self._breakers[dep]

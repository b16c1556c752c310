"""Budgets and rate limits on Redis: the half of :class:`~warden.state.redis.RedisState`
that counts money and units (reserve -> settle, admit, rate buckets).

Every call is one Lua script (``_redis_scripts.py``), laid out by
``_redis_py``; the rules (server time, exact money, failure) are the
Redis backend's, described in ``redis.py``. ``RedisState`` sets the attributes
declared here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from warden.state._redis_listener import DOWN
from warden.state.base import (
    RECORD_GRACE_S,
    AdmitResult,
    BudgetScope,
    RateBatchResult,
    RateLimit,
    RateResult,
    ReserveResult,
    Settled,
    StateStore,
    StateUnavailable,
    Usage,
    check_rate_batch,
    check_reserve_args,
    rate_result,
    remaining_after,
)


# ------------------------------------------------------------ script layout
# How calls are laid out as the scripts' KEYS and ARGV, and replies read back.

KeyOf = Callable[[str, str], str]  # (kind, name) -> the prefixed Redis key


def record_of(scopes: Sequence[BudgetScope]) -> str:
    """What RESERVE stores under a reservation: its scopes, for FINISH to find."""
    return orjson.dumps([[s.key, s.ttl_s] for s in scopes]).decode()


def scope_keys(key: KeyOf, scope_key: str) -> tuple[str, str]:
    return key("b", scope_key), key("bz", scope_key)


def reserve_call(
    key: KeyOf,
    scopes: Sequence[BudgetScope],
    amount_pico: int,
    reservation_id: str,
    hold_s: float,
    now: str,
) -> tuple[list[str], list[Any], list[str]]:
    """RESERVE's KEYS, its six leading ARGV, and the (limit, ttl) ARGV per scope."""
    keys = [key("r", reservation_id)]
    args: list[Any] = [
        str(amount_pico),
        reservation_id,
        str(int(hold_s * 1_000_000)),
        now,
        str(int((hold_s + RECORD_GRACE_S) * 1000)),
        record_of(scopes),
    ]
    scope_args: list[str] = []
    for s in scopes:
        keys.extend(scope_keys(key, s.key))
        scope_args += [
            "" if s.limit_pico is None else str(s.limit_pico),
            "" if s.ttl_s is None else str(s.ttl_s),
        ]
    return keys, args, scope_args


def finish_call(
    key: KeyOf, record_key: str, rid: str, actual_pico: int, record: str
) -> tuple[list[str], list[Any], list[str]]:
    """FINISH's KEYS, its four leading ARGV, and the ttl ARGV per scope of ``record``."""
    keys = [record_key]
    args: list[Any] = [str(actual_pico), rid, str(RECORD_GRACE_S * 1000), record]
    ttls: list[str] = []
    for scope_key, ttl in orjson.loads(record):
        keys.extend(scope_keys(key, scope_key))
        ttls.append("" if ttl is None else str(ttl))
    return keys, args, ttls


def rate_args(limits: Sequence[RateLimit], amounts: Sequence[int]) -> list[str]:
    """(limit, period_us, cost or delta) per limit, as RATE and ADMIT read them."""
    args: list[str] = []
    for rl, amount in zip(limits, amounts, strict=True):
        args += [str(rl.limit), repr(rl.period_s * 1_000_000), str(amount)]
    return args


def rate_batch(
    limits: Sequence[RateLimit], levels: Sequence[str], *, room: bool, taken: bool
) -> RateBatchResult:
    """The verdict of RATE or ADMIT from the levels they return."""
    return RateBatchResult(
        room,
        tuple(
            rate_result(rl, float(level), consumed=taken)
            for rl, level in zip(limits, levels, strict=True)
        ),
    )


def reserve_result(
    scopes: Sequence[BudgetScope], status: int, denied: int, counters: Sequence[str]
) -> ReserveResult:
    """``counters``: spent and reserved of each scope, as RESERVE and ADMIT return them."""
    return ReserveResult(
        ok=status == 1,
        denied_scope=scopes[denied - 1].key if denied else None,
        remaining_pico={
            s.key: remaining_after(s.limit_pico, int(counters[2 * i]), int(counters[2 * i + 1]))
            for i, s in enumerate(scopes)
        },
    )


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    try:
        yield
    except DOWN as exc:
        raise StateUnavailable() from exc


class RedisCounters(StateStore):
    _redis: Redis
    _prefix: str
    _clock: Callable[[], float] | None
    _reservation_ttl_s: float
    _scripts: dict[str, AsyncScript]

    # ------------------------------------------------------------ helpers

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1_000_000))

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        with store_errors():
            return await self._scripts[script](keys=list(keys), args=list(args))

    def _scope_keys(self, scope_key: str) -> tuple[str, str]:
        return scope_keys(self._key, scope_key)

    def _hold_s(self, ttl_s: float | None) -> float:
        return ttl_s if ttl_s is not None else self._reservation_ttl_s

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
        keys, args, scope_args = reserve_call(
            self._key, scopes, amount_pico, reservation_id, self._hold_s(ttl_s), self._now_arg()
        )
        out = await self._run("RESERVE", keys, args + scope_args)
        if int(out[0]) == -1:
            raise ValueError("reservation id already used")
        return reserve_result(scopes, int(out[0]), int(out[1]), out[2:])

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
        keys, args, scope_args = reserve_call(
            self._key, scopes, amount_pico, reservation_id, self._hold_s(ttl_s), self._now_arg()
        )
        args += [len(scopes), *scope_args, *rate_args(limits, [rl.cost for rl in limits])]
        keys += [self._key("rl", rl.key) for rl in limits]
        out = await self._run("ADMIT", keys, args)
        status, denied, room = int(out[0]), int(out[1]), int(out[2]) == 1
        if status == -1:
            raise ValueError("reservation id already used")
        n = 3 + 2 * len(scopes)
        reserve = reserve_result(scopes, status, denied, out[3:n]) if room else None
        return AdmitResult(rate_batch(limits, out[n:], room=room, taken=status == 1), reserve)

    async def settle(
        self, reservation_id: str, actual_pico: int, *, scopes: Sequence[BudgetScope] | None = None
    ) -> bool:
        if actual_pico < 0:
            raise ValueError("actual_pico must be >= 0")
        return await self._finish(reservation_id, actual_pico, scopes)

    async def release(
        self, reservation_id: str, *, scopes: Sequence[BudgetScope] | None = None
    ) -> bool:
        return await self._finish(reservation_id, 0, scopes)

    async def _finish(
        self, reservation_id: str, actual_pico: int, scopes: Sequence[BudgetScope] | None
    ) -> bool:
        # FINISH must be told the scope keys (it reads no undeclared key). The
        # caller's scopes save reading the record first; the script compares
        # them with the record, so a wrong guess changes nothing and we read.
        record_key = self._key("r", reservation_id)
        if scopes:
            done = await self._finish_as(record_key, reservation_id, actual_pico, record_of(scopes))
            if done >= 0:
                return done == 1
        with store_errors():
            record = await self._redis.get(record_key)
        if record is None or record == "done":
            return False
        return await self._finish_as(record_key, reservation_id, actual_pico, record) == 1

    async def _finish_as(self, record_key: str, rid: str, actual_pico: int, record: str) -> int:
        keys, args, ttls = finish_call(self._key, record_key, rid, actual_pico, record)
        return int(await self._run("FINISH", keys, args + ttls))

    async def settle_and_adjust(
        self,
        reservation_id: str,
        actual_pico: int,
        adjustments: Sequence[tuple[RateLimit, int]],
        *,
        scopes: Sequence[BudgetScope] | None = None,
    ) -> Settled:
        limits = [rl for rl, _ in adjustments]
        check_rate_batch(limits)
        if actual_pico < 0:
            raise ValueError("actual_pico must be >= 0")
        if scopes:  # one trip; other scopes than the reserved ones change nothing: two trips
            record_key = self._key("r", reservation_id)
            keys, args, ttls = finish_call(
                self._key, record_key, reservation_id, actual_pico, record_of(scopes)
            )
            out = await self._run(
                "SETTLE",
                keys + [self._key("rl", rl.key) for rl in limits],
                [*args, self._now_arg(), len(ttls), *ttls,
                 *rate_args(limits, [d for _, d in adjustments])],
            )  # fmt: skip
            if int(out[0]) >= 0:
                rates = rate_batch(limits, out[1:], room=True, taken=True).results
                return Settled(int(out[0]) == 1, rates)
        return await super().settle_and_adjust(reservation_id, actual_pico, adjustments)

    async def usage(self, scope_key: str) -> Usage:
        spent, reserved = await self._run("USAGE", self._scope_keys(scope_key), [self._now_arg()])
        return Usage(int(spent), int(reserved))

    # ------------------------------------------------------------ rate limits

    async def rate_acquire_many(self, limits: Sequence[RateLimit]) -> RateBatchResult:
        check_rate_batch(limits)
        out = await self._rate("acquire", limits, [rl.cost for rl in limits])
        allowed = int(out[0]) == 1
        return rate_batch(limits, out[1:], room=allowed, taken=allowed)

    async def rate_adjust_many(
        self, adjustments: Sequence[tuple[RateLimit, int]]
    ) -> tuple[RateResult, ...]:
        limits = [rl for rl, _ in adjustments]
        check_rate_batch(limits)
        out = await self._rate("adjust", limits, [delta for _, delta in adjustments])
        return tuple(
            rate_result(rl, float(level), consumed=True)
            for rl, level in zip(limits, out[1:], strict=True)
        )

    async def _rate(self, mode: str, limits: Sequence[RateLimit], amounts: Sequence[int]) -> Any:
        args = [self._now_arg(), mode, *rate_args(limits, amounts)]
        return await self._run("RATE", [self._key("rl", rl.key) for rl in limits], args)

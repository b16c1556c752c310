"""The shared-state interface: budgets, rate limits, circuit breakers, invalidation.

Two backends implement :class:`StateStore`: ``memory.MemoryState`` (one process,
the embedded default) and ``redis.RedisState`` (any number of instances). Both
are held to the same contract by one test-suite.

Money is counted in integer **pico-USD** (1e-12 USD) so Redis ``INCRBY`` stays
exact; convert with :func:`to_pico` / :func:`from_pico`.
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Literal, NamedTuple

from warden.errors import ServiceUnavailable

log = logging.getLogger(__name__)

PICO_PER_USD = 10**12

# How long a reservation's record outlives it, so a late settle still charges
# and a repeated settle is still recognised as a repeat.
RECORD_GRACE_S = 3600

# Default lifetime of a reservation that is never settled (crashed instance).
# Long enough for a slow streamed completion.
DEFAULT_RESERVATION_TTL_S = 900.0

# Topic and key delivered to subscribers when messages may have been missed
# (the Redis listener reconnected): drop every cached entry.
FLUSH_ALL = "*"

# Float noise allowance for rate-limit levels (a level is a count of requests
# or tokens, so 1e-9 of one is far below anything that matters).
RATE_EPSILON = 1e-9

BreakerState = Literal["closed", "open", "half_open"]
InvalidationCallback = Callable[[str, str], Awaitable[None] | None]


class StateUnavailable(ServiceUnavailable):
    """The shared state store cannot be reached; callers decide fail-closed or open."""

    code = "state_unavailable"

    def __init__(self, message: str = "shared state store unavailable") -> None:
        super().__init__(message)


def to_pico(usd: Decimal) -> int:
    """USD to pico-USD, rounded up: a reservation must never under-count."""
    return int((usd * PICO_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def from_pico(pico: int) -> Decimal:
    return Decimal(pico).scaleb(-12)


# ---------------------------------------------------------------- budgets


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """One counter a reservation must fit in.

    ``key`` already names the period bucket (``"ws:w1:month:2026-11"``, see
    :func:`budget_period`), so a new period simply starts a new counter.
    ``limit_pico=None`` counts spend without ever refusing. ``ttl_s`` is how
    long the counter lives (end of period plus grace); ``None`` keeps it.
    """

    key: str
    limit_pico: int | None
    ttl_s: int | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("budget scope key must not be empty")
        if self.limit_pico is not None and self.limit_pico < 0:
            raise ValueError("limit_pico must be >= 0")
        if self.ttl_s is not None and self.ttl_s < 1:
            raise ValueError("ttl_s must be >= 1")


@dataclass(frozen=True, slots=True)
class ReserveResult:
    ok: bool
    denied_scope: str | None
    # What is left in each scope after this call (None: the scope has no limit).
    remaining_pico: dict[str, int | None]


class Usage(NamedTuple):
    spent_pico: int
    reserved_pico: int


def budget_period(
    period: Literal["day", "month", "total"], at: datetime, *, grace_s: int = 2 * 86400
) -> tuple[str, int | None]:
    """Bucket suffix and counter lifetime for ``period`` at time ``at`` (UTC).

    ``("month:2026-11", seconds until 1 December plus grace)``; ``total`` never
    expires.
    """
    at = at.astimezone(UTC)
    start = period_start(period, at)
    if start is None:
        return "total", None
    if period == "day":
        end, suffix = start + timedelta(days=1), f"day:{start:%Y-%m-%d}"
    else:
        end = (start + timedelta(days=32)).replace(day=1)
        suffix = f"month:{start:%Y-%m}"
    return suffix, math.ceil((end - at).total_seconds()) + grace_s


def period_start(period: Literal["day", "month", "total"], at: datetime) -> datetime | None:
    """When the period holding ``at`` began (UTC); ``None`` for ``total``, which never began anew."""
    at = at.astimezone(UTC)
    if period == "total":
        return None
    if period == "day":
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"unknown budget period {period!r}")


def check_reserve_args(scopes: Sequence[BudgetScope], amount_pico: int) -> None:
    if not scopes:
        raise ValueError("reserve needs at least one scope")
    if len({s.key for s in scopes}) != len(scopes):
        raise ValueError("budget scopes must have distinct keys")
    if amount_pico < 0:
        raise ValueError("amount_pico must be >= 0")


def remaining_after(limit_pico: int | None, spent: int, reserved: int) -> int | None:
    return None if limit_pico is None else max(0, limit_pico - spent - reserved)


# ---------------------------------------------------------------- rate limits


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``limit`` units (requests or tokens) per ``period_s``, burst ``limit``."""

    key: str
    limit: int
    period_s: float
    cost: int = 1

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("rate limit must be >= 1")
        if self.period_s <= 0:
            raise ValueError("rate period_s must be > 0")
        if self.cost < 0:
            raise ValueError("rate cost must be >= 0")


@dataclass(frozen=True, slots=True)
class RateResult:
    allowed: bool  # this limit had room for the cost
    limit: int
    remaining: int
    reset_after_s: float  # until the limit is fully refilled
    retry_after_s: float | None  # 0 when allowed; None when cost > limit (never fits)


@dataclass(frozen=True, slots=True)
class RateBatchResult:
    """All-or-nothing verdict: units were taken from every limit, or from none."""

    allowed: bool
    results: tuple[RateResult, ...]


@dataclass(frozen=True, slots=True)
class AdmitResult:
    """Rate units and a budget hold taken in one step (:meth:`StateStore.admit`), or neither.

    ``rate``: the limits' verdict (``rate.allowed``: they all had room). When
    they had not, ``reserve`` is None: the budgets were not looked at. When the
    budget refused, no rate units were taken either, and ``rate`` describes the
    buckets as they are. ``ok``: both were taken.
    """

    rate: RateBatchResult
    reserve: ReserveResult | None

    @property
    def ok(self) -> bool:
        return self.reserve is not None and self.reserve.ok


class Settled(NamedTuple):
    """What :meth:`StateStore.settle_and_adjust` did: as ``settle``'s answer, and
    each adjusted limit's level afterwards."""

    settled: bool
    rates: tuple[RateResult, ...]


def rate_fits(level: float, cost: int, limit: int) -> bool:
    return level + cost <= limit + RATE_EPSILON


def rate_leak(level: float, elapsed_s: float, limit: int, period_s: float) -> float:
    """Level left after ``elapsed_s``: a bucket drains at ``limit / period_s``."""
    return max(0.0, level - max(0.0, elapsed_s) * limit / period_s)


def rate_result(rl: RateLimit, level: float, *, consumed: bool) -> RateResult:
    """Describe limit ``rl`` whose bucket now holds ``level`` units.

    This is GCRA in its continuous-state leaky-bucket form (ITU-T I.371): the
    level is (TAT - now) expressed in units, so burst = limit.
    """
    per_unit = rl.period_s / rl.limit
    fits = consumed or rate_fits(level, rl.cost, rl.limit)
    if fits:
        retry: float | None = 0.0
    elif rl.cost > rl.limit:
        retry = None
    else:
        retry = (level + rl.cost - rl.limit) * per_unit
    return RateResult(
        allowed=fits,
        limit=rl.limit,
        remaining=max(0, math.floor(rl.limit - level + RATE_EPSILON)),
        reset_after_s=level * per_unit,
        retry_after_s=retry,
    )


def check_rate_batch(limits: Sequence[RateLimit]) -> None:
    if not limits:
        raise ValueError("a rate batch needs at least one limit")
    if len({rl.key for rl in limits}) != len(limits):
        raise ValueError("rate limits in one batch must have distinct keys")


# ---------------------------------------------------------------- breakers


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Open after ``failures`` within ``window_s``; probe again after ``cooldown_s``.

    A claimed half-open probe that never reports (its instance died) is given
    up after another ``cooldown_s`` and a new probe may be claimed.
    """

    failures: int = 5
    window_s: float = 30.0
    cooldown_s: float = 15.0

    def __post_init__(self) -> None:
        if self.failures < 1 or self.window_s <= 0 or self.cooldown_s <= 0:
            raise ValueError("breaker failures, window_s and cooldown_s must be positive")


# ---------------------------------------------------------------- invalidation


async def deliver(callbacks: Iterable[InvalidationCallback], topic: str, key: str) -> None:
    """Call every subscriber; one failing callback must not starve the others."""
    for callback in list(callbacks):
        try:
            result = callback(topic, key)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("invalidation callback failed for topic %s", topic)


# ---------------------------------------------------------------- interface


class StateStore(ABC):
    """Shared counters. Every method raises :class:`StateUnavailable` when the
    backing store is down (except :meth:`ping`, which answers False)."""

    # budgets: reserve -> call -> settle
    @abstractmethod
    async def reserve(
        self,
        scopes: Sequence[BudgetScope],
        amount_pico: int,
        reservation_id: str,
        *,
        ttl_s: float | None = None,
    ) -> ReserveResult:
        """Hold ``amount_pico`` in every scope, or in none.

        Refused when ``spent + reserved + amount > limit`` in any scope. The
        hold stops counting after ``ttl_s`` (default 900 s) unless settled.
        Raises ValueError if ``reservation_id`` was already used.
        """

    @abstractmethod
    async def settle(
        self, reservation_id: str, actual_pico: int, *, scopes: Sequence[BudgetScope] | None = None
    ) -> bool:
        """Turn the hold into ``actual_pico`` of spend (may exceed the hold).

        Returns False, changing nothing, if the reservation is unknown or was
        already settled or released. ``scopes``: those given to :meth:`reserve`,
        if the caller still has them, so Redis need not read the reservation
        first; scopes that differ from the reserved ones are noticed and ignored.
        """

    @abstractmethod
    async def release(
        self, reservation_id: str, *, scopes: Sequence[BudgetScope] | None = None
    ) -> bool:
        """Drop the hold without charging (the upstream call failed); ``scopes`` as in settle."""

    @abstractmethod
    async def usage(self, scope_key: str) -> Usage: ...

    # rate limits
    async def rate_acquire(
        self, key: str, limit: int, period_s: float, cost: int = 1
    ) -> RateResult:
        batch = await self.rate_acquire_many([RateLimit(key, limit, period_s, cost)])
        return batch.results[0]

    @abstractmethod
    async def rate_acquire_many(self, limits: Sequence[RateLimit]) -> RateBatchResult:
        """Take each limit's cost from its bucket, all or nothing."""

    async def rate_adjust(self, key: str, limit: int, period_s: float, delta: int) -> RateResult:
        return (await self.rate_adjust_many([(RateLimit(key, limit, period_s, 0), delta)]))[0]

    @abstractmethod
    async def rate_adjust_many(
        self, adjustments: Sequence[tuple[RateLimit, int]]
    ) -> tuple[RateResult, ...]:
        """Charge (``delta > 0``) or refund (``delta < 0``) units once the real
        token count is known, for every ``(limit, delta)`` at once (one round
        trip; each limit's ``cost`` is ignored). Never refused; a charge may push
        the level over the limit so later requests wait longer."""

    async def settle_and_adjust(
        self,
        reservation_id: str,
        actual_pico: int,
        adjustments: Sequence[tuple[RateLimit, int]],
        *,
        scopes: Sequence[BudgetScope] | None = None,
    ) -> Settled:
        """:meth:`settle` (``actual_pico`` 0: as :meth:`release`), then
        :meth:`rate_adjust_many`: the end of a call, in one round trip where the
        store can (Redis, given ``scopes``)."""
        settled = await self.settle(reservation_id, actual_pico, scopes=scopes)
        return Settled(settled, await self.rate_adjust_many(adjustments))

    @abstractmethod
    async def admit(
        self,
        limits: Sequence[RateLimit],
        scopes: Sequence[BudgetScope],
        amount_pico: int,
        reservation_id: str,
        *,
        ttl_s: float | None = None,
    ) -> AdmitResult:
        """:meth:`rate_acquire_many` then :meth:`reserve` as one atomic step (one
        round trip): a budget refusal takes no rate units, so nothing has to be
        given back. Raises ValueError, taking nothing, if ``reservation_id`` was
        already used."""

    # circuit breakers
    @abstractmethod
    async def breaker_allow(self, deployment_id: str) -> bool:
        """May a request go to this deployment? Claims the single half-open
        probe when the cooldown is over."""

    @abstractmethod
    async def breaker_record(self, deployment_id: str, ok: bool) -> BreakerState:
        """Report a call's outcome; returns the breaker's state afterwards."""

    @abstractmethod
    async def breaker_trip(self, deployment_id: str, cooldown_s: float) -> None:
        """Open the breaker now, whatever its state, for ``cooldown_s`` (kept
        when a later probe fails); a successful probe closes it as usual. For
        failures that need no counting, such as a host that refuses connections."""

    @abstractmethod
    async def breaker_states(self, deployment_ids: Iterable[str]) -> dict[str, BreakerState]:
        """``open`` whose cooldown is over reads ``half_open`` (a probe may go)."""

    # invalidation broadcast
    @abstractmethod
    async def publish(self, topic: str, key: str) -> None: ...

    @abstractmethod
    async def subscribe(self, callback: InvalidationCallback) -> Callable[[], None]:
        """Call ``callback(topic, key)`` for every published message, on every
        instance including this one. ``(FLUSH_ALL, FLUSH_ALL)`` means messages
        may have been lost: drop everything cached. Returns an unsubscribe."""

    # health
    @abstractmethod
    async def ping(self) -> bool: ...

    @abstractmethod
    async def close(self) -> None: ...

"""Budgets and rate limits around one gateway call: admit -> call -> settle.

The gateway asks :meth:`Limiter.admit` before its first upstream attempt and
gets an :class:`Admission` back (or a refusal, raised before anything reached a
provider). After the call it settles the admission with the real cost and
tokens, or releases it when the call failed. Nothing here touches the database:
a workspace's budgets and rate limits arrive through an injected
:data:`LimitsSource`, and the counters live in the shared :class:`StateStore`.

Rules (the behaviour users rely on; README can quote it):

- **Reservation.** Before the call, the worst-case cost is reserved in every
  applicable budget at once (all or nothing): the prompt estimate plus
  ``max_tokens`` (or ``default_output_tokens`` capped by the model's own
  ``max_output``) at the *most expensive* step of the plan, since failover may
  end there. After the call the reservation becomes the real cost; a failed call
  releases it. A refused request is never charged anything, rate units included.
- **Embeddings** reserve their inputs' estimate at the input price and no output
  (tpm likewise), then settle the upstream's count (Gemini's: the estimate).
- **Unknown prices.** When a budget applies, plan steps whose price is unknown
  are dropped (they could not be charged); if none is left the request is
  refused with 403 ``price_unknown``. Without a budget nothing changes.
- **Streams.** Settled when the stream ends. Without the provider's usage
  (cancelled early, or an error mid-stream), the charge is an estimate of what
  was consumed: the prompt estimate plus the output seen so far, at the worst
  list price. Never zero, because the provider bills the tokens it generated.
- **Rate limits.** rpm and tpm per API key and per workspace, taken together
  all or nothing. tpm is charged the prompt estimate plus ``max_tokens`` (0 when
  unset, as OpenAI counts it) and adjusted to the real total afterwards.
- **Store down.** :class:`StateUnavailable` (503 ``state_unavailable``) unless
  ``fail_open``: then the call goes ahead unmetered and a warning is logged.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from warden.errors import BudgetExceeded, Forbidden, RateLimitExceeded
from warden.gateway.complexity import estimate_input_tokens, estimate_tokens
from warden.gateway.context import CallContext
from warden.gateway.routing import WORST_CASE_OUTPUT, RoutePlan
from warden.gateway.deployment import Deployment
from warden.gateway.types import ChatRequest, EmbeddingRequest, Usage
from warden.state.base import (
    BudgetScope,
    RateBatchResult,
    RateLimit,
    RateResult,
    StateStore,
    StateUnavailable,
    budget_period,
    to_pico,
)

log = logging.getLogger("warden.limits")

Scope = Literal["workspace", "key", "agent"]
Period = Literal["day", "month", "total"]
SCOPES: tuple[Scope, ...] = ("workspace", "key", "agent")
PERIODS: tuple[Period, ...] = ("day", "month", "total")

_MTOK = Decimal(1_000_000)
_MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit of one scope of a workspace, per period."""

    scope: Scope
    scope_id: str  # the workspace id, the API key id or the agent id
    period: Period
    limit_usd: Decimal
    per_request_cap_usd: Decimal | None = None

    def counter(self, workspace_id: str, at: datetime) -> BudgetScope:
        """The state-store counter of the current period."""
        suffix, ttl = budget_period(self.period, at)
        key = f"budget:{workspace_id}:{self.scope}:{self.scope_id}:{suffix}"
        return BudgetScope(key, to_pico(self.limit_usd), ttl)

    def describe(self) -> str:
        what = "workspace" if self.scope == "workspace" else f"{self.scope} '{self.scope_id}'"
        return f"the {what} {self.period} budget of ${self.limit_usd}"

    def applies_to(self, ctx: CallContext) -> bool:
        if self.scope == "workspace":
            return self.scope_id == ctx.workspace_id
        if self.scope == "key":
            return self.scope_id == ctx.api_key_id
        return self.scope_id == ctx.agent_id


@dataclass(frozen=True, slots=True)
class WorkspaceLimits:
    """Everything the limiter needs about one workspace (cached by its source)."""

    budgets: tuple[Budget, ...] = ()
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    fallback_cost_factor: float | None = None  # the workspace's cost guard; None: the server's


LimitsSource = Callable[[str], Awaitable[WorkspaceLimits]]


@dataclass(slots=True)
class RateSnapshot:
    """The tightest request and token limits after this call (for response headers)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None

    @classmethod
    def of(cls, requests: Sequence[RateResult], tokens: Sequence[RateResult]) -> RateSnapshot | None:
        if not requests and not tokens:
            return None
        snap = cls()
        if requests:
            r = min(requests, key=lambda x: x.remaining)
            snap.limit_requests, snap.remaining_requests, snap.reset_requests_s = (
                r.limit, r.remaining, r.reset_after_s)
        if tokens:
            t = min(tokens, key=lambda x: x.remaining)
            snap.limit_tokens, snap.remaining_tokens, snap.reset_tokens_s = (
                t.limit, t.remaining, t.reset_after_s)
        return snap


@dataclass(frozen=True, slots=True)
class _Rate:
    """One rate limit of this request: which kind, and whose."""

    limit: RateLimit
    tokens: bool
    owner: str  # "key" | "workspace", for messages

    def describe(self) -> str:
        unit = "tokens" if self.tokens else "requests"
        return f"the {self.owner} limit of {self.limit.limit} {unit} per minute"


@dataclass(slots=True)
class Admission:
    """What one admitted call holds; settle or release it exactly once."""

    state: StateStore | None
    reservation_id: str | None = None
    reserved_pico: int = 0
    scopes: list[BudgetScope] = field(default_factory=list)  # what was reserved in
    prompt_tokens: int = 0
    rates: list[_Rate] = field(default_factory=list)
    rate: RateSnapshot | None = None
    done: bool = False

    @property
    def active(self) -> bool:
        """Holds something that still has to be settled or released."""
        return self.state is not None and not self.done

    async def settle(self, cost_usd: Decimal | None, usage: Usage,
                     dep: Deployment | None = None, *, output_seen: int = 0) -> None:
        """Charge the real cost and tokens. Without usage (an aborted stream), charge
        the estimate of what was consumed at ``dep``'s worst-case prices."""
        if self.done or self.state is None:
            return
        self.done = True
        has_usage = bool(usage.input_tokens or usage.output_tokens)
        charge = 0
        if self.reservation_id is not None:
            if cost_usd is not None and has_usage:
                charge = to_pico(cost_usd)
            elif dep is not None:
                charge = _consumed_estimate(dep, self.prompt_tokens, output_seen, self.reserved_pico)
            else:
                charge = self.reserved_pico  # never less than we could have spent
        tokens = usage.total_tokens if has_usage else self.prompt_tokens + output_seen
        await self._finish(self.state, charge, tokens)

    async def release(self) -> None:
        """The call failed upstream: drop the hold; refund the tokens (the request counts)."""
        if self.done or self.state is None:
            return
        self.done = True
        await self._finish(self.state, None, 0)

    async def _finish(self, state: StateStore, charge: int | None, tokens: int) -> None:
        """Settle the hold (``charge`` None: release it) and correct every tpm counter (the
        key's and the workspace's) to the real ``tokens``, in one store call."""
        changes = [(r.limit, tokens - r.limit.cost) for r in self.rates
                   if r.tokens and tokens != r.limit.cost]
        rid, what = self.reservation_id, "settle" if charge is not None else "release"
        results = None
        if rid is not None and changes:
            done = await self._quietly(
                state.settle_and_adjust(rid, charge or 0, changes, scopes=self.scopes), what)
            results = done and done.rates
        elif rid is not None and charge is not None:
            await self._quietly(state.settle(rid, charge, scopes=self.scopes), what)
        elif rid is not None:
            await self._quietly(state.release(rid, scopes=self.scopes), what)
        elif changes:
            results = await self._quietly(state.rate_adjust_many(changes), "rate_adjust")
        if results and self.rate is not None:  # the headers show the level after the adjustment
            tight = min(results, key=lambda r: r.remaining)
            self.rate.remaining_tokens, self.rate.reset_tokens_s = tight.remaining, tight.reset_after_s

    async def _quietly(self, op: Awaitable, what: str):  # noqa: ANN202 - result of op or None
        # After the call nothing is gained by failing the client: a lost settle
        # leaves the reservation to expire (its TTL), a lost adjust a stale level.
        try:
            return await op
        except StateUnavailable:
            log.warning("shared state unavailable: %s skipped", what)
            return None


def _prompt_tokens(req: ChatRequest | EmbeddingRequest) -> int:
    if isinstance(req, EmbeddingRequest):
        return sum(estimate_input_tokens(req.inputs))
    return estimate_tokens(req)


def _max_tokens(req: ChatRequest | EmbeddingRequest) -> int | None:
    """The output the request may produce: none for embeddings."""
    return 0 if isinstance(req, EmbeddingRequest) else req.max_tokens


def _consumed_estimate(dep: Deployment, prompt: int, output: int, cap: int) -> int:
    info = dep.info
    if info.input_price is None or info.output_price is None:
        return cap
    return to_pico((prompt * info.input_price + output * info.output_price) / _MTOK)


class Limiter:
    def __init__(self, state: StateStore, source: LimitsSource, *,
                 default_output_tokens: int = WORST_CASE_OUTPUT, fail_open: bool = False,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.state = state
        self._source = source
        self.default_output_tokens = default_output_tokens
        self.fail_open = fail_open
        self._now = now

    async def limits(self, workspace_id: str) -> WorkspaceLimits:
        """What the source says of a workspace now (cached by the source)."""
        return await self._source(workspace_id)

    async def admit(self, req: ChatRequest | EmbeddingRequest, ctx: CallContext,
                    plan: RoutePlan) -> tuple[Admission, RoutePlan]:
        """Take rate units and reserve the worst case, or raise before any upstream call.

        Returns the admission and the plan to walk (unpriced steps dropped when a
        budget applies)."""
        try:
            limits = await self._source(ctx.workspace_id)
        except StateUnavailable:
            return self._unavailable("limits"), plan
        except Exception:  # the database behind the source: same rule as the store
            log.warning("budget configuration unavailable", exc_info=True)
            return self._unavailable("the database"), plan
        budgets = [b for b in limits.budgets if b.applies_to(ctx)]
        rates = self._rates(req, ctx, limits)
        if not budgets and not rates:
            return Admission(None), plan
        prompt = _prompt_tokens(req)
        admission = Admission(self.state, prompt_tokens=prompt)
        amount = 0
        if budgets:
            plan = _priced_only(plan)
            amount = to_pico(max(self._worst_cost(req, step.deployment, prompt) for step in plan.steps))
            _check_caps(budgets, amount)
        try:
            await self._take(rates, budgets, ctx, amount, admission)
        except StateUnavailable:
            return self._unavailable("the shared state store"), plan
        return admission, plan

    async def _take(self, rates: list[_Rate], budgets: list[Budget], ctx: CallContext,
                    amount: int, admission: Admission) -> None:
        """Rate units and the budget hold in one store call (one round trip), all or
        nothing: a refusal took nothing, so nothing is ever given back."""
        limits = [r.limit for r in rates]
        at = self._now()
        counters = [b.counter(ctx.workspace_id, at) for b in budgets]
        reservation_id = f"{ctx.request_id or 'req'}:{uuid.uuid4().hex}" if budgets else ""
        if rates and budgets:
            got = await self.state.admit(limits, counters, amount, reservation_id)
            batch, reserved = got.rate, got.reserve
        elif rates:
            batch, reserved = await self.state.rate_acquire_many(limits), None
        else:
            batch, reserved = None, await self.state.reserve(counters, amount, reservation_id)
        snapshot = self._rated(rates, batch) if batch is not None else None
        if reserved is not None and not reserved.ok:
            denied = next(b for b, c in zip(budgets, counters, strict=True)
                          if c.key == reserved.denied_scope)
            raise BudgetExceeded(f"budget exceeded: this request's worst-case cost does not fit in "
                                 f"{denied.describe()}")
        if batch is not None:
            admission.rates, admission.rate = rates, snapshot
        if reserved is not None:
            admission.reservation_id, admission.reserved_pico = reservation_id, amount
            admission.scopes = counters

    # --- rate limits -------------------------------------------------------------

    def _rates(self, req: ChatRequest | EmbeddingRequest, ctx: CallContext, limits: WorkspaceLimits) -> list[_Rate]:
        rates: list[_Rate] = []
        tokens: int | None = None
        for owner, owner_id, rpm, tpm in (
            ("key", ctx.api_key_id, ctx.key_rpm_limit, ctx.key_tpm_limit),
            ("workspace", ctx.workspace_id, limits.rpm_limit, limits.tpm_limit),
        ):
            if owner_id is None:
                continue
            if rpm:
                rates.append(_Rate(RateLimit(f"{owner}:{owner_id}:rpm", rpm, _MINUTE), False, owner))
            if tpm:
                if tokens is None:
                    tokens = _prompt_tokens(req) + (_max_tokens(req) or 0)
                rates.append(_Rate(RateLimit(f"{owner}:{owner_id}:tpm", tpm, _MINUTE, tokens),
                                   True, owner))
        return rates

    @staticmethod
    def _rated(rates: list[_Rate], batch: RateBatchResult) -> RateSnapshot | None:
        """The headers' snapshot of a batch the limits had room for; raises if they had not."""
        requests = [res for r, res in zip(rates, batch.results, strict=True) if not r.tokens]
        tokens = [res for r, res in zip(rates, batch.results, strict=True) if r.tokens]
        snapshot = RateSnapshot.of(requests, tokens)
        if batch.allowed:
            return snapshot
        denied, result = next((r, res) for r, res in zip(rates, batch.results, strict=True)
                              if not res.allowed)
        headers = rate_headers(snapshot)
        if result.retry_after_s is None:
            message = (f"rate limit exceeded: this request's {denied.limit.cost} estimated tokens "
                       f"exceed {denied.describe()}; lower max_tokens or the prompt")
        else:
            wait = max(1, math.ceil(result.retry_after_s))
            headers["retry-after"] = str(wait)
            message = f"rate limit exceeded: {denied.describe()}; retry in {wait} s"
        raise RateLimitExceeded(message, headers=headers)

    # --- budgets -------------------------------------------------------------------

    def _worst_cost(self, req: ChatRequest | EmbeddingRequest, dep: Deployment,
                    prompt: int) -> Decimal:
        info = dep.info
        output = _max_tokens(req)
        if output is None:
            output = min(self.default_output_tokens, info.max_output or self.default_output_tokens)
        return (prompt * info.input_price + output * info.output_price) / _MTOK  # type: ignore[operator]

    def _unavailable(self, what: str) -> Admission:
        if self.fail_open:
            log.warning("%s unavailable: admitting without budgets or rate limits (fail-open)", what)
            return Admission(None)
        raise StateUnavailable(f"{what} is unavailable, so budgets and rate limits cannot be "
                               "checked; try again shortly")


def _priced_only(plan: RoutePlan) -> RoutePlan:
    steps = [s for s in plan.steps
             if s.deployment.info.input_price is not None and s.deployment.info.output_price is not None]
    if not steps:
        names = ", ".join(sorted({s.deployment.name for s in plan.steps})) or plan.model_requested
        raise Forbidden(f"a budget applies to this request but the price of {names} is unknown; "
                        "give the credential's model input_price/output_price (or free: true)",
                        code="price_unknown")
    return plan if len(steps) == len(plan.steps) else replace(plan, steps=steps)


def _check_caps(budgets: list[Budget], amount_pico: int) -> None:
    for b in budgets:
        if b.per_request_cap_usd is not None and amount_pico > to_pico(b.per_request_cap_usd):
            raise BudgetExceeded(
                f"budget exceeded: this request's worst-case cost is above the per-request cap "
                f"of ${b.per_request_cap_usd} of {b.describe()}; lower max_tokens")


# --- response headers -------------------------------------------------------------------


def duration_text(seconds: float) -> str:
    """OpenAI's reset format: ``"20ms"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m3s"``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


def rate_headers(snapshot: RateSnapshot | None) -> dict[str, str]:
    """``x-ratelimit-*`` headers of a snapshot (none for limits that are not set)."""
    if snapshot is None:
        return {}
    headers: dict[str, str] = {}
    if snapshot.limit_requests is not None:
        headers["x-ratelimit-limit-requests"] = str(snapshot.limit_requests)
        headers["x-ratelimit-remaining-requests"] = str(snapshot.remaining_requests)
        headers["x-ratelimit-reset-requests"] = duration_text(snapshot.reset_requests_s or 0.0)
    if snapshot.limit_tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(snapshot.limit_tokens)
        headers["x-ratelimit-remaining-tokens"] = str(snapshot.remaining_tokens)
        headers["x-ratelimit-reset-tokens"] = duration_text(snapshot.reset_tokens_s or 0.0)
    return headers

"""Budgets (USD per workspace, API key or agent) and workspace rate limits.

CRUD writes an audit event in the same transaction and broadcasts the change
(``invalidation.BUDGETS``). The gateway reads :meth:`Budgets.limits_for` on
every request: a per-workspace in-memory view, dropped on change (here or, via
the broadcast, on any instance) and re-read at least every ``cache_ttl``
seconds as a backstop. If the database is down when the view must be re-read,
the last view is kept (the counters themselves live in the state store, so
enforcement goes on); with no view at all the read fails and the limiter
applies its fail-closed / fail-open rule.

:meth:`Budgets.ledger_counters` gives every budget's current-period counter
with what the spend ledger recorded in it, so a state store that starts empty
(the in-process one) starts where the last process stopped.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from warden.tenancy import invalidation
from warden.errors import NotFound, PositiveInt32, ValidationFailed
from warden.gateway.limits import PERIODS, Budget, Period, Scope, WorkspaceLimits
from warden.tenancy.invalidation import Notify
from warden.singleflight import SingleFlight
from warden.state.base import BudgetScope, StateStore, StateUnavailable, from_pico, period_start
from warden.store import audit
from warden.store.agent_models import Agent
from warden.store.budget_models import BudgetRow
from warden.store.db import Database
from warden.store.models import ApiKey, Workspace
from warden.store.spend import LedgerScope, spent_pico
from warden.store.base import new_id, utcnow

log = logging.getLogger("warden.tenancy.budgets")

_AMOUNT_PERIOD = re.compile(r"^\s*\$?(\d+(?:\.\d+)?)\s*/\s*(day|month|total)\s*$")
_SCOPE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


_PICO = Decimal("0.000000000001")  # the ledger's unit


def _to_pico(v: Decimal) -> Decimal:
    """A JSON number is a binary float (0.1 arrives as 0.1000000000000000055…): amounts are
    kept to the ledger's unit, the picodollar, rounded half-even."""
    return v.quantize(_PICO, rounding=ROUND_HALF_EVEN)


def _at_least_one_pico(v: Decimal) -> Decimal:
    return max(v, _PICO)  # a positive cap never rounds to "no cap at all"


def _usd_schema(positive: bool) -> WithJsonSchema:
    number = {"type": "number", "exclusiveMaximum": 1e12, **({"exclusiveMinimum": 0} if positive else {"minimum": 0})}
    nonzero = "(?=.*[1-9])" if positive else ""
    return WithJsonSchema({"anyOf": [number, {"type": "string", "pattern": f"^{nonzero}[0-9]{{1,12}}(\\.[0-9]{{1,40}})?$"}]})


# Below a trillion dollars, as a number or a decimal string; what the schema says is
# exactly what is accepted (schemathesis checks both ways).
_TRILLION = Decimal(10) ** 12
UsdAmount = Annotated[Decimal, Field(ge=0, lt=_TRILLION, allow_inf_nan=False), AfterValidator(_to_pico),
                      _usd_schema(positive=False)]
UsdCap = Annotated[Decimal, Field(gt=0, lt=_TRILLION, allow_inf_nan=False), AfterValidator(_to_pico),
                   AfterValidator(_at_least_one_pico), _usd_schema(positive=True)]


class BudgetSpec(BaseModel):
    """``PUT /api/budgets`` body: one budget, upserted by (scope, scope_id, period)."""

    # A key's or an agent's budget names it (``_scope_id`` below); the schema says so too.
    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"scope": {"enum": ["key", "agent"]}}, "required": ["scope"]},
        "then": {"required": ["scope_id"], "properties": {"scope_id": {"type": "string"}}}})

    scope: Scope
    # The validator below words the error; the pattern tells the OpenAPI document the same rule.
    scope_id: str | None = Field(default=None, max_length=64, json_schema_extra={"pattern": _SCOPE_ID.pattern})
    period: Period = "month"
    limit_usd: UsdAmount
    per_request_cap_usd: UsdCap | None = None

    @field_validator("scope_id")
    @classmethod
    def _scope_id_shape(cls, v: str | None) -> str | None:
        if v is not None and not _SCOPE_ID.match(v):
            raise ValueError("must be 1-64 letters, digits, '.', '_', ':' or '-'")
        return v


class RateLimitsSpec(BaseModel):
    """Workspace-wide rate limits; ``null`` removes one."""

    rpm_limit: PositiveInt32 | None = None
    tpm_limit: PositiveInt32 | None = None
    # The failover cost guard of this workspace (WARDEN_FALLBACK_COST_FACTOR when null): a
    # fallback may cost at most this many times the plan's first choice.
    max_fallback_cost_factor: float | None = Field(default=None, ge=1, le=1e6, allow_inf_nan=False)


@dataclass(slots=True)
class BudgetStatus:
    id: str
    scope: str
    scope_id: str
    period: str
    limit_usd: Decimal
    per_request_cap_usd: Decimal | None
    spent_usd: Decimal | None  # None: the state store is unreachable right now
    reserved_usd: Decimal | None
    remaining_usd: Decimal | None
    updated_at: datetime


def parse_budget(text: str) -> tuple[Decimal, Period]:
    """``"10/month"`` -> ``(Decimal("10"), "month")`` (for the CLI)."""
    m = _AMOUNT_PERIOD.match(text)
    if m is None:
        raise ValidationFailed(f"budget must look like 10/month (periods: {', '.join(PERIODS)})",
                               param="budget")
    return Decimal(m.group(1)), m.group(2)  # type: ignore[return-value]


def to_budget(row: BudgetRow) -> Budget:
    return Budget(row.scope, row.scope_id, row.period, Decimal(row.limit_usd),  # type: ignore[arg-type]
                  None if row.per_request_cap_usd is None else Decimal(row.per_request_cap_usd))


@dataclass(slots=True)
class _Entry:
    expires: float
    limits: WorkspaceLimits


class Budgets:
    def __init__(self, db: Database, *, cache_ttl: float = 10.0, notify: Notify | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.cache_ttl = cache_ttl
        self.notify = notify  # the broadcast to other instances; None: this instance only
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._reads: SingleFlight[tuple[str, int], WorkspaceLimits] = SingleFlight()
        self._generation = 0  # bumped by invalidate(): a read that raced one is not cached

    # --- hot path --------------------------------------------------------------

    async def limits_for(self, workspace_id: str) -> WorkspaceLimits:
        now = self._clock()
        entry = self._cache.get(workspace_id)
        if entry is not None and entry.expires > now:
            return entry.limits
        try:
            # Concurrent misses share one read; keyed by generation so a request after
            # an invalidation never joins a read that started before it.
            return await self._reads.run((workspace_id, self._generation),
                                         lambda: self._load_and_cache(workspace_id, now))
        except Exception:
            if entry is None:
                raise
            log.warning("database unavailable: keeping the last budgets of %s", workspace_id)
            return entry.limits

    async def _load_and_cache(self, workspace_id: str, now: float) -> WorkspaceLimits:
        generation = self._generation
        limits = await self._load(workspace_id)
        if generation == self._generation:
            self._cache[workspace_id] = _Entry(now + self.cache_ttl, limits)
        return limits

    async def _load(self, workspace_id: str) -> WorkspaceLimits:
        async with self.db.session() as s:
            rows = (await s.execute(select(BudgetRow).where(BudgetRow.workspace_id == workspace_id)
                                    )).scalars().all()
            ws = (await s.execute(select(Workspace.rpm_limit, Workspace.tpm_limit, Workspace.fallback_cost_factor)
                                  .where(Workspace.id == workspace_id))).first()
        if ws is None:
            return WorkspaceLimits(tuple(to_budget(r) for r in rows))
        return WorkspaceLimits(tuple(to_budget(r) for r in rows), ws.rpm_limit, ws.tpm_limit,
                               ws.fallback_cost_factor)

    def invalidate(self, workspace_id: str | None = None) -> None:
        self._generation += 1
        if workspace_id is None:
            self._cache.clear()
        else:
            self._cache.pop(workspace_id, None)

    async def _changed(self, workspace_id: str) -> None:
        self.invalidate(workspace_id)
        if self.notify is not None:
            await self.notify(invalidation.BUDGETS, workspace_id)

    # --- budgets ---------------------------------------------------------------

    async def list(self, workspace_id: str) -> list[BudgetRow]:
        async with self.db.session() as s:
            q = (select(BudgetRow).where(BudgetRow.workspace_id == workspace_id)
                 .order_by(BudgetRow.scope, BudgetRow.scope_id, BudgetRow.period))
            return list((await s.execute(q)).scalars())

    async def put(self, workspace_id: str, spec: BudgetSpec, *, actor: str = "cli") -> BudgetRow:
        scope_id = await self._scope_id(workspace_id, spec)

        async def tx(s: AsyncSession) -> BudgetRow:
            row = (await s.execute(select(BudgetRow).where(
                BudgetRow.workspace_id == workspace_id, BudgetRow.scope == spec.scope,
                BudgetRow.scope_id == scope_id, BudgetRow.period == spec.period))).scalar_one_or_none()
            if row is None:
                row = BudgetRow(id=new_id("bud"), workspace_id=workspace_id, scope=spec.scope,
                                scope_id=scope_id, period=spec.period)
                s.add(row)
            row.limit_usd = spec.limit_usd
            row.per_request_cap_usd = spec.per_request_cap_usd
            row.updated_at = utcnow()
            await s.flush()
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="budget.put",
                               target=row.id, data=_audit_data(row))
            return row

        row = await self.db.run_tx(tx)
        await self._changed(workspace_id)
        return row

    async def delete(self, workspace_id: str, budget_id: str, *, actor: str = "cli") -> BudgetRow:
        async def tx(s: AsyncSession) -> BudgetRow:
            row = (await s.execute(select(BudgetRow).where(
                BudgetRow.id == budget_id, BudgetRow.workspace_id == workspace_id))).scalar_one_or_none()
            if row is None:
                raise NotFound(f"no budget '{budget_id}'", code="budget_not_found")
            await s.delete(row)
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="budget.delete",
                               target=row.id, data=_audit_data(row))
            return row

        row = await self.db.run_tx(tx)
        await self._changed(workspace_id)
        return row

    async def _scope_id(self, workspace_id: str, spec: BudgetSpec) -> str:
        if spec.scope == "workspace":
            if spec.scope_id not in (None, workspace_id):  # another workspace: not found, as below
                raise NotFound(f"no workspace '{spec.scope_id}' here: a workspace budget's scope_id "
                               "is this workspace's own id (or omitted)", code="workspace_not_found")
            return workspace_id
        if spec.scope_id is None:
            raise ValidationFailed(f"scope_id is required for a {spec.scope} budget", param="scope_id")
        # The scope must be this workspace's own: another workspace's id is "not found".
        model, what, code = ((ApiKey, "API key", "key_not_found") if spec.scope == "key"
                             else (Agent, "agent", "agent_not_found"))
        async with self.db.session() as s:
            found = (await s.execute(select(model.id).where(
                model.id == spec.scope_id, model.workspace_id == workspace_id))).first()
        if found is None:
            raise NotFound(f"no {what} '{spec.scope_id}' in this workspace", code=code)
        return spec.scope_id

    async def ledger_counters(self, at: datetime | None = None) -> list[tuple[BudgetScope, int]]:
        """Every budget's counter of the period holding ``at``, with the ledger's spend in it
        (pico-USD): one grouped query per (scope, period) in use, not one per budget."""
        at = at or datetime.now(UTC)
        async with self.db.session() as s:
            rows = list((await s.execute(select(BudgetRow))).scalars())
        groups: dict[tuple[str, str], list[BudgetRow]] = {}
        for row in rows:
            groups.setdefault((row.scope, row.period), []).append(row)
        out: list[tuple[BudgetScope, int]] = []
        for (scope, period), members in groups.items():
            spent = await spent_pico(self.db, _LEDGER_COLUMN[scope], {r.scope_id for r in members},
                                     period_start(period, at))  # type: ignore[arg-type]
            for row in members:
                counter = to_budget(row).counter(row.workspace_id, at)
                out.append((counter, spent.get((row.workspace_id, row.scope_id), 0)))
        return out

    async def status(self, workspace_id: str, state: StateStore,
                     at: datetime | None = None) -> list[BudgetStatus]:
        """Every budget with its current period's spent / reserved / remaining
        (``None`` for those while the state store is unreachable)."""
        at = at or datetime.now(UTC)
        out: list[BudgetStatus] = []
        for row in await self.list(workspace_id):
            budget = to_budget(row)
            status = BudgetStatus(row.id, row.scope, row.scope_id, row.period, budget.limit_usd,
                                  budget.per_request_cap_usd, None, None, None, row.updated_at)
            try:
                used = await state.usage(budget.counter(workspace_id, at).key)
            except StateUnavailable:
                out.append(status)
                continue
            spent, reserved = from_pico(used.spent_pico), from_pico(used.reserved_pico)
            status.spent_usd, status.reserved_usd = spent.normalize(), reserved.normalize()
            status.remaining_usd = max(Decimal(0), budget.limit_usd - spent - reserved).normalize()
            out.append(status)
        return out

    # --- workspace rate limits ---------------------------------------------------

    async def rate_limits(self, workspace_id: str) -> RateLimitsSpec:
        async with self.db.session() as s:
            ws = (await s.execute(select(Workspace).where(Workspace.id == workspace_id))).scalar_one_or_none()
        if ws is None:
            raise NotFound(f"no workspace '{workspace_id}'", code="workspace_not_found")
        return RateLimitsSpec(rpm_limit=ws.rpm_limit, tpm_limit=ws.tpm_limit,
                              max_fallback_cost_factor=ws.fallback_cost_factor)

    async def set_rate_limits(self, workspace_id: str, spec: RateLimitsSpec, *,
                              actor: str = "cli") -> RateLimitsSpec:
        async def tx(s: AsyncSession) -> None:
            ws = (await s.execute(select(Workspace).where(Workspace.id == workspace_id))).scalar_one_or_none()
            if ws is None:
                raise NotFound(f"no workspace '{workspace_id}'", code="workspace_not_found")
            ws.rpm_limit, ws.tpm_limit = spec.rpm_limit, spec.tpm_limit
            ws.fallback_cost_factor = spec.max_fallback_cost_factor
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="workspace.limits",
                               target=workspace_id, data=spec.model_dump())

        await self.db.run_tx(tx)
        await self._changed(workspace_id)
        return spec


# The spend column that says which rows a budget of each scope counts (as Budget.applies_to).
_LEDGER_COLUMN: dict[str, LedgerScope] = {"workspace": "workspace_id", "key": "api_key_id",
                                          "agent": "agent_id"}


def _audit_data(row: BudgetRow) -> dict[str, str | None]:
    return {"scope": row.scope, "scope_id": row.scope_id, "period": row.period,
            "limit_usd": str(row.limit_usd),
            "per_request_cap_usd": None if row.per_request_cap_usd is None else str(row.per_request_cap_usd)}


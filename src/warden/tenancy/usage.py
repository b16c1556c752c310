"""Spend summaries for ``GET /api/usage``, ``warden usage`` and the console's overview."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Date, Select, case, cast, func, select

from warden.store.db import Database
from warden.store.models import SpendRow
from warden.store.spend import pico_sum

GroupBy = Literal["model", "provider", "key", "day", "session", "agent"]


@dataclass(slots=True)
class UsageRow:
    group: str | None
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    unpriced_requests: int  # successful requests whose price is unknown (not counted in cost_usd)


def _key(db: Database, group_by: GroupBy) -> Any:
    if group_by == "day":
        return func.date(SpendRow.ts) if db.is_sqlite else cast(func.timezone("UTC", SpendRow.ts), Date)
    return {"model": func.coalesce(SpendRow.provider + "/" + SpendRow.model, SpendRow.provider),
            "provider": SpendRow.provider, "key": SpendRow.api_key_id,
            "session": SpendRow.session_id, "agent": SpendRow.agent_id}[group_by]


def _query(db: Database, workspace_id: str, keys: list[Any],
           start: datetime | None, end: datetime | None) -> Select[Any]:
    """The measures of a ``UsageRow`` per distinct value of ``keys`` (each labelled ``g<i>``)."""
    ok = SpendRow.status == "ok"
    q = (
        select(
            *(k.label(f"g{i}") for i, k in enumerate(keys)),
            func.count(),
            func.sum(case((ok, 0), else_=1)),
            func.coalesce(func.sum(SpendRow.input_tokens), 0),
            func.coalesce(func.sum(SpendRow.output_tokens), 0),
            func.coalesce(func.sum(SpendRow.cache_read_tokens), 0),
            func.coalesce(func.sum(SpendRow.cache_write_tokens), 0),
            func.coalesce(func.sum(SpendRow.reasoning_tokens), 0),
            # In whole pico-USD: SQLite keeps costs as REAL, and a SUM of those is a float
            # sum (off in the 11th decimal over a few thousand rows); the rounded per-row
            # picos add up exactly, as the budgets' totals do.
            func.coalesce(pico_sum(db), 0),
            func.sum(case((SpendRow.cost_usd.is_(None), 1), else_=0)),
        )
        .where(SpendRow.workspace_id == workspace_id)
        .group_by(*keys)
        .order_by(*keys)
    )
    if start is not None:
        q = q.where(SpendRow.ts >= start)
    if end is not None:
        q = q.where(SpendRow.ts < end)
    return q


def _row(group: Any, n: int, errs: int | None, i: int, o: int, cr: int, cw: int, r: int,
         cost: Any, unpriced: int | None) -> UsageRow:
    return UsageRow(None if group is None else str(group), n, errs or 0, i, o, cr, cw, r,
                    Decimal(str(cost)).scaleb(-12).normalize() if cost else Decimal(0), unpriced or 0)


async def summarize(db: Database, workspace_id: str, group_by: GroupBy,
                    start: datetime | None = None, end: datetime | None = None) -> list[UsageRow]:
    async with db.session() as s:
        rows = (await s.execute(_query(db, workspace_id, [_key(db, group_by)], start, end))).all()
    return [_row(*r) for r in rows]


async def summarize_each(db: Database, workspace_id: str, group_bys: Sequence[GroupBy],
                         start: datetime | None = None, end: datetime | None = None) -> dict[GroupBy, list[UsageRow]]:
    """``summarize`` for each of ``group_bys`` from one query (one scan, one round trip):
    grouped by all of them at once, then folded per grouping here. The fine groups are
    as many as the distinct combinations, so keep to low-cardinality groupings."""
    wanted = list(dict.fromkeys(group_bys))
    async with db.session() as s:
        rows = (await s.execute(_query(db, workspace_id, [_key(db, g) for g in wanted], start, end))).all()
    out: dict[GroupBy, list[UsageRow]] = {}
    for i, by in enumerate(wanted):
        folded: dict[str | None, UsageRow] = {}
        for r in rows:
            part = _row(r[i], *r[len(wanted):])
            into = folded.get(part.group)
            if into is None:
                folded[part.group] = part
                continue
            into.requests += part.requests
            into.errors += part.errors
            into.input_tokens += part.input_tokens
            into.output_tokens += part.output_tokens
            into.cache_read_tokens += part.cache_read_tokens
            into.cache_write_tokens += part.cache_write_tokens
            into.reasoning_tokens += part.reasoning_tokens
            into.cost_usd = (into.cost_usd + part.cost_usd).normalize()
            into.unpriced_requests += part.unpriced_requests
        # as summarize orders them: by group, none first
        out[by] = sorted(folded.values(), key=lambda u: (u.group is not None, u.group or ""))
    return out

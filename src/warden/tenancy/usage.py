"""Spend summaries for ``GET /api/usage`` and ``warden usage``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import Date, case, cast, func, select

from warden.store.db import Database
from warden.store.models import SpendRow

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


async def summarize(db: Database, workspace_id: str, group_by: GroupBy,
                    start: datetime | None = None, end: datetime | None = None) -> list[UsageRow]:
    if group_by == "day":
        key = (func.date(SpendRow.ts) if db.is_sqlite
               else cast(func.timezone("UTC", SpendRow.ts), Date))
    else:
        key = {"model": func.coalesce(SpendRow.provider + "/" + SpendRow.model, SpendRow.provider),
               "provider": SpendRow.provider, "key": SpendRow.api_key_id,
               "session": SpendRow.session_id, "agent": SpendRow.agent_id}[group_by]
    ok = SpendRow.status == "ok"
    q = (
        select(
            key.label("group"),
            func.count(),
            func.sum(case((ok, 0), else_=1)),
            func.coalesce(func.sum(SpendRow.input_tokens), 0),
            func.coalesce(func.sum(SpendRow.output_tokens), 0),
            func.coalesce(func.sum(SpendRow.cache_read_tokens), 0),
            func.coalesce(func.sum(SpendRow.cache_write_tokens), 0),
            func.coalesce(func.sum(SpendRow.reasoning_tokens), 0),
            func.coalesce(func.sum(SpendRow.cost_usd), 0),
            func.sum(case((SpendRow.cost_usd.is_(None), 1), else_=0)),
        )
        .where(SpendRow.workspace_id == workspace_id)
        .group_by(key)
        .order_by(key)
    )
    if start is not None:
        q = q.where(SpendRow.ts >= start)
    if end is not None:
        q = q.where(SpendRow.ts < end)
    async with db.session() as s:
        rows = (await s.execute(q)).all()
    return [
        UsageRow(None if g is None else str(g), n, errs or 0, i, o, cr, cw, r,
                 Decimal(str(cost)).normalize() if cost else Decimal(0), unpriced or 0)
        for g, n, errs, i, o, cr, cw, r, cost, unpriced in rows
    ]

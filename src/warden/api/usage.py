"""``GET /api/usage``: spend of the caller's workspace, grouped."""

from __future__ import annotations

from decimal import Decimal
from fastapi import APIRouter, Query
from pydantic import BaseModel

from warden.api.deps import AdminDep, IsoDateTime, ServicesDep
from warden.tenancy.usage import GroupBy, UsageRow, summarize

router = APIRouter(prefix="/api/usage", tags=["usage"])


class UsageView(BaseModel):
    group_by: str
    rows: list[UsageRow]
    total_cost_usd: Decimal
    total_requests: int


@router.get("", response_model=UsageView)
async def usage(
    principal: AdminDep,
    services: ServicesDep,
    group_by: GroupBy = "model",
    start: IsoDateTime | None = Query(default=None, alias="from"),
    end: IsoDateTime | None = Query(default=None, alias="to"),
) -> UsageView:
    await services.spend.flush()  # what this instance has queued is part of the answer
    rows = await summarize(services.db, principal.workspace_id, group_by, start, end)
    return UsageView(
        group_by=group_by,
        rows=rows,
        total_cost_usd=sum((r.cost_usd for r in rows), Decimal(0)),
        total_requests=sum(r.requests for r in rows),
    )

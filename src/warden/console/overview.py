"""Overview: spend today and this month against the budgets, requests and errors over
time (charts fed by ``/ui/data/...``), top spenders, breakers open now.

Spend is what ``GET /api/usage`` and ``GET /api/budgets`` show, so like them it is
for admins; a member's overview has what the API lets a member read (approvals).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import Query, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from warden.console.charts import hourly
from warden.console.web import PREFIX, AdminViewerDep, ViewerDep, console_router, nav_entry, render, services_of
from warden.services import Services
from warden.state.base import StateUnavailable
from warden.tenancy.usage import UsageRow, summarize

router = console_router()
nav_entry("/", "Overview", order=10)
_TOP = 5


@router.get("")
async def bare() -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get("/")
async def overview(request: Request, viewer: ViewerDep) -> Response:
    services = services_of(request)
    principal = viewer.principal
    pending = await services.approvals.list(principal, status="pending", limit=500)
    context: dict[str, Any] = {"pending": len(pending)}
    if principal.is_admin:
        context.update(await _spend(services, principal.workspace_id))
    return render(request, "overview.html", viewer, title="Overview", **context)


async def _spend(services: Services, workspace_id: str) -> dict[str, Any]:
    await services.spend.flush()  # what this instance has queued is part of the answer
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    day_rows = await summarize(services.db, workspace_id, "provider", today)
    top = {by: _top(await summarize(services.db, workspace_id, by, month))  # type: ignore[arg-type]
           for by in ("model", "provider", "key", "agent")}
    try:
        budgets = await services.budgets.status(workspace_id, services.state)
    except StateUnavailable:
        budgets = []
    try:
        breakers = sorted((await services.gateway.open_breakers(workspace_id)).items())
    except StateUnavailable:
        breakers = []
    return {
        "today": _total(day_rows),
        "month": _total(await summarize(services.db, workspace_id, "provider", month)),
        "top": top,
        "budgets": budgets,
        "breakers": breakers,
    }


def _total(rows: list[UsageRow]) -> dict[str, Any]:
    return {"cost": sum((r.cost_usd for r in rows), Decimal(0)), "requests": sum(r.requests for r in rows),
            "errors": sum(r.errors for r in rows), "unpriced": sum(r.unpriced_requests for r in rows)}


def _top(rows: list[UsageRow]) -> list[UsageRow]:
    return sorted(rows, key=lambda r: (r.cost_usd, r.requests), reverse=True)[:_TOP]


@router.get("/data/requests")
async def requests_series(request: Request, viewer: AdminViewerDep,
                          hours: int = Query(24, ge=1, le=24 * 31)) -> Response:
    services = services_of(request)
    await services.spend.flush()
    data = await hourly(services.db, viewer.principal.workspace_id, hours=hours)
    return JSONResponse({"x": data["x"], "series": data["series"]})


@router.get("/data/spend")
async def spend_series(request: Request, viewer: AdminViewerDep,
                       hours: int = Query(24, ge=1, le=24 * 31)) -> Response:
    services = services_of(request)
    await services.spend.flush()
    data = await hourly(services.db, viewer.principal.workspace_id, hours=hours)
    return JSONResponse({"x": data["x"], "series": [data["cost"]]})

"""Overview: spend today and this month against the budgets, requests and errors over
time (charts fed by ``/ui/data/...``), top spenders, breakers open now.

Spend is what ``GET /api/usage`` and ``GET /api/budgets`` show, so like them it is
for admins; a member's overview has what the API lets a member read (approvals).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Query, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from warden.console.charts import hourly
from warden.console.web import PREFIX, AdminViewerDep, ViewerDep, console_router, nav_entry, render, services_of
from warden.services import Services
from warden.state.base import StateUnavailable
from warden.tenancy.usage import GroupBy, UsageRow, summarize_each

router = console_router()
nav_entry("/", "Overview", order=10)
T = TypeVar("T")
_TOP = 5
_TOPS: tuple[GroupBy, ...] = ("model", "provider", "key", "agent")


@router.get("")
async def bare() -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get("/")
async def overview(request: Request, viewer: ViewerDep) -> Response:
    services = services_of(request)
    principal = viewer.principal
    # The reads run side by side: on SQLite each is a few thread hops, and on a busy
    # machine every hop waits for the scheduler, so in a row they were most of the page.
    pending, spend = await asyncio.gather(
        services.approvals.list(principal, status="pending", limit=500),
        _spend(services, principal.workspace_id) if principal.is_admin else _nothing())
    return render(request, "overview.html", viewer, title="Overview", pending=len(pending), **spend)


async def _nothing() -> dict[str, Any]:
    return {}


async def _spend(services: Services, workspace_id: str) -> dict[str, Any]:
    await services.spend.flush()  # what this instance has queued is part of the answer
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # One query for the month by every grouping the page shows (a day's totals are its
    # "day" group), beside the budgets.
    month, budgets = await asyncio.gather(
        summarize_each(services.db, workspace_id, (*_TOPS, "day"), today.replace(day=1)),
        _unless_unavailable(services.budgets.status(workspace_id, services.state)))
    breakers = await _unless_unavailable(services.gateway.open_breakers(workspace_id))
    return {
        "today": _total([r for r in month["day"] if r.group == today.date().isoformat()]),
        "month": _total(month["day"]),
        "top": {by: _top(month[by]) for by in _TOPS},
        "budgets": budgets or [],
        "breakers": sorted(breakers.items()) if breakers else [],
    }


async def _unless_unavailable(read: Awaitable[T]) -> T | None:
    """The state store's part of the page, or none while it is unreachable."""
    try:
        return await read
    except StateUnavailable:
        return None


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

"""Requests (admin, as ``/api/usage``): the gateway's request log with filters (key,
agent, model, status, time range) and paging, and what the gateway kept of one
request: its routing explanation as far as it is stored.

Both read the spend ledger (``tenancy/request_log.py``). The ledger keeps the
provider and model that answered, the attempts it took, the credential used, the
cost (or none when the model has no price), latency and status; it does not keep
the plan the router made (the candidates tried before the answer), so the
explanation says what is known and names what is not.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import Query, Request
from starlette.responses import Response

from warden.console.web import AdminViewerDep, console_router, nav_entry, render, services_of
from warden.errors import INT64_MAX, NotFound, ValidationFailed
from warden.services import Services
from warden.tenancy.request_log import RequestFilter, get_request, list_requests

router = console_router()
nav_entry("/requests", "Requests", order=60, admin_only=True)
PAGE = 50


def parse_time(value: str | None, name: str) -> datetime | None:
    """A ``datetime-local`` field (or ISO 8601); a time without zone is UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationFailed(f"{name}: a date and time like 2026-12-01T09:30", param=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.get("/requests")
async def requests_page(request: Request, viewer: AdminViewerDep,
                        key: str = Query("", max_length=40), agent: str = Query("", max_length=40),
                        model: str = Query("", max_length=200), status: str = Query("", max_length=32),
                        since: str = Query("", max_length=40), until: str = Query("", max_length=40),
                        before: int | None = Query(None, ge=0, le=INT64_MAX)) -> Response:
    services = services_of(request)
    ws = viewer.principal.workspace_id
    filters = RequestFilter(key_id=key or None, agent_id=agent or None, model=model.strip() or None,
                            status=status or None, since=parse_time(since, "since"), until=parse_time(until, "until"))
    await services.spend.flush()  # what this instance has queued is part of the log
    # Side by side: each read is a few thread hops on SQLite, each a wait on a busy machine.
    (rows, next_cursor), (keys, agents) = await asyncio.gather(
        list_requests(services.db, ws, filters, limit=PAGE, before=before), _names(services, ws))
    query = {"key": key, "agent": agent, "model": model, "status": status, "since": since, "until": until}
    filters_query = {k: v for k, v in query.items() if v}
    return render(request, "requests.html", viewer, title="Requests", rows=rows, keys=keys, agents=agents,
                  query=query, next_cursor=next_cursor, paged=before is not None,
                  filters_query=filters_query, next_query={**filters_query, "before": next_cursor})


@router.get("/requests/{request_id}")
async def request_page(request: Request, request_id: str, viewer: AdminViewerDep) -> Response:
    services = services_of(request)
    ws = viewer.principal.workspace_id
    await services.spend.flush()
    rows, (keys, agents), limits = await asyncio.gather(
        get_request(services.db, ws, request_id[:64]), _names(services, ws), services.budgets.rate_limits(ws))
    if not rows:
        raise NotFound(f"no request '{request_id[:64]}' in this workspace's log", code="request_not_found")
    factor = limits.max_fallback_cost_factor
    return render(request, "request.html", viewer, title=f"Request {request_id[:24]}", request_id=request_id,
                  rows=rows, keys=keys, agents=agents, explanations=[explain(r) for r in rows],
                  cost_factor=factor if factor is not None else services.settings.fallback_cost_factor)


async def _names(services: Services, ws: str) -> tuple[dict[str, str], dict[str, str]]:
    """The workspace's key names and agent names by id (the log keeps ids)."""
    keys, agents = await asyncio.gather(services.accounts.list_keys(ws), services.agents.list(ws))
    return {k.id: k.name for k in keys}, {a.id: a.name for a in agents}


def explain(row: Any) -> list[str]:
    """Plain sentences of what the stored row says about how the request was routed."""
    lines = []
    if row.provider:
        lines.append(f"Answered by {row.provider}/{row.model or '?'}"
                     + (f" with credential {row.credential_id}." if row.credential_id else "."))
    else:
        lines.append("No provider answered (the request failed before or at routing).")
    if row.attempts > 1:
        lines.append(f"It took {row.attempts} attempts: {row.attempts - 1} earlier attempt(s) failed over "
                     "(retry or fallback) before this one.")
    else:
        lines.append("The first attempt answered: no retry, no fallback.")
    if row.cost_usd is None and row.status == "ok":
        lines.append("Cost unknown: the model has no price in the catalog or the credential.")
    if row.status != "ok":
        lines.append(f"Status: {row.status}.")
    return lines

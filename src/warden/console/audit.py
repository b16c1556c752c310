"""Audit (admin, as ``/api/audit``): the workspace's hash-chained events with filters
(action, or a family like ``approval.``; time range) and paging; export as JSONL;
and "verify": the chain walked and held against every signed checkpoint.

The chain is one for the whole server (every workspace's events link into it), so
verifying it is the operator's act, as ``warden audit verify`` is: only an admin of
the default workspace may run it (another workspace's admin would learn of events
that are not theirs). Export is of the viewer's workspace only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
from fastapi import Query, Request
from starlette.responses import Response, StreamingResponse

from warden.console.masking import pretty
from warden.console.requests import parse_time
from warden.console.web import AdminViewerDep, console_router, nav_entry, render, services_of
from warden.errors import INT64_MAX, Forbidden
from warden.tenancy.accounts import DEFAULT_WORKSPACE

router = console_router()
nav_entry("/audit", "Audit", order=70, admin_only=True)
PAGE = 100


@router.get("/audit")
async def audit_page(request: Request, viewer: AdminViewerDep, action: str = Query("", max_length=64),
                     since: str = Query("", max_length=40), until: str = Query("", max_length=40),
                     cursor: int | None = Query(None, ge=0, le=INT64_MAX)) -> Response:
    events, next_cursor = await services_of(request).audit_log.page(
        viewer.principal.workspace_id, action=action.strip() or None, since=parse_time(since, "since"),
        until=parse_time(until, "until"), limit=PAGE, cursor=cursor)
    for event in events:
        event["shown"] = pretty(event["data"]) if event["data"] else ""
    query = {k: v for k, v in {"action": action, "since": since, "until": until}.items() if v}
    return render(request, "audit.html", viewer, title="Audit", events=events, query=query,
                  next_query={**query, "cursor": next_cursor} if next_cursor is not None else None,
                  can_verify=viewer.principal.workspace_name == DEFAULT_WORKSPACE)


@router.post("/audit/verify")
async def verify(request: Request, viewer: AdminViewerDep) -> Response:
    if viewer.principal.workspace_name != DEFAULT_WORKSPACE:
        raise Forbidden("verifying the whole chain needs an admin key of the default workspace",
                        code="admin_required")
    result = await services_of(request).audit_log.verify()
    return render(request, "_audit_verified.html", viewer, result=result)


@router.get("/audit/export")
async def export(request: Request, viewer: AdminViewerDep) -> Response:
    log = services_of(request).audit_log
    workspace_id = viewer.principal.workspace_id

    async def lines() -> AsyncIterator[bytes]:
        async for event in log.export(workspace_id):
            yield orjson.dumps(event) + b"\n"

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
        "content-disposition": f'attachment; filename="warden-audit-{stamp}.jsonl"'})

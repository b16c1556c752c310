"""Approvals inbox: the pending actions of hosted and external agents (agent, tier,
tool, masked arguments, risk level, rule, age); approve or reject with a note; live.

Reading and deciding go through ``Approvals`` as ``/api/approvals`` does: a member
sees the actions of their own key's runs, only an admin decides (and the service
applies its own rules, the second-person one included). Live: the page listens on
``/ui/approvals/events`` (SSE), which polls the pending set every few seconds and
says "changed" when it did; the list then reloads itself (htmx).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Form, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from warden.console.masking import pretty
from warden.console.web import (
    COOKIE,
    PREFIX,
    AdminViewerDep,
    ViewerDep,
    console_router,
    is_htmx,
    nav_entry,
    render,
    services_of,
    sessions_of,
)
from warden.formats.sse import KEEPALIVE, frame
from warden.governance.approvals import ApprovalView
from warden.services import Services
from warden.tenancy.accounts import Principal

router = console_router()
nav_entry("/approvals", "Approvals", order=20)
POLL_S = 2.0  # how often the live stream looks at the pending set (two indexed reads)
STREAM_S = 60.0  # how long one stream lasts before the browser reconnects
_RECHECK_EVERY = 15  # polls between re-checks of the session (a revoked key ends the stream)
_LIMIT = 200


@router.get("/approvals")
async def inbox(request: Request, viewer: ViewerDep) -> Response:
    return render(request, "approvals.html", viewer, title="Approvals", **await _pending(request, viewer.principal))


@router.get("/approvals/list")
async def pending_list(request: Request, viewer: ViewerDep) -> Response:
    return render(request, "_approval_list.html", viewer, **await _pending(request, viewer.principal))


@router.post("/approvals/{approval_id}")
async def decide(request: Request, approval_id: str, viewer: AdminViewerDep,
                 decision: Annotated[Literal["approve", "reject"], Form()],
                 note: Annotated[str, Form(max_length=2000)] = "") -> Response:
    services = services_of(request)
    view = await services.approvals.decide(viewer.principal, approval_id, decision, note=note.strip() or None)
    if not is_htmx(request):
        return RedirectResponse(f"{PREFIX}/approvals", status_code=303)
    return render(request, "_approval_decided.html", viewer, a=view)


@router.get("/approvals/events")
async def events(request: Request, viewer: ViewerDep) -> Response:
    """``changed`` whenever the pending set changes. Each event's id names the set, so a
    browser that reconnects (``Last-Event-ID``) hears at once of what it missed. A
    stream lasts ``STREAM_S`` (the browser reconnects by itself), so a stopping server
    waits for none for long."""
    token = request.cookies.get(COOKIE)
    services = services_of(request)
    known = request.headers.get("last-event-id")

    async def stream() -> AsyncIterator[bytes]:
        seen = await _signature(services, viewer.principal)
        yield frame(len(seen), event="changed" if known not in (None, _id(seen)) else "hello", id=_id(seen))
        for polls in range(1, int(STREAM_S / POLL_S) + 1):
            await asyncio.sleep(POLL_S)
            if await request.is_disconnected():
                return
            if polls % _RECHECK_EVERY == 0:
                if await sessions_of(request).resolve(token) is None:
                    yield frame("signed out", event="ended")
                    return
                yield KEEPALIVE
            now = await _signature(services, viewer.principal)
            if now != seen:
                seen = now
                yield frame(len(now), event="changed", id=_id(now))

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"x-accel-buffering": "no"})


async def _signature(services: Services, principal: Principal) -> frozenset[str]:
    return frozenset(a.id for a in await services.approvals.list(principal, status="pending", limit=_LIMIT))


def _id(ids: frozenset[str]) -> str:
    return hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:16]


async def _pending(request: Request, principal: Principal) -> dict[str, Any]:
    services = services_of(request)
    pending = await services.approvals.list(principal, status="pending", limit=_LIMIT)
    agents = {a.id: a for a in await services.agents.list(principal.workspace_id)}
    now = datetime.now(UTC)
    return {"items": [_item(a, agents.get(a.agent_id), now) for a in pending]}


def _item(a: ApprovalView, agent: Any, now: datetime) -> dict[str, Any]:
    return {
        "a": a,
        "agent_name": agent.name if agent is not None else a.agent_id,
        "agent_kind": getattr(agent, "kind", "hosted") if agent is not None else "unknown",
        "tier": agent.tier if agent is not None else "?",
        "source": getattr(a, "source", None) or ("run" if a.run_id else "external"),
        "arguments": pretty(a.arguments),
        "age": _age(now - a.requested_at),
    }


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d"

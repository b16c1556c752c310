"""Chat with agents: sessions, one-shot and streamed turns (SSE, WebSocket), and runs.

SSE frames are ``id: <seq>`` / ``event: <type>`` / ``data: <json>``; every event
carries ``run_id``, ``session_id`` and an increasing ``seq``. When a stream has had
nothing to send for ``RuntimeConfig.keepalive_s`` (15 s; a paused or quiet run),
it sends the comment ``: ping`` so proxies keep the connection open. The client
that starts a streamed turn owns it: leaving before the run ends cancels the run
(unless it is paused for an approval). ``GET /api/runs/{id}/events`` only
follows (replay from the database, then live) and never cancels.

The WebSocket face of the same turns is ``api/chat_ws.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field

from warden.tenancy.accounts import Principal
from warden.agents.runs import MAX_MESSAGE_CHARS, RunHandle, RunOutcome, stream_turn
from warden.agents.sessions import MessageView, SessionView
from warden.api.deps import PrincipalDep, ServicesDep
from warden.api.gateway_http import GatewayStreamResponse
from warden.errors import INT32_MAX, INT64_MAX, WardenError
from warden.formats import sse
from warden.formats.common import parse_body
from warden.services import Services

router = APIRouter(tags=["chat"])
log = logging.getLogger("warden.api.chat")


class SessionCreate(BaseModel):
    agent_id: str | None = Field(default=None, max_length=80)
    title: str | None = Field(default=None, max_length=200)


class ChatBody(BaseModel):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    agent_id: str | None = Field(default=None, max_length=80)
    session_id: str | None = Field(default=None, max_length=80)


class SessionDetail(SessionView):
    messages: list[MessageView]
    has_more: bool


class ToolCallView(BaseModel):
    id: str
    step: int
    call_id: str
    name: str
    arguments: str
    risk_level: int | None
    decision: str
    reason: str | None
    rule: str | None
    status: str
    is_error: bool
    result: str | None
    started_at: datetime
    ended_at: datetime | None
    # For an action that needed a human: {status, decided_by, decided_at, note, expires_at}.
    approval: dict[str, Any] | None = None


class RunView(BaseModel):
    id: str
    session_id: str
    agent_id: str
    status: str
    steps: list[dict[str, Any]]
    usage: dict[str, Any] | None
    cost_usd: str | None
    provider: str | None
    model: str | None
    error: dict[str, Any] | None
    pending: list[str]
    started_at: datetime
    ended_at: datetime | None
    tool_calls: list[ToolCallView]


# --- sessions ----------------------------------------------------------------


@router.post("/api/sessions", status_code=201, response_model=SessionView)
async def create_session(request: Request, principal: PrincipalDep, services: ServicesDep) -> SessionView:
    body = parse_body(SessionCreate, await request.body())
    return SessionView.of(await services.sessions.create(principal, body.agent_id, body.title))


@router.get("/api/sessions", response_model=list[SessionView])
async def list_sessions(principal: PrincipalDep, services: ServicesDep,
                        limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0, le=INT64_MAX)) -> list[SessionView]:
    return [SessionView.of(s) for s in await services.sessions.list(principal, limit=limit, offset=offset)]


@router.get("/api/sessions/{session_id}", response_model=SessionDetail)
async def get_session(session_id: str, principal: PrincipalDep, services: ServicesDep,
                      after: int = Query(0, ge=0, le=INT32_MAX), limit: int = Query(100, ge=1, le=500)) -> SessionDetail:
    session = await services.sessions.get(principal, session_id)
    rows = await services.sessions.messages(session.id, after=after, limit=limit + 1)
    return SessionDetail(**SessionView.of(session).model_dump(),
                         messages=[MessageView.of(m) for m in rows[:limit]], has_more=len(rows) > limit)


@router.delete("/api/sessions/{session_id}", response_model=SessionView)
async def delete_session(session_id: str, principal: PrincipalDep, services: ServicesDep) -> SessionView:
    return SessionView.of(await services.runs.delete_session(principal, session_id))


# --- turns -------------------------------------------------------------------


async def _start(request: Request, principal: Principal, services: Services) -> RunHandle:
    body = parse_body(ChatBody, await request.body())
    return await services.runs.start(principal, body.message, agent_ref=body.agent_id,
                                     session_id=body.session_id,
                                     request_id=getattr(request.state, "request_id", "") or "")


@router.post("/api/chat")
async def chat(request: Request, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    handle = await _start(request, principal, services)
    outcome = await services.runs.wait(handle)
    if outcome.status == "failed" and outcome.error is not None:
        raise _as_error(outcome)
    return _outcome_body(outcome)


def _outcome_body(o: RunOutcome) -> dict[str, Any]:
    return {"session_id": o.session_id, "run_id": o.run_id, "status": o.status, "message": o.message,
            "usage": o.usage, "cost_usd": o.cost_usd, "provider": o.provider, "model": o.model}


def _as_error(o: RunOutcome) -> WardenError:
    err = o.error or {}
    exc = WardenError(err.get("message", "the run failed"), code=err.get("code"), status=err.get("status", 500),
                      headers={"x-warden-run-id": o.run_id, "x-warden-session-id": o.session_id})
    exc.type = err.get("type", "server_error")
    return exc


def sse_frame(event: dict[str, Any]) -> bytes:
    return sse.frame(event, event=event["type"], id=event["seq"], default=json_default)


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError




class _EventStream:
    """SSE frames of a run's events, with a keep-alive comment when the run is quiet.

    ``owner_of``: this stream's client started that run's turn, so if it leaves before the
    turn's stream ended, the run is abandoned (cancelled unless paused). A
    follower's stream just stops reading."""

    def __init__(self, services: Services, events: AsyncIterator[dict[str, Any]], *,
                 owner_of: str | None = None) -> None:
        self.services = services
        self.events = events
        self.owner_of = owner_of
        self.finished = False
        self._next: asyncio.Future[dict[str, Any] | None] | None = None

    async def frames(self) -> AsyncIterator[bytes]:
        every = self.services.runs.config.keepalive_s
        while True:
            if self._next is None:
                self._next = asyncio.ensure_future(anext(self.events, None))
            done, _ = await asyncio.wait({self._next}, timeout=every)
            if not done:
                yield sse.KEEPALIVE
                continue
            event, self._next = self._next.result(), None
            if event is None:
                self.finished = True
                return
            yield sse_frame(event)

    async def aclose(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.cancel()
            with contextlib.suppress(BaseException):
                await self._next
        with contextlib.suppress(Exception):
            await self.events.aclose()  # type: ignore[attr-defined]
        if self.owner_of is not None and not self.finished:
            await self.services.runs.abandon(self.owner_of)


@router.post("/api/chat/stream")
async def chat_stream(request: Request, principal: PrincipalDep, services: ServicesDep) -> GatewayStreamResponse:
    handle = await _start(request, principal, services)
    stream = _EventStream(services, stream_turn(handle), owner_of=handle.run_id)
    return GatewayStreamResponse(stream.frames(), stream, {"x-warden-run-id": handle.run_id,
                                                           "x-warden-session-id": handle.session_id})


# --- runs --------------------------------------------------------------------


@router.get("/api/runs/{run_id}", response_model=RunView)
async def get_run(run_id: str, principal: PrincipalDep, services: ServicesDep) -> RunView:
    run, calls = await services.runs.get(principal, run_id)
    approvals = await services.approvals.for_run(run.id)
    return RunView(
        id=run.id, session_id=run.session_id, agent_id=run.agent_id, status=run.status, steps=run.steps or [],
        usage=run.usage, cost_usd=None if run.cost_usd is None else format(run.cost_usd, "f"),
        provider=run.provider, model=run.model, error=run.error,
        pending=_waiting_on(run.resume_state), started_at=run.started_at,
        ended_at=run.ended_at, tool_calls=[_tool_call_view(c, approvals.get(c.id)) for c in calls],
    )


def _waiting_on(state: dict[str, Any] | None) -> list[str]:
    """Actions the run still waits for: undecided, or decided and being carried out."""
    state = state or {}
    return [*state.get("pending", []), *state.get("settling", [])]


def _tool_call_view(call: Any, approval: Any) -> ToolCallView:
    view = ToolCallView.model_validate(call, from_attributes=True)
    if approval is not None:
        view.approval = {"id": approval.id, "status": approval.status, "decided_by": approval.decided_by,
                         "decided_at": approval.decided_at, "note": approval.note,
                         "expires_at": approval.expires_at}
    return view


@router.get("/api/runs/{run_id}/events")
async def run_events(run_id: str, principal: PrincipalDep, services: ServicesDep,
                     after: int | None = Query(None, ge=0, le=INT32_MAX),
                     last_event_id: str | None = Header(None)) -> GatewayStreamResponse:
    start = after if after is not None else _int_or_zero(last_event_id)
    await services.runs.get(principal, run_id)  # 404 before the stream starts
    stream = _EventStream(services, services.runs.follow(principal, run_id, start))
    return GatewayStreamResponse(stream.frames(), stream, {"x-warden-run-id": run_id})


def _int_or_zero(value: str | None) -> int:
    """A browser's ``Last-Event-ID``; past the seq column's range nothing follows it."""
    try:
        return min(max(int(value or 0), 0), INT32_MAX)
    except ValueError:
        return 0

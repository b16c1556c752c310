"""Chat with agents: sessions, one-shot and streamed turns (SSE, WebSocket), and runs.

SSE frames are ``id: <seq>`` / ``event: <type>`` / ``data: <json>``; every event
carries ``run_id``, ``session_id`` and an increasing ``seq``. When a stream has had
nothing to send for ``RuntimeConfig.keepalive_s`` (15 s; a paused or quiet run),
it sends the comment ``: ping`` so proxies keep the connection open. The client
that starts a streamed turn owns it: leaving before the run ends cancels the run
(unless it is paused for an approval). ``GET /api/runs/{id}/events`` only
follows (replay from the database, then live) and never cancels.

WebSocket ``/api/chat/ws`` (the API key in the Authorization header or a first
``{"type": "auth", "token"}`` message) answers ``{"type": "ready"}``, then takes
one message at a time:

- ``{"message", "agent_id"?, "session_id"?}`` starts a turn and relays its events
  up to ``run.completed`` / ``run.failed`` / ``run.cancelled`` or ``run.paused``.
  Leaving mid-turn cancels the run, as with SSE.
- ``{"type": "follow", "run_id", "after"?}`` relays the run's events after seq
  ``after`` (default 0): replay, then live, until the run ends, then says
  ``{"type": "follow.ended", "run_id", "reason": "run_ended"}`` (at once when
  the run had already ended and nothing follows ``after``). This is how a client
  sees a paused run go on: after ``run.paused`` it sends
  ``{"type": "follow", "run_id": <run>, "after": <the pause's seq>}`` and gets
  ``tool.result`` … ``run.completed`` once someone decides the approval (on any
  instance). ``{"type": "unfollow"}`` stops following (``follow.ended`` with
  reason ``unfollowed``); neither that nor leaving touches the run.

While a turn or follow is under way, any other message is answered with an
``error`` (``turn_in_progress``); one follow of a paused run may wait for hours,
so ``unfollow`` frees the socket for new turns. Messages are JSON text frames: a
binary frame is answered with an ``error`` (``binary_frame``) and otherwise
ignored (as the first message it fails authentication). An unexpected failure
ends the socket with an ``error`` message (``internal_error``) and close code 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError

from warden.tenancy.accounts import Principal, bearer_token
from warden.agents.events import STOPS_STREAM, TERMINAL
from warden.agents.runtime import MAX_MESSAGE_CHARS, RunHandle, RunOutcome, stream_turn
from warden.agents.sessions import MessageView, SessionView
from warden.api.deps import PrincipalDep, ServicesDep
from warden.api.wire.common import GatewayStreamResponse, parse_body
from warden.errors import Unauthorized, ValidationFailed, WardenError
from warden.formats import sse
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
                        limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0)) -> list[SessionView]:
    return [SessionView.of(s) for s in await services.sessions.list(principal, limit=limit, offset=offset)]


@router.get("/api/sessions/{session_id}", response_model=SessionDetail)
async def get_session(session_id: str, principal: PrincipalDep, services: ServicesDep,
                      after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=500)) -> SessionDetail:
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
    return sse.frame(event, event=event["type"], id=event["seq"], default=_json_default)


def _json_default(value: Any) -> Any:
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
                     after: int | None = Query(None, ge=0),
                     last_event_id: str | None = Header(None)) -> GatewayStreamResponse:
    start = after if after is not None else _int_or_zero(last_event_id)
    await services.runs.get(principal, run_id)  # 404 before the stream starts
    stream = _EventStream(services, services.runs.follow(principal, run_id, start))
    return GatewayStreamResponse(stream.frames(), stream, {"x-warden-run-id": run_id})


def _int_or_zero(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


# --- WebSocket ----------------------------------------------------------------


async def _ws_principal(ws: WebSocket, services: Services) -> Principal:
    """The key from the Authorization header, else from a first ``{"type": "auth", "token"}`` message.
    A key in the URL is refused: URLs end up in logs and browser history."""
    if "token" in ws.query_params or "api_key" in ws.query_params:
        raise Unauthorized("send the API key in the Authorization header or an auth message, never in the URL")
    token = bearer_token(ws.headers.get("authorization"))
    if token is not None:
        return await services.accounts.authenticate(token)
    await ws.accept()
    first = await asyncio.wait_for(_receive(ws), 10)
    msg = _loads(first) if isinstance(first, str) else {}
    if msg.get("type") != "auth" or not isinstance(msg.get("token"), str):
        raise Unauthorized("the first message must be {\"type\": \"auth\", \"token\": \"wk-…\"}")
    return await services.accounts.authenticate(msg["token"])


async def _receive(ws: WebSocket) -> str | bytes:
    """The next frame as sent: text, or bytes for a binary frame (refused by the caller).
    Raises WebSocketDisconnect when the client has left."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    return text if text is not None else (message.get("bytes") or b"")


def _binary_frame_error() -> ValidationFailed:
    return ValidationFailed("binary frames are not accepted; send JSON objects as text frames",
                            code="binary_frame")


def _loads(text: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValidationFailed("messages must be JSON objects", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ValidationFailed("messages must be JSON objects")
    return data


async def _send(ws: WebSocket, payload: dict[str, Any]) -> None:
    await ws.send_text(orjson.dumps(payload, default=_json_default).decode())


def _error_payload(exc: WardenError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": exc.type, "code": exc.code, "message": exc.message,
                                       "status": exc.status}}


@router.websocket("/api/chat/ws")
async def chat_ws(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    try:
        principal = await _ws_principal(ws, services)
    except (WardenError, TimeoutError, WebSocketDisconnect) as exc:
        if isinstance(exc, WardenError) and ws.client_state.name == "CONNECTED":
            await _send(ws, _error_payload(exc))
        await _close(ws, 1008)
        return
    except Exception as exc:  # noqa: BLE001 - e.g. the key store is down: an error message, not a traceback
        await _fail(ws, exc)
        return
    try:
        if ws.client_state.name != "CONNECTED":
            await ws.accept()
        await _send(ws, {"type": "ready", "workspace_id": principal.workspace_id})
        leftover: str | bytes | None = None
        while True:
            frame = leftover if leftover is not None else await _receive(ws)
            leftover = await _ws_message(ws, services, principal, frame)
    except WebSocketDisconnect:
        return
    except Exception as exc:  # noqa: BLE001 - any failure (a listener's included) ends the socket cleanly
        await _fail(ws, exc)


async def _fail(ws: WebSocket, exc: Exception) -> None:
    """End the socket after an unexpected failure: logged here, a generic error to the client."""
    log.error("chat websocket failed", exc_info=exc)
    with contextlib.suppress(Exception):
        if ws.client_state.name == "CONNECTED":
            await _send(ws, _error_payload(WardenError("internal error; the connection is closed")))
    await _close(ws, 1011)


async def _close(ws: WebSocket, code: int) -> None:
    with contextlib.suppress(Exception):  # already closed by the client or the server
        await ws.close(code=code)


class WsFollow(BaseModel):
    type: Literal["follow"]
    run_id: str = Field(min_length=1, max_length=80)
    after: int = Field(default=0, ge=0)


async def _ws_message(ws: WebSocket, services: Services, principal: Principal,
                      frame: str | bytes) -> str | bytes | None:
    """One client message: a turn, a follow or a stray unfollow. Returns a message that
    arrived just as the turn or follow ended (the next one to handle), if any."""
    try:
        if isinstance(frame, bytes):
            raise _binary_frame_error()
        msg = _loads(frame)
        if msg.get("type") == "follow":
            follow = WsFollow.model_validate(msg)
            await services.runs.get(principal, follow.run_id)  # 404 before anything is relayed
            return await _relay(ws, services, services.runs.follow(principal, follow.run_id, follow.after),
                                stop=TERMINAL, follows=follow.run_id)
        if msg.get("type") == "unfollow":
            raise ValidationFailed("nothing is being followed", code="not_following")
        body = ChatBody.model_validate(msg)
        handle = await services.runs.start(principal, body.message, agent_ref=body.agent_id,
                                           session_id=body.session_id)
    except ValidationError as exc:
        await _send(ws, _error_payload(ValidationFailed.of(exc, where="message")))
        return None
    except WardenError as exc:
        await _send(ws, _error_payload(exc))
        return None
    return await _relay(ws, services, stream_turn(handle), stop=STOPS_STREAM, owner_of=handle.run_id)


def _is_unfollow(text: str | bytes) -> bool:
    if isinstance(text, bytes):
        return False
    try:
        return _loads(text).get("type") == "unfollow"
    except ValidationFailed:
        return False


async def _relay(ws: WebSocket, services: Services, events: AsyncIterator[dict[str, Any]], *,
                 stop: frozenset[str], owner_of: str | None = None,
                 follows: str | None = None) -> str | bytes | None:
    """Send ``events`` to the socket until one of ``stop`` while listening to the client.

    A turn (``owner_of``) is abandoned if the client leaves mid-way; a follow
    (``follows``) ends on ``unfollow`` or a disconnect and leaves the run alone.
    Any other message meanwhile gets a ``turn_in_progress`` error."""
    listener: asyncio.Task[str | bytes] | None = asyncio.create_task(_receive(ws))
    upcoming: asyncio.Future[dict[str, Any] | None] | None = None
    finished = unfollowed = False
    try:
        while not finished:
            if upcoming is None:
                upcoming = asyncio.ensure_future(anext(events, None))
            assert listener is not None
            done, _ = await asyncio.wait({upcoming, listener}, return_when=asyncio.FIRST_COMPLETED)
            if upcoming in done:
                event = upcoming.result()
                upcoming = None
                if event is not None:
                    await _send(ws, event)
                finished = event is None or event["type"] in stop
            elif listener in done:
                text = listener.result()  # raises WebSocketDisconnect when the client left
                if follows is not None and _is_unfollow(text):
                    listener, finished, unfollowed = None, True, True
                    break
                await _send(ws, _error_payload(_binary_frame_error() if isinstance(text, bytes) else ValidationFailed(
                    "a turn is in progress; wait for it to end", code="turn_in_progress")))
                listener = asyncio.create_task(_receive(ws))
        if follows is not None:
            await _send(ws, {"type": "follow.ended", "run_id": follows,
                             "reason": "unfollowed" if unfollowed else "run_ended"})
        if listener is not None and listener.done():
            return listener.result()  # the next message (or the disconnect)
        return None
    finally:
        for task in (upcoming, listener):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
        if not finished and owner_of is not None:
            await services.runs.abandon(owner_of)

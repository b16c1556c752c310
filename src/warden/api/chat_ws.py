"""Chat with agents over one WebSocket.

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
from typing import Any, Literal

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError

from warden.agents.events import STOPS_STREAM, TERMINAL
from warden.agents.runs import error_body, stream_turn
from warden.api.chat import ChatBody, json_default
from warden.errors import NonNegativeInt32, Unauthorized, ValidationFailed, WardenError
from warden.services import Services
from warden.tenancy.accounts import Principal, bearer_token

router = APIRouter(tags=["chat"])
log = logging.getLogger("warden.api.chat")


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
    await ws.send_text(orjson.dumps(payload, default=json_default).decode())


def _error_payload(exc: WardenError) -> dict[str, Any]:
    return {"type": "error", "error": error_body(exc)}


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
    after: NonNegativeInt32 = 0


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

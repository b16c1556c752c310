"""The HTTP side of the gateway endpoints (the wire formats themselves are pure
code in ``warden.formats``): the call context from a request, the ``x-warden-*``
headers, and an SSE response that always cancels the upstream call when it ends
(normally or by a disconnect)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from warden.formats.common import StreamRenderer, cost_text, render_stream
from warden.gateway.context import CallContext, RouteOptions
from warden.gateway.limits import rate_headers
from warden.gateway.metering import CallInfo
from warden.gateway.stream import GatewayStream
from warden.tenancy.accounts import Principal


def call_context(request: Request, principal: Principal, warden: Mapping[str, Any] | None) -> CallContext:
    state = request.state
    ctx = CallContext(
        workspace_id=principal.workspace_id,
        api_key_id=principal.key_id,
        request_id=getattr(state, "request_id", "") or "",
        # A key bound to an agent is that agent's identity: its spend, budgets and limits.
        agent_id=principal.agent_id,
        options=RouteOptions.from_dict(warden),
        key_rpm_limit=principal.rpm_limit,
        key_tpm_limit=principal.tpm_limit,
        # A coding agent's session (Claude Code sends it on every request): on the spend rows.
        session_id=request.headers.get("x-claude-code-session-id") or None,
    )
    started = getattr(state, "started", None)  # set by the middleware when the request arrived
    if started is not None:
        ctx.started = started
    state.gateway_call = ctx  # the access log reads how the call went from here
    return ctx


def warden_headers(info: CallInfo, *, with_cost: bool) -> dict[str, str]:
    headers = {
        "x-warden-provider": info.provider,
        "x-warden-model": info.model,
        "x-warden-attempts": str(info.attempts),
        "x-warden-overhead-ms": f"{info.overhead_ms:.2f}",
    }
    if with_cost:
        headers["x-warden-cost-usd"] = cost_text(info.cost_usd) or "unknown"
    if info.fallback:
        headers["x-warden-fallback"] = "1"
        if info.cost_factor is not None:
            headers["x-warden-fallback-cost-factor"] = f"{info.cost_factor:.2f}".rstrip("0").rstrip(".")
    headers.update(rate_headers(info.rate))  # OpenAI-style x-ratelimit-* when limits apply
    return headers


def completed(payload: dict[str, Any], info: CallInfo) -> Response:
    """A finished call's reply, with its cost in the headers (known by now)."""
    return Response(orjson.dumps(payload), media_type="application/json",
                    headers=warden_headers(info, with_cost=True))


def streamed(stream: GatewayStream, renderer: StreamRenderer, log: logging.Logger) -> GatewayStreamResponse:
    """A gateway stream as SSE; the cost is not known yet when the headers leave."""
    return GatewayStreamResponse(render_stream(stream, renderer, log), stream,
                                 warden_headers(stream.info, with_cost=False))


class GatewayStreamResponse(StreamingResponse):
    """An SSE response that closes the gateway stream however the response ends:
    finished, failed, or cut short by a client disconnect (cancellation).

    Starlette's ``StreamingResponse.__call__`` runs every stream in an anyio task
    group with cancel scopes; on the hot path that fixed cost was a good part of the
    time to first token. Here the frames are written by the request's own task, and
    one plain asyncio task waits for ``http.disconnect``: when the client leaves
    first, it cancels the request's task, which interrupts even a stalled upstream.
    """

    def __init__(self, content: AsyncIterator[bytes], stream: Any, headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={
            **headers, "cache-control": "no-cache", "x-accel-buffering": "no",
        })
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None  # ASGI apps always run inside a task
        writing = True
        cancelled_by_disconnect = False

        async def cancel_on_disconnect() -> None:
            nonlocal cancelled_by_disconnect
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # noqa: BLE001 - a broken receive channel: the send side will notice
                return
            if writing:
                cancelled_by_disconnect = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(cancel_on_disconnect())
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            writing = False  # a disconnect from here on costs nothing: do not cancel
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not cancelled_by_disconnect:
                raise  # the server is cancelling us (shutdown): not ours to swallow
            task.uncancel()
        except OSError:  # the client is gone (ASGI 2.4 servers say so on send)
            pass
        finally:
            writing = False
            # Cancelled while this task runs, the watcher can no longer cancel it: a
            # cancelled task is thrown CancelledError at its own pending await.
            watcher.cancel()
            await self._stream.aclose()  # a no-op when the stream finished on its own

"""What both compatible endpoints need: strict-enough body parsing that names the
bad field, the ``x-warden-*`` headers, the call context, and an SSE response that
always cancels the upstream call when it ends (normally or by a disconnect)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from warden.tenancy.accounts import Principal
from warden.errors import InvalidRequest, ValidationFailed, WardenError
from warden.gateway.gateway import CallInfo
from warden.gateway.context import CallContext
from warden.gateway.limits import rate_headers
from warden.gateway.providers.base import split_data_url
from warden.gateway.context import RouteOptions
from warden.gateway.types import ImagePart, StreamEvent

Body = TypeVar("Body", bound=BaseModel)
_log = logging.getLogger("warden.api.wire")

def parse_body(model: type[Body], raw: bytes) -> Body:
    """JSON bytes -> ``model``; 400 for bad JSON, 422 naming the first bad field."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ValidationFailed("body: the request body must be a JSON object", param="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed.of(exc) from None


def invalid(path: str, message: str) -> ValidationFailed:
    """A 422 for a field the models accept in shape but we cannot serve."""
    return ValidationFailed(f"{path}: {message}", param=path)


def image_part(url: str, detail: str | None = None) -> ImagePart:
    """An image URL as a part; ``data:`` URLs become inline base64."""
    inline = split_data_url(url)
    if inline is not None:
        return ImagePart(media_type=inline[0], data=inline[1], detail=detail)
    return ImagePart(url=url, detail=detail)


def call_context(request: Request, principal: Principal, warden: Mapping[str, Any] | None) -> CallContext:
    state = request.state
    ctx = CallContext(
        workspace_id=principal.workspace_id,
        api_key_id=principal.key_id,
        request_id=getattr(state, "request_id", "") or "",
        options=RouteOptions.from_dict(warden),
        key_rpm_limit=principal.rpm_limit,
        key_tpm_limit=principal.tpm_limit,
    )
    started = getattr(state, "started", None)  # set by the middleware when the request arrived
    if started is not None:
        ctx.started = started
    return ctx


def served_model(info: CallInfo) -> str:
    return f"{info.provider}/{info.model}"


def cost_text(cost: Decimal | None) -> str | None:
    """A decimal string, or None when the price is unknown (never "0" for unknown)."""
    return None if cost is None else format(cost, "f")


def warden_headers(info: CallInfo, *, with_cost: bool) -> dict[str, str]:
    headers = {
        "x-warden-provider": info.provider,
        "x-warden-model": info.model,
        "x-warden-attempts": str(info.attempts),
        "x-warden-overhead-ms": f"{info.overhead_ms:.2f}",
    }
    if with_cost:
        headers["x-warden-cost-usd"] = cost_text(info.cost_usd) or "unknown"
    headers.update(rate_headers(info.rate))  # OpenAI-style x-ratelimit-* when limits apply
    return headers


class StreamRenderer(Protocol):
    """Turns gateway stream events into one wire format's SSE frames (OpenAI chunks,
    Anthropic events). ``failed`` turns true once an error frame was written."""

    failed: bool

    def start(self) -> bytes: ...

    def event(self, ev: StreamEvent) -> bytes: ...

    def error(self, error: WardenError) -> bytes: ...

    def end(self) -> bytes: ...


async def render_stream(stream: AsyncIterable[StreamEvent], renderer: StreamRenderer,
                        log: logging.Logger = _log) -> AsyncIterator[bytes]:
    """SSE frames for a gateway stream, written as its events arrive: one frame (or
    none) per event, an error frame after the first token instead of a silent end."""
    yield renderer.start()
    try:
        async for ev in stream:
            if renderer.failed:
                # The gateway ends right after an error event; draining (not
                # abandoning) it lets it settle the call as failed, not cancelled.
                continue
            frame = renderer.event(ev)
            if frame:
                yield frame
    except WardenError as exc:
        yield renderer.error(exc)
        return
    except Exception:
        log.exception("stream failed")
        yield renderer.error(WardenError("internal error while streaming"))
        return
    tail = renderer.end()
    if tail:
        yield tail


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

"""What both compatible endpoints need: strict-enough body parsing that names the
bad field, the ``x-warden-*`` headers, the call context, and an SSE response that
always cancels the upstream call when it ends (normally or by a disconnect)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import anyio
import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from warden.accounts import Principal
from warden.errors import InvalidRequest, ValidationFailed
from warden.gateway.gateway import CallContext, CallInfo
from warden.gateway.limits import rate_headers
from warden.gateway.providers.base import split_data_url
from warden.gateway.routing import RouteOptions
from warden.gateway.types import ImagePart

Body = TypeVar("Body", bound=BaseModel)

# Pydantic puts union member labels ("str", "list[Part]", "function-after[...]")
# into error locations; a client wants only the path of its own field.
_TYPE_LABEL = re.compile(r"^(str|int|float|bool|none|dict|list|is-instance|literal)$|[\[\]<>-]")


def field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if isinstance(p, int) or not _TYPE_LABEL.search(str(p))]
    return ".".join(parts) or "body"


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
        first = exc.errors(include_url=False)[0]
        path = field_path(tuple(first["loc"]))
        raise ValidationFailed(f"{path}: {first['msg']}", param=path) from None


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


class GatewayStreamResponse(StreamingResponse):
    """An SSE response that closes the gateway stream however the response ends:
    finished, failed, or cut short by a client disconnect (cancellation)."""

    def __init__(self, content: AsyncIterator[bytes], stream: Any, headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={
            **headers, "cache-control": "no-cache", "x-accel-buffering": "no",
        })
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Always watch for the disconnect (Starlette does only below ASGI spec 2.4,
        # relying on a failing send above it): a stalled upstream sends nothing,
        # and the client's departure must still cancel it at once.
        try:
            async with anyio.create_task_group() as tasks:

                async def stream_then_stop() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client is gone (ASGI 2.4 servers say so on send)
                        pass
                    tasks.cancel_scope.cancel()

                tasks.start_soon(stream_then_stop)
                await self.listen_for_disconnect(receive)
                tasks.cancel_scope.cancel()
        finally:
            # Shielded: on a disconnect we run inside a cancelled scope, and the
            # upstream call must still be cancelled rather than leaked.
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()

"""Shared helpers for the provider adapter tests (plain functions, no fixtures)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import TypeAdapter

from warden.gateway.providers.adapters import get_adapter
from warden.gateway.types import (
    ChatRequest,
    Endpoint,
    Message,
    StreamEvent,
    TextDelta,
    Timeouts,
    ToolCallDelta,
)
from warden.testing.upstream import UpstreamServer

KEY = "sk-test-0123456789abcdef"
AUTH = {"openai": "bearer", "anthropic": "x-api-key", "gemini": "x-goog-api-key"}


def endpoint(
    up: UpstreamServer, *, key: str | None = KEY, model: str = "m1", **timeouts: float
) -> Endpoint:
    return Endpoint(
        provider=f"{up.format}-test",
        wire=up.format,
        base_url=up.base_url,
        model=model,
        api_key=key,
        auth=AUTH[up.format],  # type: ignore[arg-type]
        timeouts=Timeouts(**timeouts),
    )


def chat(*texts: str, **kw: Any) -> ChatRequest:
    return ChatRequest(model="m1", messages=[Message.text("user", t) for t in texts], **kw)


async def collect(up: UpstreamServer, req: ChatRequest, **ep_kw: Any) -> list[StreamEvent]:
    return [e async for e in get_adapter(up.format).stream(endpoint(up, **ep_kw), req)]


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def assemble_calls(events: list[StreamEvent]) -> list[tuple[str | None, str | None, str]]:
    """(id, name, arguments) per tool-call index, assembled from the deltas."""
    calls: dict[int, list[Any]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            entry = calls.setdefault(e.index, [e.id, e.name, ""])
            entry[2] += e.arguments
    return [tuple(calls[i]) for i in sorted(calls)]  # type: ignore[misc]


def _materialize(value: Any) -> Any:
    # pydantic validates Iterable[...] fields lazily: consuming them forces validation.
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_materialize(v) for v in value]
    if isinstance(value, Iterator):
        return [_materialize(v) for v in value]
    return value


def validate_params(typed_dict: Any, body: Any) -> Any:
    """Check a request body against an SDK's request TypedDict, fully."""
    adapter = TypeAdapter(typed_dict)  # must outlive the lazy iterators it returns
    result = _materialize(adapter.validate_python(body))
    del adapter
    return result

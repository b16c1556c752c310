"""A stand-in for the gateway orchestrator (which lands later): it has the real
interface, records what the endpoints hand it and returns canned results."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx

from warden.errors import WardenError
from warden.gateway.metering import CallInfo
from warden.gateway.context import CallContext
from warden.gateway.types import ChatRequest, ChatResponse, StreamEvent


def make_info(cost: Decimal | None = Decimal("0.000123"), **kw: Any) -> CallInfo:
    base: dict[str, Any] = dict(provider="openai", model="gpt-4o-mini", deployment_id="dep-1",
                                credential_id="cred-1", attempts=2, cost_usd=cost, overhead_ms=1.234)
    base.update(kw)
    return CallInfo(**base)


class FakeStream:
    def __init__(self, events: list[StreamEvent], info: CallInfo, *, final_cost: Decimal | None = None,
                 hang: bool = False) -> None:
        self.events = events
        self.info = info
        self.final_cost = final_cost
        self.hang = hang  # block after the scripted events, like a slow upstream
        self.closed = 0

    async def _iter(self) -> AsyncIterator[StreamEvent]:
        for ev in self.events:
            yield ev
        if self.hang:
            await asyncio.Event().wait()
        self.info.cost_usd = self.final_cost  # the cost is known when the stream ends

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._iter()

    async def aclose(self) -> None:
        self.closed += 1


class FakeGateway:
    def __init__(self, *, response: ChatResponse | None = None, info: CallInfo | None = None,
                 stream: FakeStream | None = None, error: WardenError | None = None,
                 models: list[dict] | None = None) -> None:
        self.response = response
        self.info = info or make_info()
        self.stream = stream
        self.error = error
        self.models = models or []
        self.calls: list[tuple[ChatRequest, CallContext]] = []
        self.listed: list[str] = []

    async def complete(self, req: ChatRequest, ctx: CallContext) -> tuple[ChatResponse, CallInfo]:
        self.calls.append((req, ctx))
        if self.error:
            raise self.error
        assert self.response is not None
        return self.response, self.info

    async def open_stream(self, req: ChatRequest, ctx: CallContext) -> FakeStream:
        self.calls.append((req, ctx))
        if self.error:
            raise self.error
        assert self.stream is not None
        return self.stream

    async def list_models(self, workspace_id: str) -> list[dict]:
        self.listed.append(workspace_id)
        return self.models


class Capture:
    """An httpx transport that records what an official SDK sends and answers with a canned body."""

    def __init__(self, reply: dict | None = None, *, http: Any = httpx) -> None:
        self.requests: list[Any] = []
        self.reply = reply or {}
        self.http = http  # httpx, or httpx2 for the anthropic SDK

    def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        return self.http.Response(200, json=self.reply)

    def client(self) -> Any:
        return self.http.Client(transport=self.http.MockTransport(self))

    @property
    def last(self) -> bytes:
        return self.requests[-1].content


def sse_data(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


def sse_events(raw: bytes) -> list[tuple[str, dict]]:
    """(event name, data) pairs of an Anthropic-style SSE body."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out

"""Shared pieces of the agent tests: a loopback provider wired in as a BYOK key,
small plugin tools, and SSE parsing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from warden.agents.tools.base import ToolContext, ToolResult
from warden.services import Services
from warden.testing.upstream import UpstreamServer

MODEL = "gpt-4o-mini"


async def connect_provider(services: Services, up: UpstreamServer, workspace_id: str | None = None,
                           **model_extra: Any) -> str:
    """A BYOK credential pointing at the simulator; returns the workspace id."""
    if workspace_id is None:
        workspace_id = (await services.accounts.workspace_by_name("default")).id
    await services.byok.create(workspace_id, {
        "provider": "openai", "api_key": "sk-test", "base_url": up.base_url, "label": "sim",
        "models": [{"id": MODEL, "input_price": 0.15, "output_price": 0.6, **model_extra}],
    }, actor="test")
    return workspace_id


@dataclass
class EchoTool:
    """Returns its arguments; records every call."""

    name: str = "echo"
    risk_level: int = 1
    description: str = "Echo the arguments back."
    parameters: dict[str, Any] = field(default_factory=lambda: {
        "type": "object", "properties": {"text": {"type": "string"}}})
    calls: list[dict[str, Any]] = field(default_factory=list)
    contexts: list[ToolContext] = field(default_factory=list)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.calls.append(args)
        self.contexts.append(ctx)
        return ToolResult(orjson.dumps({"echo": args}).decode())


@dataclass
class RaisingTool:
    name: str = "explode"
    risk_level: int = 1
    description: str = "Always fails."
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise RuntimeError("boom")


@dataclass
class HangingTool:
    name: str = "hang"
    risk_level: int = 1
    description: str = "Never returns."
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    cancelled: bool = False

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for frame in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "data" in fields:
            event = orjson.loads(fields["data"])
            assert event["type"] == fields["event"] and str(event["seq"]) == fields["id"]
            events.append(event)
    return events


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with client.stream("POST", "/api/chat/stream", json=body) as resp:
        assert resp.status_code == 200, await resp.aread()
        return parse_sse(await resp.aread())


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]

"""Shared pieces of the governance tests: a governed agent with an echo tool at a
chosen risk level, driven through the loopback simulator."""

from __future__ import annotations

from typing import Any

import httpx
from tests.support.agents import EchoTool, connect_provider, parse_sse

from warden.services import Services
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer


async def setup_echo(services: Services, up: UpstreamServer) -> EchoTool:
    await connect_provider(services, up)
    tool = EchoTool()
    services.tools.register(tool)
    return tool


async def make_agent(c: httpx.AsyncClient, name: str = "worker", **fields: Any) -> dict[str, Any]:
    r = await c.post("/api/agents", json={"name": name, "instructions": "Use tools.", "tools": ["echo"], **fields})
    assert r.status_code == 201, r.text
    return r.json()


def script_tool_turn(up: UpstreamServer, text: str = "done", arg: str = "x") -> None:
    """The model asks for echo once, then answers."""
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": arg})]), Behaviour(text=text))


async def follow(c: httpx.AsyncClient, run_id: str, after: int = 0) -> list[dict[str, Any]]:
    """Follow a run over SSE (``GET /api/runs/{id}/events``) until it ends."""
    async with c.stream("GET", f"/api/runs/{run_id}/events?after={after}") as resp:
        assert resp.status_code == 200, await resp.aread()
        return parse_sse(await resp.aread())


async def pending_approval(c: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    r = await c.get("/api/approvals", params={"status": "pending", "run_id": run_id})
    assert r.status_code == 200, r.text
    rows = r.json()
    assert len(rows) == 1, rows
    return rows[0]

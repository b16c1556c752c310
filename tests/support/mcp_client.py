"""The official Python ``mcp`` client against a Warden's ``/mcp`` (the MCP gateway
tests, the two-instance test and the bench use it)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support.app import ADMIN_KEY
from warden.config import Settings, load_settings

FIXTURE = str(Path(__file__).parent / "mcp_fixture_server.py")
HOLD_S = 40.0  # a governed client test's hold: far longer than the test takes to decide


def governed_settings(tmp_path: Path) -> Settings:
    """A live Warden for an external agent's client: stdio MCP upstreams of this Python,
    calls held for ``HOLD_S``."""
    return load_settings(data_dir=tmp_path / "data", admin_key=ADMIN_KEY, access_log=False,
                         mcp_stdio_allow=sys.executable, approval_hold=HOLD_S, request_deadline=30.0)


@contextlib.asynccontextmanager
async def mcp_session(base_url: str, key: str, *, timeout: float = 120.0,
                      query: str = "") -> AsyncIterator[ClientSession]:
    """An initialized MCP client session on ``<base_url>/mcp`` with the key as Bearer."""
    client = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"},
                                timeout=httpx2.Timeout(30.0, read=timeout))
    async with client, streamable_http_client(f"{base_url}/mcp{query}", http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def stdio_fixture(name: str = "fx", *extra: str, **fields: Any) -> dict[str, Any]:
    """The fixture MCP server as an admin-configured stdio upstream."""
    return {"name": name, "transport": "stdio", "command": sys.executable, "args": [FIXTURE, *extra], **fields}


def external_agent(client: httpx.Client, name: str, *, tier: str = "intern",
                   servers: list[dict[str, Any]] | None = None, **fields: Any) -> tuple[dict[str, Any], str]:
    """An external agent at ``tier`` and a member key bound to it: (agent view, raw key)."""
    made = client.post("/api/agents", json={"name": name, "kind": "external",
                                            "mcp_servers": servers or [], **fields})
    assert made.status_code == 201, made.text
    agent = made.json()
    if tier != "student":
        moved = client.put(f"/api/agents/{agent['id']}/tier", json={"tier": tier, "reason": "test set-up"})
        assert moved.status_code == 200, moved.text
    key = client.post("/api/keys", json={"name": f"{name}-key", "agent": agent["id"]})
    assert key.status_code == 201, key.text
    return agent, key.json()["key"]


def pending_approval(client: httpx.Client, agent_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """Wait for the agent's pending approval and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = client.get("/api/approvals", params={"status": "pending", "agent_id": agent_id})
        assert listed.status_code == 200, listed.text
        if listed.json():
            return listed.json()[0]
        time.sleep(0.05)
    raise AssertionError(f"no pending approval for {agent_id} within {timeout} s")


def text_of(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)

"""A call held through ``/mcp`` on one instance is released by an approval decided on
the other (PostgreSQL + Redis shared), and runs exactly once."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.scaleout.conftest import pytestmark  # noqa: F401
from tests.support.mcp_client import external_agent, mcp_session, pending_approval, stdio_fixture, text_of


@pytest.fixture
def cluster_env(cluster_env: dict[str, str]) -> dict[str, str]:
    return {**cluster_env, "WARDEN_MCP_STDIO_ALLOW": sys.executable, "WARDEN_APPROVAL_HOLD": "60"}


async def test_call_held_on_a_is_released_by_an_approval_on_b(cluster) -> None:
    a, b = cluster
    with a.client() as admin_a:
        agent, key = external_agent(admin_a, "outside", servers=[stdio_fixture("fx")])
    async with mcp_session(a.url, key) as mcp:
        call = asyncio.create_task(mcp.call_tool("fx__add", {"a": 40, "b": 2}))
        with b.client() as admin_b:
            approval = await asyncio.to_thread(pending_approval, admin_b, agent["id"])
            assert not call.done()
            decided = await asyncio.to_thread(admin_b.post, f"/api/approvals/{approval['id']}",
                                              json={"decision": "approve"})
            assert decided.status_code == 200, decided.text
        result = await asyncio.wait_for(call, 30)
        assert not result.is_error, text_of(result)
        assert "42" in text_of(result)
        # One approval, decided once, for the one call.
        with b.client() as admin_b:
            listed = admin_b.get("/api/approvals", params={"agent_id": agent["id"]}).json()
    assert [x["status"] for x in listed] == ["approved"]

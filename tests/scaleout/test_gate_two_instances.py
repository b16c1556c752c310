"""A call held by ``POST /api/governance/decide`` on one instance is released by an
approval decided on the other (PostgreSQL + Redis shared): through the state-store
message, not the database poll (set far beyond the test's patience), and it is
allowed exactly once."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.scaleout.conftest import pytestmark  # noqa: F401


@pytest.fixture
def cluster_env(cluster_env: dict[str, str]) -> dict[str, str]:
    return {**cluster_env, "WARDEN_APPROVAL_HOLD": "60", "WARDEN_APPROVAL_HOLD_POLL": "600"}


def _pending(admin: httpx.Client, agent_id: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = admin.get("/api/approvals", params={"agent_id": agent_id, "status": "pending"}).json()
        if rows:
            return rows[0]
        time.sleep(0.1)
    raise AssertionError("no pending approval")


async def test_decide_held_on_a_is_released_by_an_approval_on_b(cluster) -> None:
    a, b = cluster
    with a.client() as admin_a:
        agent = admin_a.post("/api/agents", json={"name": "outside", "kind": "external"}).json()
        key = admin_a.post("/api/keys", json={"name": "outside-key", "agent": agent["id"]}).json()["key"]
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=a.url, headers={"authorization": f"Bearer {key}"}, timeout=90) as c:
        call = asyncio.create_task(c.post("/api/governance/decide", json={
            "tool": "Edit", "arguments": {"file": "x.py"}, "level": 2}))
        with b.client() as admin_b:
            approval = await asyncio.to_thread(_pending, admin_b, agent["id"])
            assert not call.done()
            r = await asyncio.to_thread(admin_b.post, f"/api/approvals/{approval['id']}",
                                        json={"decision": "approve", "note": "from b"})
            assert r.status_code == 200, r.text
        v = (await asyncio.wait_for(call, 30)).json()
        assert time.monotonic() - started < 30  # released by the message, not the 600 s poll
        assert (v["decision"], v["rule"], v["note"]) == ("allow", f"approval:{approval['id']}", "from b")
        again = (await c.post("/api/governance/decide", json={
            "tool": "Edit", "arguments": {"file": "x.py"}, "level": 2, "hold_s": 0})).json()
        assert again["decision"] == "pending" and again["approval_id"] != approval["id"]  # used once


async def test_a_tier_changed_on_a_decides_the_next_call_on_b(cluster) -> None:
    """B caches the agent (agents/agent_cache.py; TTL 60 s here, as keys): A's change reaches
    it through the broadcast, not the TTL."""
    a, b = cluster
    with a.client() as admin_a:
        agent = admin_a.post("/api/agents", json={"name": "moving", "kind": "external"}).json()
        key = admin_a.post("/api/keys", json={"name": "moving-key", "agent": agent["id"]}).json()["key"]
    async with httpx.AsyncClient(base_url=b.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
        first = (await c.post("/api/governance/decide", json={"tool": "Bash", "arguments": {}, "level": 3})).json()
        assert (first["decision"], first["rule"]) == ("deny", "matrix:student:3")
        with a.client() as admin_a:
            r = admin_a.put(f"/api/agents/{agent['id']}/tier", json={"tier": "supervised", "reason": "trusted now"})
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        for i in range(1000):
            v = (await c.post("/api/governance/decide", json={"tool": "Bash", "arguments": {"i": i},
                                                              "level": 3})).json()
            if v["decision"] == "allow":
                break
            assert time.monotonic() < deadline, v
            await asyncio.sleep(0.1)
        assert v["rule"] == "matrix:supervised:3"

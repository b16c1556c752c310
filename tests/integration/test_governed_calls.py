"""The decision point for external agents' own tools (issue 17 item 3), through the
real app: ``POST /api/governance/decide`` allows, denies or holds a call by the
agent's tier, the call's level (an admin override wins) and the workspace policy;
a held call is released by a human's decision; past the hold the same call, sent
again after approval, runs exactly once; every call is a row and an audit event
with the arguments' hash and never their secrets; outcomes feed maturity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from tests.support.app import client_for
from tests.support.envelope import assert_envelope
from warden.governance.gate import arguments_hash
from warden.services import Services
from warden.store.gate_models import GovernedCallRow
from warden.store.governance_models import Approval
from warden.store.models import AuditEvent

SECRET = "sk-live-gate-secret-0123456789abcdef"


@pytest.fixture
def services(any_services: Services) -> Services:
    """Every test here on SQLite and on PostgreSQL."""
    return any_services


@pytest.fixture
async def admin(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(services) as c:
        yield c


@pytest.fixture
async def bound(admin: httpx.AsyncClient, services: Services) -> AsyncIterator[tuple[dict[str, Any], httpx.AsyncClient]]:
    r = await admin.post("/api/agents", json={"name": "cc", "kind": "external"})
    assert r.status_code == 201, r.text
    agent = r.json()
    k = await admin.post("/api/keys", json={"name": "cc-key", "agent": agent["id"]})
    assert k.status_code == 201, k.text
    async with client_for(services, k.json()["key"]) as c:
        yield agent, c


async def decide(c: httpx.AsyncClient, tool: str, arguments: Any, **extra: Any) -> dict[str, Any]:
    r = await c.post("/api/governance/decide", json={"tool": tool, "arguments": arguments, **extra})
    assert r.status_code == 200, r.text
    return r.json()


async def pending_approval(admin: httpx.AsyncClient, tool: str) -> dict[str, Any]:
    for _ in range(200):
        rows = [a for a in (await admin.get("/api/approvals", params={"status": "pending"})).json() if a["tool"] == tool]
        if rows:
            return rows[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pending approval for {tool}")


async def test_allow_deny_and_the_ledger(bound: tuple[dict[str, Any], httpx.AsyncClient], admin: httpx.AsyncClient,
                                         services: Services) -> None:
    agent, c = bound
    args = {"path": "/etc/hosts", "token": SECRET}
    v = await decide(c, "Read", args, level=1, source="hook:claude-code")
    assert (v["decision"], v["rule"], v["level"], v["agent_id"]) == ("allow", "matrix:student:1", 1, agent["id"])
    denied = await decide(c, "Bash", {"command": "rm -rf /"}, level=3)
    assert denied["decision"] == "deny" and denied["rule"] == "matrix:student:3" and "denied" in denied["reason"]
    async with services.db.session() as s:
        rows = {r.id: r for r in (await s.execute(select(GovernedCallRow))).scalars()}
        events = [e for e in (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "governance.decision"))).scalars()]
    assert rows[v["action_id"]].status == "allowed" and rows[denied["action_id"]].status == "denied"
    assert rows[v["action_id"]].arguments_hash == arguments_hash(args) and rows[v["action_id"]].source == "hook:claude-code"
    mine = {e.target: e for e in events}
    assert mine[v["action_id"]].data["arguments_hash"] == arguments_hash(args)
    assert mine[v["action_id"]].actor == f"agent:{agent['id']}"
    assert SECRET not in orjson.dumps([e.data for e in events]).decode()
    # The outcome: once, and it counts as a successful run of the agent.
    r = await c.post(f"/api/governance/actions/{v['action_id']}/outcome", json={"ok": True, "result": {"n": 3}})
    assert r.status_code == 200 and r.json()["status"] == "completed" and r.json()["result_hash"]
    assert_envelope(await c.post(f"/api/governance/actions/{v['action_id']}/outcome", json={"ok": False}),
                    409, "action_not_open")
    assert_envelope(await c.post(f"/api/governance/actions/{denied['action_id']}/outcome", json={"ok": True}),
                    409, "action_not_open")
    counts = (await admin.get(f"/api/agents/{agent['id']}/maturity")).json()["counts"]
    assert counts["runs"] == 1 and counts["successes"] == 1


async def test_admin_override_and_policy_tightening(bound: tuple[dict[str, Any], httpx.AsyncClient],
                                                   admin: httpx.AsyncClient) -> None:
    agent, c = bound
    r = await admin.patch(f"/api/agents/{agent['id']}", json={"tool_levels": {"Grep": 1}})
    assert r.status_code == 200, r.text
    v = await decide(c, "Grep", {"q": "x"}, level=4)  # the claim is ignored: the admin said 1
    assert v["decision"] == "allow" and v["level"] == 1
    r = await admin.put("/api/governance/policy", json={"tools": {"Grep": "deny"}})
    assert r.status_code == 200, r.text
    v = await decide(c, "Grep", {"q": "x"})
    assert v["decision"] == "deny" and v["rule"] == "policy:tool:Grep"
    assert_envelope(await c.post("/api/governance/decide", json={"tool": "Grep", "level": 9}), 422, "validation_error")


async def test_who_may_ask(services: Services, admin: httpx.AsyncClient,
                           bound: tuple[dict[str, Any], httpx.AsyncClient]) -> None:
    agent, _ = bound
    member = (await admin.post("/api/keys", json={"name": "plain", "role": "member"})).json()
    async with client_for(services, member["key"]) as m:
        assert_envelope(await m.post("/api/governance/decide", json={"tool": "Read", "level": 1}),
                        403, "agent_key_required")
    assert_envelope(await admin.post("/api/governance/decide", json={"tool": "Read", "level": 1}), 422, "validation_error")
    v = await decide(admin, "Read", {}, level=1, agent="cc")
    assert v["decision"] == "allow" and v["agent_id"] == agent["id"]
    other = (await admin.post("/api/agents", json={"name": "other", "kind": "external"})).json()
    _, c = bound
    assert_envelope(await c.post("/api/governance/decide", json={"tool": "Read", "agent": other["id"]}),
                    403, "agent_mismatch")


async def test_held_then_approved_runs(bound: tuple[dict[str, Any], httpx.AsyncClient],
                                      admin: httpx.AsyncClient) -> None:
    agent, c = bound
    held = asyncio.create_task(decide(c, "Edit", {"file": "a.py", "api_key": SECRET}, level=2, hold_s=20))
    a = await pending_approval(admin, "Edit")
    assert a["source"] == "api" and a["run_id"] is None and a["agent_id"] == agent["id"]
    assert a["arguments"] == {"file": "a.py", "api_key": "***"} and a["risk_level"] == 2
    r = await admin.post(f"/api/approvals/{a['id']}", json={"decision": "approve", "note": "fine"})
    assert r.status_code == 200, r.text
    v = await asyncio.wait_for(held, 10)
    assert (v["decision"], v["rule"], v["approval_id"], v["note"]) == ("allow", f"approval:{a['id']}", a["id"], "fine")
    view = (await c.get(f"/api/governance/actions/{v['action_id']}")).json()
    assert view["status"] == "allowed" and view["approval"]["consumed"] is True
    # Used once: the same call again asks anew.
    again = await decide(c, "Edit", {"file": "a.py", "api_key": SECRET}, level=2, hold_s=0)
    assert again["decision"] == "pending" and again["approval_id"] != a["id"]
    counts = (await admin.get(f"/api/agents/{agent['id']}/maturity")).json()["counts"]
    assert counts["approvals_asked"] == 2


async def test_held_then_rejected_carries_the_note(bound: tuple[dict[str, Any], httpx.AsyncClient],
                                                  admin: httpx.AsyncClient) -> None:
    agent, c = bound
    held = asyncio.create_task(decide(c, "Write", {"file": "b.py"}, level=2, hold_s=20))
    a = await pending_approval(admin, "Write")
    await admin.post(f"/api/approvals/{a['id']}", json={"decision": "reject", "note": "not on main"})
    v = await asyncio.wait_for(held, 10)
    assert v["decision"] == "deny" and "not on main" in v["reason"] and v["rule"] == f"approval:{a['id']}:rejected"
    view = (await c.get(f"/api/governance/actions/{v['action_id']}")).json()
    assert view["status"] == "rejected"
    counts = (await admin.get(f"/api/agents/{agent['id']}/maturity")).json()["counts"]
    assert counts["approvals_rejected"] == 1


async def test_timeout_then_retry_runs_exactly_once(bound: tuple[dict[str, Any], httpx.AsyncClient],
                                                   admin: httpx.AsyncClient, services: Services) -> None:
    _, c = bound
    call = {"command": "git push"}
    first = await decide(c, "Bash", call, level=2, hold_s=0)
    assert first["decision"] == "pending" and "NOT run" in first["reason"]
    joined = await decide(c, "Bash", call, level=2, hold_s=0)
    assert joined["approval_id"] == first["approval_id"]  # the same call joins, no second approval
    poll = (await c.get(f"/api/governance/actions/{first['action_id']}")).json()
    assert poll["approval"]["status"] == "pending"
    r = await admin.post(f"/api/approvals/{first['approval_id']}", json={"decision": "approve"})
    assert r.status_code == 200
    retries = await asyncio.gather(*(decide(c, "Bash", call, level=2, hold_s=0) for _ in range(2)))
    assert sorted(v["decision"] for v in retries) == ["allow", "pending"]
    (won,) = [v for v in retries if v["decision"] == "allow"]
    assert won["rule"] == f"approval:{first['approval_id']}"
    async with services.db.session() as s:
        a = await s.get(Approval, first["approval_id"])
        assert a is not None and a.consumed_at is not None and a.run_id is None
        approvals = list((await s.execute(select(Approval).where(Approval.call_hash == a.call_hash))).scalars())
    assert len(approvals) == 2  # the used one, and the one the losing retry asked for


async def test_a_call_the_client_left_is_recorded_and_says_nothing_about_the_agent(
        bound: tuple[dict[str, Any], httpx.AsyncClient], admin: httpx.AsyncClient, services: Services) -> None:
    from warden.tenancy.accounts import Principal

    agent, c = bound
    v = await decide(c, "Read", {"path": "a"}, level=1)
    who = Principal(workspace_id=agent["workspace_id"], workspace_name="default", key_id="k", role="admin")
    await services.gate.finished(who, v["action_id"], ok=False, result=None, interrupted=True)
    shown = (await c.get(f"/api/governance/actions/{v['action_id']}")).json()
    assert (shown["status"], shown["is_error"]) == ("interrupted", True)
    counts = (await admin.get(f"/api/agents/{agent['id']}/maturity")).json()["counts"]
    assert (counts["runs"], counts["failures"]) == (0, 0)  # as a cancelled hosted run

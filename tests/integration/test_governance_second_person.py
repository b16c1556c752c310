"""``approvals.require_second_person`` in the workspace policy: the key that started
a run may not approve its actions (403 in the envelope, audited, the action stays
pending); another admin may, and anyone may reject. Off by default."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.agents import stream_chat, types_of
from tests.support.app import client_for
from tests.support.envelope import assert_envelope
from tests.support.governance import follow, make_agent, pending_approval, script_tool_turn, setup_echo
from warden.services import Services
from warden.testing.upstream import UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def _key(c: httpx.AsyncClient, name: str, role: str) -> str:
    r = await c.post("/api/keys", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    return r.json()["key"]


async def _actor(c: httpx.AsyncClient, name: str) -> str:
    """How the audit log names the key called ``name``."""
    return "key:" + next(k["id"] for k in (await c.get("/api/keys")).json() if k["name"] == name)


async def _paused(starter: httpx.AsyncClient, up: UpstreamServer, agent_id: str) -> tuple[str, str]:
    script_tool_turn(up, text="sent", arg="mail")
    events = await stream_chat(starter, {"agent_id": agent_id, "message": "send it"})
    assert types_of(events)[-1] == "run.paused"
    run_id = events[0]["run_id"]
    return run_id, (await pending_approval(starter, run_id))["id"]


async def _require_second_person(c: httpx.AsyncClient, on: bool) -> None:
    r = await c.put("/api/governance/policy", json={"approvals": {"require_second_person": on}})
    assert r.status_code == 200 and r.json()["approvals"] == {"require_second_person": on}, r.text


async def test_the_starting_key_may_not_approve_its_own_run_when_the_workspace_says_so(
        services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        other_admin = client_for(services, await _key(c, "second", "admin"))
        agent = await make_agent(c, tool_levels={"echo": 2})  # student x draft = approve
        await _require_second_person(c, True)
        run_id, approval_id = await _paused(c, up, agent["id"])
        me = await _actor(c, "bootstrap-admin")
        own = await c.post(f"/api/approvals/{approval_id}", json={"decision": "approve"})
        still = (await c.get(f"/api/approvals/{approval_id}")).json()
        refused = (await c.get("/api/audit", params={"action": "approval.self_approval_refused"})).json()["events"]
        async with other_admin:
            second = await other_admin.post(f"/api/approvals/{approval_id}", json={"decision": "approve"})
            ended = await asyncio.wait_for(follow(c, run_id, after=4), 30)
        second_actor = await _actor(c, "second")
    err = assert_envelope(own, 403, "second_person_required")
    assert err["type"] == "permission_error" and "second person" in err["message"]
    assert still["status"] == "pending" and still["decided_by"] is None
    assert [(e["action"], e["target"], e["actor"]) for e in refused] == [
        ("approval.self_approval_refused", approval_id, me)]
    assert refused[0]["data"]["run_id"] == run_id and refused[0]["data"]["tool"] == "echo"
    assert second.status_code == 200 and second.json()["status"] == "approved"
    assert second.json()["decided_by"] == second_actor
    assert types_of(ended)[-1] == "run.completed" and echo.calls == [{"text": "mail"}]


async def test_the_starting_key_may_still_reject_and_the_setting_is_off_by_default(
        services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        default = (await c.get("/api/governance/policy")).json()
        agent = await make_agent(c, tool_levels={"echo": 2})
        _, first = await _paused(c, up, agent["id"])
        approved = await c.post(f"/api/approvals/{first}", json={"decision": "approve"})
        await _require_second_person(c, True)
        _, second = await _paused(c, up, agent["id"])
        rejected = await c.post(f"/api/approvals/{second}", json={"decision": "reject", "note": "not mine to send"})
        bad = await c.put("/api/governance/policy", json={"approvals": {"require_second_person": "yes"}})
        unknown = await c.put("/api/governance/policy", json={"approvals": {"quorum": 3}})
        await _require_second_person(c, False)  # and off again
        _, third = await _paused(c, up, agent["id"])
        again = await c.post(f"/api/approvals/{third}", json={"decision": "approve"})
    assert default["approvals"] == {"require_second_person": False}
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert assert_envelope(bad, 422, "validation_error")["param"] == "approvals.require_second_person"
    assert assert_envelope(unknown, 422, "validation_error")["param"] == "approvals.quorum"
    assert again.status_code == 200 and again.json()["status"] == "approved"
    assert echo.calls[0] == {"text": "mail"}  # the first approval ran the action


_names = itertools.count()


# --- the property: with the setting on, approve succeeds iff the approver did not start the run ----


@pytest.fixture
async def keys(services: Services, up: UpstreamServer) -> dict[str, str]:
    """Built once for all the examples: the simulator as a provider, two admins and a member."""
    await setup_echo(services, up)
    async with client_for(services) as root:
        return {"admin_a": await _key(root, "a", "admin"), "admin_b": await _key(root, "b", "admin"),
                "member": await _key(root, "m", "member")}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(on=st.booleans(), starter=st.sampled_from(["admin_a", "admin_b", "member"]),
       approver=st.sampled_from(["admin_a", "admin_b"]))
async def test_who_may_approve(services: Services, up: UpstreamServer, keys: dict[str, str], on: bool,
                               starter: str, approver: str) -> None:
    async with client_for(services) as root:
        agent = await make_agent(root, name=f"w{next(_names)}", tool_levels={"echo": 2})
        await _require_second_person(root, on)
        async with client_for(services, keys[starter]) as s, client_for(services, keys[approver]) as a:
            run_id, approval_id = await _paused(s, up, agent["id"])
            r = await a.post(f"/api/approvals/{approval_id}", json={"decision": "approve"})
            after = (await root.get(f"/api/approvals/{approval_id}")).json()
        if after["status"] == "pending":  # let the run end, so the next example starts clean
            await root.post(f"/api/approvals/{approval_id}", json={"decision": "reject"})
        await asyncio.wait_for(follow(root, run_id, after=4), 30)
    if on and starter == approver:
        assert_envelope(r, 403, "second_person_required")
        assert after["status"] == "pending"
    else:
        assert r.status_code == 200 and after["status"] == "approved", r.text

"""Maturity on evidence through real runs: promotion proposed and confirmed,
automatic promotion, volume alone never promotes, demotion after a streak,
a sticky manual tier, and declined proposals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.support.governance import make_agent, pending_approval, script_tool_turn, setup_echo

from tests.support.app import ADMIN_KEY, client_for
from warden.config import load_settings
from warden.services import Services
from warden.testing.upstream import Behaviour, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
async def svc(data_dir: Path, up: UpstreamServer) -> AsyncIterator[Services]:
    """Small thresholds so a test needs a handful of runs: 3 successful runs per tier."""
    services = await Services.start(load_settings(
        data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False, promotion_min_runs="3,3,3",
        promotion_max_intervention="0.5,0.2,0.05", demotion_streak=3))
    await setup_echo(services, up)
    yield services
    await services.close()


async def plain_runs(c: httpx.AsyncClient, up: UpstreamServer, agent: dict, n: int) -> list[dict]:
    outs = []
    for i in range(n):
        up.enqueue(Behaviour(text=f"answer {i}"))
        r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": f"question {i}"})
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        outs.append(r.json())
    return outs


async def maturity(c: httpx.AsyncClient, agent: dict) -> dict:
    r = await c.get(f"/api/agents/{agent['id']}/maturity")
    assert r.status_code == 200, r.text
    return r.json()


async def test_volume_alone_never_promotes(svc: Services, up: UpstreamServer) -> None:
    async with client_for(svc) as c:
        agent = await make_agent(c, tools=[])
        outs = await plain_runs(c, up, agent, 8)  # far more than the 3 runs required
        m = await maturity(c, agent)
        assert (m["tier"], m["ready"], m["proposal"]) == ("student", False, None)
        assert m["counts"]["runs"] == 8 and m["counts"]["successes"] == 8
        assert m["needs"] == ["1 more feedback rating(s)"]
        # Negative feedback on balance does not promote either.
        for out in outs[:2]:
            r = await c.post("/api/feedback", json={"message_id": out["message"]["id"], "rating": "down"})
            assert r.status_code == 201, r.text
        await c.post("/api/feedback", json={"run_id": outs[2]["run_id"], "rating": 4})
        await plain_runs(c, up, agent, 2)
        m = await maturity(c, agent)
        assert m["tier"] == "student" and m["proposal"] is None
        assert m["needs"] == ["feedback is negative on balance"]
        assert m["counts"]["feedback_sum"] == -1.5 and m["counts"]["feedback_count"] == 3


async def test_approvals_asked_and_rejected_are_counted_per_tier(svc: Services, up: UpstreamServer) -> None:
    async with client_for(svc) as c:
        agent = await make_agent(c, tool_levels={"echo": 2})  # student x draft: every call asks a human
        for i in range(4):
            script_tool_turn(up, text=f"ok {i}")
            r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": "draft"})
            approval = await pending_approval(c, r.json()["run_id"])
            decision = "reject" if i % 2 == 0 else "approve"  # rejected on every other run
            assert (await c.post(f"/api/approvals/{approval['id']}", json={"decision": decision})).status_code == 200
            await _wait_done(c, r.json()["run_id"])
        await plain_runs(c, up, agent, 2)
        out = (await plain_runs(c, up, agent, 1))[0]
        await c.post("/api/feedback", json={"run_id": out["run_id"], "rating": "up"})
        m = await maturity(c, agent)
    # 7 runs, 2 rejections: 29% is under student's 50%, so this evidence supports a proposal
    # (the next test tightens the bar and shows the same kind of history does not).
    assert m["counts"]["approvals_rejected"] == 2 and m["counts"]["runs"] == 7
    assert m["counts"]["approvals_asked"] == 4 and m["counts"]["intervention_rate"] == round(2 / 7, 4)
    assert m["proposal"] is not None and m["proposal"]["to"] == "intern"


async def test_rejection_rate_over_the_threshold_blocks_promotion(data_dir: Path, up: UpstreamServer) -> None:
    services = await Services.start(load_settings(
        data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False, promotion_min_runs="3,3,3",
        promotion_max_intervention="0.1,0.1,0.05", demotion_streak=10))
    try:
        await setup_echo(services, up)
        async with client_for(services) as c:
            agent = await make_agent(c, tool_levels={"echo": 2})
            for i in range(6):
                script_tool_turn(up, text=f"ok {i}")
                r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": "draft"})
                approval = await pending_approval(c, r.json()["run_id"])
                await c.post(f"/api/approvals/{approval['id']}", json={"decision": "reject" if i < 2 else "approve"})
                await _wait_done(c, r.json()["run_id"])
            out = (await plain_runs(c, up, agent, 1))[0]
            await c.post("/api/feedback", json={"run_id": out["run_id"], "rating": 5, "correction": "say it shorter"})
            m = await maturity(c, agent)
    finally:
        await services.close()
    # (2 rejections + 1 correction) / 7 runs = 43% >= 10%: many runs, good feedback, still no promotion.
    assert m["tier"] == "student" and m["proposal"] is None and m["ready"] is False
    assert m["counts"]["corrections"] == 1 and m["counts"]["intervention_rate"] == round(3 / 7, 4)
    assert any(n.startswith("intervention rate 43% must fall below 10%") for n in m["needs"])


async def test_promotion_is_proposed_then_confirmed_by_an_admin(svc: Services, up: UpstreamServer) -> None:
    async with client_for(svc) as c:
        agent = await make_agent(c, tools=[])
        outs = await plain_runs(c, up, agent, 3)
        assert (await maturity(c, agent))["proposal"] is None  # no human signal yet
        await c.post("/api/feedback", json={"message_id": outs[0]["message"]["id"], "rating": "up"})
        m = await maturity(c, agent)
        assert m["tier"] == "student" and m["ready"] is True and m["needs"] == []
        assert m["proposal"]["to"] == "intern" and m["proposal"]["status"] == "pending"
        member = await svc.accounts.create_key((await svc.accounts.workspace_by_name("default")).id, "m",
                                               role="member")
        async with client_for(svc, member.key) as mc:
            denied = await mc.post(f"/api/agents/{agent['id']}/promotion", json={"accept": True})
        r = await c.post(f"/api/agents/{agent['id']}/promotion", json={"accept": True})
        again = await c.post(f"/api/agents/{agent['id']}/promotion", json={"accept": True})
        shown = (await c.get(f"/api/agents/{agent['id']}")).json()
        audit = (await c.get("/api/audit", params={"action": "agent."})).json()["events"]
    assert denied.status_code == 403
    assert r.status_code == 200 and r.json()["tier"] == "intern" and r.json()["counts"]["runs"] == 0
    assert r.json()["other_tiers"]["student"]["runs"] == 3
    assert again.status_code == 409 and again.json()["error"]["code"] == "no_pending_promotion"
    assert (shown["tier"], shown["tier_sticky"]) == ("intern", False)
    actions = [(e["action"], e["data"].get("to"), e["data"].get("manual")) for e in audit
               if e["action"] != "agent.create"]
    assert actions == [("agent.promotion_proposed", "intern", None), ("agent.tier_change", "intern", False)]


async def test_declined_proposal_is_not_reproposed_at_once(svc: Services, up: UpstreamServer) -> None:
    async with client_for(svc) as c:
        agent = await make_agent(c, tools=[])
        outs = await plain_runs(c, up, agent, 3)
        await c.post("/api/feedback", json={"run_id": outs[0]["run_id"], "rating": "up"})
        declined = await c.post(f"/api/agents/{agent['id']}/promotion", json={"accept": False})
        await plain_runs(c, up, agent, 2)
        still = await maturity(c, agent)
        await plain_runs(c, up, agent, 1)  # as many more runs as the tier asks for
        again = await maturity(c, agent)
    assert declined.status_code == 200 and declined.json()["proposal"]["status"] == "declined"
    assert still["tier"] == "student" and still["proposal"]["status"] == "declined"
    assert again["proposal"]["status"] == "pending"


async def test_workspace_auto_promotion(svc: Services, up: UpstreamServer) -> None:
    async with client_for(svc) as c:
        assert (await c.put("/api/governance/policy", json={"auto_promote": True})).status_code == 200
        agent = await make_agent(c, tools=[])
        outs = await plain_runs(c, up, agent, 3)
        await c.post("/api/feedback", json={"run_id": outs[1]["run_id"], "rating": "up"})
        m = await maturity(c, agent)
        audit = (await c.get("/api/audit", params={"action": "agent.tier_change"})).json()["events"]
    assert m["tier"] == "intern" and m["proposal"] is None
    assert audit[-1]["actor"] == "system" and audit[-1]["data"]["manual"] is False
    assert audit[-1]["data"]["evidence"]["successes"] == 3


async def test_a_streak_of_failures_demotes_unless_the_tier_is_sticky(svc: Services, up: UpstreamServer) -> None:
    async with client_for(svc) as c:
        agent = await make_agent(c, tools=[])
        r = await c.put(f"/api/agents/{agent['id']}/tier",
                        json={"tier": "supervised", "reason": "trusted", "sticky": False})
        assert r.status_code == 200 and r.json()["tier"] == "supervised" and r.json()["sticky"] is False
        for _ in range(2):
            up.enqueue(Behaviour(status=400, error_message="bad"))
            assert (await c.post("/api/chat", json={"agent_id": agent["id"], "message": "x"})).status_code == 400
        await plain_runs(c, up, agent, 1)  # a clean run resets the streak
        for _ in range(2):
            up.enqueue(Behaviour(status=400, error_message="bad"))
            await c.post("/api/chat", json={"agent_id": agent["id"], "message": "x"})
        m = await maturity(c, agent)
        assert m["tier"] == "supervised" and m["demotion_streak"] == {"current": 2, "limit": 3}
        up.enqueue(Behaviour(status=400, error_message="bad"))
        await c.post("/api/chat", json={"agent_id": agent["id"], "message": "x"})
        m = await maturity(c, agent)
        assert m["tier"] == "intern" and m["demotion_streak"]["current"] == 0
        assert m["other_tiers"]["supervised"]["failures"] == 5

        # A manual change is sticky: the same streak no longer moves the agent.
        r = await c.put(f"/api/agents/{agent['id']}/tier", json={"tier": "supervised", "reason": "my call"})
        assert r.json()["sticky"] is True
        for _ in range(4):
            up.enqueue(Behaviour(status=400, error_message="bad"))
            await c.post("/api/chat", json={"agent_id": agent["id"], "message": "x"})
        m = await maturity(c, agent)
        bad = await c.put(f"/api/agents/{agent['id']}/tier", json={"tier": "boss", "reason": "x"})
        no_reason = await c.put(f"/api/agents/{agent['id']}/tier", json={"tier": "intern", "reason": ""})
        audit = (await c.get("/api/audit", params={"action": "agent.tier_change"})).json()["events"]
    assert m["tier"] == "supervised" and m["sticky"] is True and m["demotion_streak"]["current"] == 4
    assert bad.status_code == 422 and no_reason.status_code == 422
    assert [(e["data"]["from"], e["data"]["to"], e["data"]["manual"], e["data"]["reason"]) for e in audit] == [
        ("student", "supervised", True, "trusted"), ("supervised", "intern", False, "3 failed runs in a row"),
        ("intern", "supervised", True, "my call")]


async def test_rejections_in_a_row_demote(svc: Services, up: UpstreamServer) -> None:
    async with client_for(svc) as c:
        agent = await make_agent(c, tool_levels={"echo": 3})  # intern x mutate: approve
        await c.put(f"/api/agents/{agent['id']}/tier", json={"tier": "intern", "reason": "try", "sticky": False})
        for i in range(3):
            script_tool_turn(up, text=f"fine {i}")
            r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": "change it"})
            approval = await pending_approval(c, r.json()["run_id"])
            await c.post(f"/api/approvals/{approval['id']}", json={"decision": "reject"})
            await _wait_done(c, r.json()["run_id"])
        m = await maturity(c, agent)
    assert m["tier"] == "student"
    assert m["other_tiers"]["intern"]["approvals_rejected"] == 3


async def _wait_done(c: httpx.AsyncClient, run_id: str) -> None:
    from tests.support.governance import follow

    events = await follow(c, run_id)
    assert events[-1]["type"] == "run.completed", events[-1]


async def _reject_one(c: httpx.AsyncClient, up: UpstreamServer, agent: dict) -> str:
    """A run whose one action a human rejects; returns the run id once it ended."""
    script_tool_turn(up, text="went on without it")
    r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": "do the risky thing"})
    assert r.json()["status"] == "paused", r.text
    approval = await pending_approval(c, r.json()["run_id"])
    assert (await c.post(f"/api/approvals/{approval['id']}", json={"decision": "reject"})).status_code == 200
    await _wait_done(c, r.json()["run_id"])
    return r.json()["run_id"]


async def test_sticky_false_is_kept_and_the_streak_comes_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, data_dir: Path, up: UpstreamServer) -> None:
    """WARDEN_DEMOTION_STREAK=2; a failed run and a rejected action count toward one streak."""
    monkeypatch.setenv("WARDEN_DEMOTION_STREAK", "2")
    services = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False))
    try:
        await setup_echo(services, up)
        async with client_for(services) as c:
            agent = await make_agent(c, tool_levels={"echo": 4})  # supervised x critical: approve
            put = await c.put(f"/api/agents/{agent['id']}/tier",
                              json={"tier": "supervised", "reason": "handed back", "sticky": False})
            shown = (await c.get(f"/api/agents/{agent['id']}")).json()
            up.enqueue(Behaviour(status=400, error_message="bad"))
            await c.post("/api/chat", json={"agent_id": agent["id"], "message": "x"})
            one = await maturity(c, agent)
            await _reject_one(c, up, agent)
            two = await maturity(c, agent)
            audit = (await c.get("/api/audit", params={"action": "agent.tier_change"})).json()["events"]
    finally:
        await services.close()
    assert put.status_code == 200 and put.json()["sticky"] is False
    assert (shown["tier"], shown["tier_sticky"]) == ("supervised", False)
    assert one["tier"] == "supervised" and one["demotion_streak"] == {"current": 1, "limit": 2}
    assert two["tier"] == "intern" and two["sticky"] is False and two["demotion_streak"]["current"] == 0
    assert two["other_tiers"]["supervised"]["failures"] == 1
    assert two["other_tiers"]["supervised"]["approvals_rejected"] == 1
    demotion = audit[-1]
    assert demotion["actor"] == "system"
    assert demotion["data"] == {"from": "supervised", "to": "intern", "manual": False, "sticky": False,
                                "reason": "2 rejected actions in a row", "evidence": {"streak": 2}}
    assert [e["data"]["manual"] for e in audit] == [True, False]


async def test_default_streak_is_three_and_a_sticky_tier_ignores_rejections(services: Services,
                                                                             up: UpstreamServer) -> None:
    await setup_echo(services, up)
    async with client_for(services) as c:
        agent = await make_agent(c, tool_levels={"echo": 3})  # intern x mutate: approve
        await c.put(f"/api/agents/{agent['id']}/tier", json={"tier": "intern", "reason": "evaluate",
                                                             "sticky": False})
        for _ in range(2):
            await _reject_one(c, up, agent)
        two = await maturity(c, agent)
        await _reject_one(c, up, agent)
        three = await maturity(c, agent)
        # A manual change without "sticky" is sticky: rejections no longer move the agent.
        await c.put(f"/api/agents/{agent['id']}/tier", json={"tier": "intern", "reason": "my call"})
        for _ in range(3):
            await _reject_one(c, up, agent)
        held = await maturity(c, agent)
        # PATCH /api/agents with a tier is a manual change too, and sticky.
        patched = (await c.patch(f"/api/agents/{agent['id']}", json={"tier": "supervised",
                                                                     "tier_reason": "new job"})).json()
        audit = (await c.get("/api/audit", params={"action": "agent.tier_change"})).json()["events"]
    assert two["tier"] == "intern" and two["demotion_streak"] == {"current": 2, "limit": 3}
    assert three["tier"] == "student" and three["other_tiers"]["intern"]["approvals_rejected"] == 3
    assert held["tier"] == "intern" and held["sticky"] is True and held["demotion_streak"]["current"] == 3
    assert (patched["tier"], patched["tier_sticky"]) == ("supervised", True)
    assert [(e["data"]["from"], e["data"]["to"], e["data"]["manual"], e["data"]["reason"]) for e in audit] == [
        ("student", "intern", True, "evaluate"), ("intern", "student", False, "3 rejected actions in a row"),
        ("student", "intern", True, "my call"), ("intern", "supervised", True, "new job")]

"""Every cell of the tier x risk-level matrix, each with a real run through the
loopback simulator: allow -> the tool ran; approve -> the run paused with an
approval row; deny -> the model read a refusal and nothing ran."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.support.agents import stream_chat, types_of
from tests.support.governance import make_agent, pending_approval, script_tool_turn, setup_echo

from tests.support.app import client_for
from warden.agents.policy import LEVELS, MATRIX, TIERS
from warden.services import Services
from warden.testing.upstream import UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


CELLS = [(tier, level, MATRIX[(tier, level)]) for tier in TIERS for level in LEVELS]


def test_the_matrix_is_complete() -> None:
    assert len(CELLS) == 16 and {o for *_, o in CELLS} == {"allow", "approve", "deny"}


@pytest.mark.parametrize(("tier", "level", "outcome"), CELLS, ids=[f"{t}-L{lv}-{o}" for t, lv, o in CELLS])
async def test_matrix_cell_with_a_real_run(services: Services, up: UpstreamServer,
                                           tier: str, level: int, outcome: str) -> None:
    echo = await setup_echo(services, up)
    script_tool_turn(up, text="finished", arg=f"{tier}-{level}")
    async with client_for(services) as c:
        agent = await make_agent(c, tier=tier, tier_reason="matrix test", tool_levels={"echo": level})
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "use the tool"})
        run_id = events[0]["run_id"]
        run = (await c.get(f"/api/runs/{run_id}")).json()
        call = next(e for e in events if e["type"] == "tool.call")
        assert (call["decision"], call["rule"], call["risk_level"]) == (outcome, f"matrix:{tier}:{level}", level)
        action = run["tool_calls"][0]
        assert action["decision"] == outcome and action["rule"] == f"matrix:{tier}:{level}"
        audit = (await c.get("/api/audit", params={"action": "governance.decision"})).json()["events"]
        assert [(e["target"], e["data"]["decision"], e["data"]["tier"]) for e in audit] == [
            (action["id"], outcome, tier)]
        if outcome == "allow":
            assert echo.calls == [{"text": f"{tier}-{level}"}]
            assert run["status"] == "completed" and action["status"] == "completed"
            assert types_of(events)[-1] == "run.completed"
        elif outcome == "approve":
            assert echo.calls == []
            assert types_of(events)[-2:] == ["approval.required", "run.paused"]
            assert run["status"] == "paused" and action["status"] == "pending_approval"
            approval = await pending_approval(c, run_id)
            assert (approval["tool"], approval["risk_level"], approval["tool_call_id"]) == ("echo", level, action["id"])
            assert approval["arguments"] == {"text": f"{tier}-{level}"} and approval["agent_id"] == agent["id"]
            assert approval["rule"] == f"matrix:{tier}:{level}" and "approval" in approval["reason"]
            assert action["approval"]["status"] == "pending"
            assert len(up.requests) == 1  # the model waits for the human
        else:
            assert echo.calls == []
            assert run["status"] == "completed" and action["status"] == "denied"
            refusal = [m for m in up.requests[1].body["messages"] if m["role"] == "tool"][0]["content"]
            assert refusal.startswith("refused:") and "is denied" in refusal and tier in refusal
            assert (await c.get("/api/approvals", params={"run_id": run_id})).json() == []

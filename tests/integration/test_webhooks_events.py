"""The events webhooks get, from their causes: a hosted run that pauses
(``approval.required``, with the id ``GET /api/approvals`` shows and the run's own
SSE events carry), a decision (``approval.decided``, once however many race), a tier
change (``agent.tier_changed``) and a budget's spend crossing 50 / 80 / 100 %
(``budget.threshold``, once each, with concurrent spend and several checkers)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.agents import stream_chat, types_of
from tests.support.app import PG_URL, REDIS_URL, client_for, requires_pg, requires_redis, reset_pg
from tests.support.governance import make_agent, pending_approval, script_tool_turn, setup_echo
from tests.support.webhooks import Receiver, hooked_services, receiver, until
from warden.services import Services
from warden.state.base import to_pico
from warden.store.webhook_models import WebhookDelivery
from warden.tenancy.budget_alerts import BudgetAlerts, crossed
from warden.testing.upstream import UpstreamServer


@pytest.fixture(params=["sqlite", pytest.param("postgresql+redis", marks=[requires_pg, requires_redis])])
async def svc(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[Services]:
    shared = {}
    if request.param != "sqlite":  # as several instances run: the database and counters shared
        await reset_pg(PG_URL)
        shared = {"database_url": PG_URL, "redis_url": REDIS_URL, "redis_prefix": f"wh-{uuid.uuid4().hex[:8]}:"}
    s = await hooked_services(data_dir, **shared)
    yield s
    await s.close()


@pytest.fixture
async def rec() -> AsyncIterator[Receiver]:
    async with receiver() as r:
        yield r


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def _hook(c, rec: Receiver, events: list[str], fmt: str = "warden") -> dict:
    r = await c.post("/api/webhooks", json={"url": rec.url, "events": events, "format": fmt})
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_paused_run_sends_approval_required_with_the_approval_id(svc: Services, rec: Receiver,
                                                                         up: UpstreamServer) -> None:
    echo = await setup_echo(svc, up)
    async with client_for(svc) as c:
        await _hook(c, rec, ["approval.required", "approval.decided"])
        script_tool_turn(up, text="sent", arg="memo")
        agent = await make_agent(c, tool_levels={"echo": 2})  # student x draft: a human decides
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "send it"})
        run_id = events[0]["run_id"]
        approval = await pending_approval(c, run_id)
        [required] = (await until(lambda: rec.of_type("approval.required")))
        r = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve", "note": "ok"})
        assert r.status_code == 200, r.text
        [decided] = await until(lambda: rec.of_type("approval.decided"))
    assert types_of(events)[-2:] == ["approval.required", "run.paused"]
    sse_required, sse_paused = events[-2], events[-1]
    # One id everywhere: the run's own event, the pause, the approvals list and the webhook.
    assert sse_required["approval_id"] == approval["id"] == required.json["data"]["approval_id"]
    assert sse_paused["approval_ids"] == [approval["id"]]
    data = required.json["data"]
    assert (data["tool"], data["risk_level"], data["agent_id"], data["run_id"]) == ("echo", 2, agent["id"], run_id)
    assert data["status"] == "pending" and data["arguments"] == {"text": "memo"} and data["rule"] == "matrix:student:2"
    assert required.json["type"] == "approval.required" and required.headers["x-warden-event"] == "approval.required"
    d = decided.json["data"]
    assert (d["approval_id"], d["status"], d["note"]) == (approval["id"], "approved", "ok")
    assert d["decided_by"].startswith("key:")
    await until(lambda: echo.calls)
    assert echo.calls == [{"text": "memo"}]


async def test_the_slack_message_of_an_approval_names_the_command_that_settles_it(
        svc: Services, rec: Receiver, up: UpstreamServer) -> None:
    await setup_echo(svc, up)
    async with client_for(svc) as c:
        await _hook(c, rec, ["approval.required"], fmt="slack")
        script_tool_turn(up)
        agent = await make_agent(c, tool_levels={"echo": 2})
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "go"})
        approval = await pending_approval(c, events[0]["run_id"])
        [got] = await until(lambda: rec.received)
    body = got.json
    assert set(body) == {"text", "blocks"}
    assert body["text"] == f"Approval needed: agent {agent['id']} wants to call echo (risk level 2)"
    detail = body["blocks"][1]["text"]["text"]
    assert f"warden approvals approve {approval['id']}" in detail
    assert f"POST /api/approvals/{approval['id']}" in detail


async def test_racing_decisions_send_one_approval_decided(svc: Services, rec: Receiver, up: UpstreamServer) -> None:
    await setup_echo(svc, up)
    async with client_for(svc) as c:
        await _hook(c, rec, ["approval.decided"])
        script_tool_turn(up)
        agent = await make_agent(c, tool_levels={"echo": 2})
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "go"})
        approval = await pending_approval(c, events[0]["run_id"])
        answers = await asyncio.gather(*(c.post(f"/api/approvals/{approval['id']}", json={"decision": "reject"})
                                         for _ in range(4)))
        await until(lambda: rec.received)
        await asyncio.sleep(0.5)  # a second delivery, were there one, would have come by now
    assert {a.status_code for a in answers} == {200}
    assert [r.json["data"]["status"] for r in rec.received] == ["rejected"]
    async with svc.db.session() as s:
        rows = (await s.execute(select(WebhookDelivery))).scalars().all()
    assert [(d.event_type, d.status) for d in rows] == [("approval.decided", "delivered")]


async def test_a_tier_change_sends_agent_tier_changed(svc: Services, rec: Receiver, up: UpstreamServer) -> None:
    await setup_echo(svc, up)
    async with client_for(svc) as c:
        await _hook(c, rec, ["agent.tier_changed"])
        agent = await make_agent(c)
        r = await c.put(f"/api/agents/{agent['id']}/tier", json={"tier": "supervised", "reason": "proved itself"})
        assert r.status_code == 200, r.text
        [got] = await until(lambda: rec.received)
    d = got.json["data"]
    assert (d["agent_id"], d["from"], d["to"], d["manual"], d["reason"]) == (
        agent["id"], "student", "supervised", True, "proved itself")
    assert d["actor"].startswith("key:")


async def test_events_a_webhook_did_not_ask_for_are_not_sent(svc: Services, rec: Receiver,
                                                             up: UpstreamServer) -> None:
    await setup_echo(svc, up)
    async with client_for(svc) as c:
        await _hook(c, rec, ["budget.threshold"])
        agent = await make_agent(c)
        await c.put(f"/api/agents/{agent['id']}/tier", json={"tier": "intern", "reason": "r"})
    async with svc.db.session() as s:
        assert (await s.execute(select(WebhookDelivery))).scalars().all() == []


def test_thresholds_crossed() -> None:
    assert crossed(Decimal("0.49"), Decimal(1)) == []
    assert crossed(Decimal("0.5"), Decimal(1)) == [50]
    assert crossed(Decimal("0.8"), Decimal(1)) == [50, 80]
    assert crossed(Decimal("1.5"), Decimal(1)) == [50, 80, 100]
    assert crossed(Decimal("0.99999"), Decimal(1)) == [50, 80]


async def test_budget_thresholds_fire_once_each_with_concurrent_spend(svc: Services, rec: Receiver) -> None:
    async with client_for(svc) as c:
        await _hook(c, rec, ["budget.threshold"])
        r = await c.put("/api/budgets", json={"scope": "workspace", "period": "month", "limit_usd": "1"})
        assert r.status_code == 200, r.text
        budget_id, ws = r.json()["id"], (await c.get("/api/budgets")).json()["workspace_id"]
    [budget] = (await svc.budgets.limits_for(ws)).budgets
    counter = budget.counter(ws, datetime.now(UTC))

    async def spend(usd: str, n: int) -> None:
        async def one(i: int) -> None:
            rid = f"test:{uuid.uuid4().hex}"
            assert (await svc.state.reserve([counter], to_pico(Decimal(usd)), rid)).ok
            await svc.state.settle(rid, to_pico(Decimal(usd)))
        await asyncio.gather(*(one(i) for i in range(n)))

    # Several instances' checkers at once (each its own object, as on separate servers).
    checkers = [BudgetAlerts(svc.db, svc.budgets, svc.state) for _ in range(3)]
    await spend("0.05", 9)  # $0.45: below every threshold
    await asyncio.gather(*(ch.check() for ch in checkers))
    await spend("0.05", 2)  # $0.55: 50 %
    await asyncio.gather(*(ch.check() for ch in checkers))
    await until(lambda: len(rec.received) == 1)
    await spend("0.05", 9)  # $1.00: 80 % and 100 % at once, reached by concurrent spend
    await asyncio.gather(*(ch.check() for ch in checkers), *(ch.check() for ch in checkers))
    await until(lambda: len(rec.received) == 3)
    await asyncio.gather(*(ch.check() for ch in checkers))  # checked again: nothing new
    await asyncio.sleep(0.5)  # the service's own worker ticks too: nothing more may come
    got = sorted((r.json["data"] for r in rec.received), key=lambda d: d["threshold"])
    assert [d["threshold"] for d in got] == [50, 80, 100]
    assert {d["budget_id"] for d in got} == {budget_id}
    assert got[0]["spent_usd"] == "0.55" and got[0]["limit_usd"] == "1"
    assert got[0]["period_key"] == f"month:{datetime.now(UTC):%Y-%m}"
    assert len({r.json["id"] for r in rec.received}) == 3

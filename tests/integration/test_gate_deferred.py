"""A call allowed at once at level 1 or 2 (``Gate.decide(defer=True)``) is written by
``Gate.finished`` alone: its row, its decision and outcome audit events and its count
toward maturity in one transaction (on a SQLite file in one thread hop, on a
synchronous session: ``Database.run_sync_tx``). When the count moves the agent's tier
(a promotion proposed, a demotion) the same transaction runs the full way instead."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import delete, select

from tests.support.app import client_for
from warden.governance.gate import GovernedCall, arguments_hash
from warden.config import Settings
from warden.services import Services
from warden.store import audit
from warden.store.agent_models import Agent
from warden.store.audit import AuditConflict
from warden.store.gate_models import GovernedCallRow
from warden.store.governance_models import AgentMaturity, TierProposal
from warden.store.models import AuditEvent
from warden.tenancy.accounts import Principal


@pytest.fixture
def services(any_services: Services) -> Services:
    return any_services


async def _agent(services: Services, tier: str = "intern") -> tuple[Principal, Agent]:
    async with client_for(services) as admin:
        agent = (await admin.post("/api/agents", json={"name": "ext", "kind": "external"})).json()
        key = (await admin.post("/api/keys", json={"name": "ext", "agent": agent["id"]})).json()["key"]
    await services.maturity.set_tier(agent["workspace_id"], agent["id"], tier, reason="test", actor="test",
                                     sticky=False)
    principal = await services.accounts.authenticate(key)
    return principal, await services.gate.agent_for(principal, None)


async def _call(services: Services, principal: Principal, agent: Agent, ok: bool = True,
                interrupted: bool = False, arguments: Any = None) -> str:
    verdict = await services.gate.decide(principal, agent, GovernedCall("up__echo", arguments or {"t": 1}, 1, "mcp"),
                                         defer=True)
    assert verdict.outcome == "allow" and verdict.deferred is not None
    await services.gate.finished(principal, verdict.action_id, ok=ok, result={"r": ok}, verdict=verdict,
                                 interrupted=interrupted)
    return verdict.action_id


async def _events(services: Services, target: str) -> list[AuditEvent]:
    async with services.db.session() as s:
        return list((await s.execute(select(AuditEvent).where(AuditEvent.target == target)
                                     .order_by(AuditEvent.seq))).scalars())


async def _counts(services: Services, agent: Agent) -> AgentMaturity | None:
    async with services.db.session() as s:
        return await s.get(AgentMaturity, (agent.id, agent.tier))


async def test_nothing_is_written_before_and_everything_after(services: Services) -> None:
    principal, agent = await _agent(services)
    verdict = await services.gate.decide(principal, agent, GovernedCall("up__echo", {"t": 1}, 1, "mcp"), defer=True)
    async with services.db.session() as s:
        assert await s.get(GovernedCallRow, verdict.action_id) is None
    await services.gate.finished(principal, verdict.action_id, ok=True, result={"r": True}, verdict=verdict)
    async with services.db.session() as s:
        row = await s.get(GovernedCallRow, verdict.action_id)
    assert row is not None and (row.status, row.is_error, row.decision) == ("completed", False, "allow")
    assert row.result_hash == arguments_hash({"r": True}) and row.ended_at is not None
    decision, outcome = await _events(services, verdict.action_id)
    assert (decision.action, outcome.action) == ("governance.decision", "governance.outcome")
    assert outcome.seq == decision.seq + 1 and outcome.prev_hash == decision.hash
    assert decision.data["arguments_hash"] == arguments_hash({"t": 1}) and outcome.data["status"] == "completed"
    counted = await _counts(services, agent)
    assert counted is not None and (counted.runs, counted.successes, counted.streak) == (1, 1, 0)
    async with services.db.session() as s:
        assert (await audit.verify(s)).ok


async def test_failed_and_interrupted_calls(services: Services) -> None:
    principal, agent = await _agent(services)
    failed = await _call(services, principal, agent, ok=False)
    left = await _call(services, principal, agent, ok=False, interrupted=True, arguments={"t": 2})
    async with services.db.session() as s:
        rows = {r.id: r for r in (await s.execute(select(GovernedCallRow))).scalars()}
    assert (rows[failed].status, rows[failed].is_error) == ("failed", True)
    assert rows[left].status == "interrupted"  # recorded, and says nothing about the agent
    counted = await _counts(services, agent)
    assert counted is not None and (counted.runs, counted.failures, counted.streak) == (1, 1, 1)
    async with services.db.session() as s:
        assert (await audit.verify(s)).ok


async def test_a_count_that_proposes_a_promotion_goes_the_full_way(services: Services) -> None:
    principal, agent = await _agent(services, "student")
    services.maturity.config = replace(services.maturity.config, min_runs={"student": 2, "intern": 2,
                                                                           "supervised": 2}, min_feedback=0)
    first = await _call(services, principal, agent)
    async with services.db.session() as s:
        assert await s.get(TierProposal, agent.id) is None
    second = await _call(services, principal, agent, arguments={"t": 2})
    async with services.db.session() as s:
        proposal = await s.get(TierProposal, agent.id)
        rows = (await s.execute(select(GovernedCallRow.status).where(
            GovernedCallRow.id.in_([first, second])))).scalars().all()
        proposed = (await s.execute(select(AuditEvent).where(
            AuditEvent.action == "agent.promotion_proposed"))).scalars().all()
    assert proposal is not None and (proposal.from_tier, proposal.to_tier, proposal.status) == (
        "student", "intern", "pending")
    assert rows == ["completed", "completed"] and len(proposed) == 1
    assert len(await _events(services, second)) == 2  # written once, not once per way
    counted = await _counts(services, agent)
    assert counted is not None and counted.successes == 2


async def test_a_streak_of_failures_demotes_and_a_sticky_tier_stays(services: Services) -> None:
    principal, agent = await _agent(services, "intern")
    services.maturity.config = replace(services.maturity.config, demotion_streak=2)
    await _call(services, principal, agent, ok=False)
    await _call(services, principal, agent, ok=False, arguments={"t": 2})
    async with services.db.session() as s:
        assert (await s.get(Agent, agent.id, populate_existing=True)).tier == "student"  # type: ignore[union-attr]
    await services.maturity.set_tier(agent.workspace_id, agent.id, "intern", reason="by hand", actor="test")
    agent = await services.gate.agent_for(principal, None)
    for i in range(3):
        await _call(services, principal, agent, ok=False, arguments={"t": 10 + i})
    async with services.db.session() as s:
        assert (await s.get(Agent, agent.id, populate_existing=True)).tier == "intern"  # type: ignore[union-attr]
    counted = await _counts(services, agent)
    assert counted is not None and counted.streak == 3


async def test_an_agent_deleted_mid_call_is_still_on_the_ledger(services: Services) -> None:
    principal, agent = await _agent(services)
    verdict = await services.gate.decide(principal, agent, GovernedCall("up__echo", {}, 1, "mcp"), defer=True)
    async with services.db.transaction() as s:
        await s.execute(delete(Agent).where(Agent.id == agent.id))
    await services.gate.finished(principal, verdict.action_id, ok=True, result=None, verdict=verdict)
    assert [e.action for e in await _events(services, verdict.action_id)] == [
        "governance.decision", "governance.outcome"]


@pytest.fixture
async def sqlite_services(settings: Settings) -> AsyncIterator[Services]:
    """One-hop writes are a SQLite file's: this test has no PostgreSQL twin."""
    svc = await Services.start(settings)
    yield svc
    await svc.close()


async def test_one_hop_transaction_retries_a_lost_chain_race(sqlite_services: Services) -> None:
    services = sqlite_services
    assert services.db.one_hop_writes
    tries: list[int] = []

    def lose_once(s: Any) -> int:
        tries.append(1)
        if len(tries) == 1:
            raise AuditConflict()
        return len(tries)

    assert await services.db.run_sync_tx(lose_once) == 2

    def always_lose(s: Any) -> None:
        raise AuditConflict()

    with pytest.raises(AuditConflict):
        await services.db.run_sync_tx(always_lose, attempts=2)


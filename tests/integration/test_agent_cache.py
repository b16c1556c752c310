"""A governed call's agent comes from a cache (agents/agent_cache.py): fresh for the
TTL, dropped at once by a change through the registry, by a tier move of maturity
once its transaction commits, and by the broadcast another instance sends."""

from __future__ import annotations

from sqlalchemy import update

from tests.support.app import client_for
from warden.agents.agent_cache import TOPIC, AgentCache
from warden.governance.gate import GovernedCall
from warden.services import Services
from warden.state.base import FLUSH_ALL
from warden.store.agent_models import Agent
from warden.tenancy.accounts import Principal


async def _bound(services: Services) -> tuple[str, Principal]:
    async with client_for(services) as admin:
        agent = (await admin.post("/api/agents", json={"name": "ext", "kind": "external"})).json()
        key = (await admin.post("/api/keys", json={"name": "ext", "agent": agent["id"]})).json()["key"]
    return agent["id"], await services.accounts.authenticate(key)


async def _set_tier_behind_its_back(services: Services, agent_id: str, tier: str) -> None:
    async with services.db.transaction() as s:
        await s.execute(update(Agent).where(Agent.id == agent_id).values(tier=tier))


async def test_fresh_copies_until_ttl_and_misses_reload(services: Services) -> None:
    agent_id, _ = await _bound(services)
    now = [0.0]
    cache = AgentCache(services.db, ttl=5.0, clock=lambda: now[0])
    first = await cache.get(agent_id)
    assert first is not None and first.tier == "student"
    await _set_tier_behind_its_back(services, agent_id, "intern")
    assert await cache.get(agent_id) is first  # fresh: no query
    now[0] = 6.0
    again = await cache.get(agent_id)
    assert again is not None and again.tier == "intern"
    assert await cache.get("agt_nobody") is None  # a gone agent is remembered as gone too
    for topic, key in ((TOPIC, agent_id), (TOPIC, FLUSH_ALL), (FLUSH_ALL, "")):
        cached = await cache.get(agent_id)
        await _set_tier_behind_its_back(services, agent_id, "student" if cached.tier == "intern" else "intern")  # type: ignore[union-attr]
        cache.on_message("other", agent_id)  # not this cache's topic
        assert await cache.get(agent_id) is cached
        cache.on_message(topic, key)
        assert (await cache.get(agent_id)).tier != cached.tier  # type: ignore[union-attr]


async def test_registry_changes_and_the_broadcast_drop_the_copy(services: Services) -> None:
    agent_id, principal = await _bound(services)
    assert (await services.gate.agent_for(principal, None)).tier == "student"
    async with client_for(services) as admin:
        r = await admin.patch(f"/api/agents/{agent_id}", json={"tool_levels": {"up__echo": 1}})
        assert r.status_code == 200, r.text
    assert (await services.gate.agent_for(principal, None)).tool_levels == {"up__echo": 1}
    # Another instance changed it: its message drops this instance's copy.
    await _set_tier_behind_its_back(services, agent_id, "intern")
    assert (await services.gate.agent_for(principal, None)).tier == "student"
    await services.state.publish(TOPIC, agent_id)
    assert (await services.gate.agent_for(principal, None)).tier == "intern"
    async with client_for(services) as admin:
        deleted = await admin.delete(f"/api/agents/{agent_id}")
        assert deleted.status_code == 200 and deleted.json()["id"] == agent_id, deleted.text
    assert await services.gate.agents.get(agent_id) is None


async def test_a_tier_move_of_maturity_is_seen_by_the_next_call(services: Services) -> None:
    agent_id, principal = await _bound(services)
    agent = await services.gate.agent_for(principal, None)
    await services.maturity.set_tier(agent.workspace_id, agent_id, "intern", reason="test", actor="test")
    agent = await services.gate.agent_for(principal, None)
    assert agent.tier == "intern"
    verdict = await services.gate.decide(principal, agent, GovernedCall("up__echo", {}, 1, "mcp"), defer=True)
    assert verdict.outcome == "allow"

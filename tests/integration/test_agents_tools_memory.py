"""Agent memory on the migrated schema (SQLite FTS5 and PostgreSQL tsvector):
save, ranked search, stemming, and no crossing between agents or workspaces."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import delete, func, select, text

from warden.agents.memory import AgentMemoryStore
from warden.agents.tools.builtin import BUILTIN_TOOLS
from warden.agents.tools.base import ToolContext
from warden.agents.tools.deps import ToolDeps
from warden.services import Services
from warden.store.agent_models import Agent
from warden.store.memory_models import AgentMemory
from warden.store.base import new_id


@pytest.fixture(params=["sqlite", "postgresql"])
def svc(request: pytest.FixtureRequest) -> Services:
    return request.getfixturevalue("services" if request.param == "sqlite" else "pg_services")


async def _agent(svc: Services, workspace_id: str, name: str) -> str:
    agent = Agent(id=new_id("agt"), workspace_id=workspace_id, name=name, model_policy={"model": "auto"},
                  tools=[], mcp_servers=[], tool_levels={})
    async with svc.db.transaction() as s:
        s.add(agent)
    return agent.id


@pytest.fixture
async def world(svc: Services) -> dict[str, str]:
    ws1 = (await svc.accounts.ensure_default_workspace()).id
    ws2 = (await svc.accounts.create_workspace("other")).id
    return {"ws1": ws1, "ws2": ws2, "a1": await _agent(svc, ws1, "mem-a"),
            "a2": await _agent(svc, ws1, "mem-b"), "b1": await _agent(svc, ws2, "mem-c")}


async def test_search_ranks_and_stems(svc: Services, world: dict[str, str]) -> None:
    store = AgentMemoryStore(svc.db)
    ws, agent = world["ws1"], world["a1"]
    await store.save(ws, agent, "The quarterly budget meeting moved to Thursday", ["calendar"])
    await store.save(ws, agent, "Budget owner is Dana; budget review needs her sign-off", ["people"])
    await store.save(ws, agent, "Favourite coffee: flat white")
    hits = await store.search(ws, agent, "budget", limit=5)
    assert hits[0].text.startswith("Budget owner")  # two mentions rank first
    assert len(hits) == 2
    stemmed = await store.search(ws, agent, "meetings")  # "meetings" finds "meeting"
    assert [h.text for h in stemmed] == ["The quarterly budget meeting moved to Thursday"]
    assert stemmed[0].tags == ["calendar"] and stemmed[0].created_at.tzinfo is not None
    by_tag = await store.search(ws, agent, "people")
    assert len(by_tag) == 1 and by_tag[0].tags == ["people"]
    either = await store.search(ws, agent, "coffee OR thursday NEAR(x) \"unbalanced")  # operators are words
    assert {h.text for h in either} == {"Favourite coffee: flat white",
                                        "The quarterly budget meeting moved to Thursday"}
    assert await store.search(ws, agent, "zebra") == []
    newest = await store.search(ws, agent, "  ?! ", limit=2)  # no words: the newest notes
    assert [h.text for h in newest] == ["Favourite coffee: flat white",
                                        "Budget owner is Dana; budget review needs her sign-off"]


async def test_memory_never_crosses_agents_or_workspaces(svc: Services, world: dict[str, str]) -> None:
    store = AgentMemoryStore(svc.db)
    await store.save(world["ws1"], world["a1"], "secret plan alpha")
    await store.save(world["ws1"], world["a2"], "secret plan beta")
    await store.save(world["ws2"], world["b1"], "secret plan gamma")
    assert [h.text for h in await store.search(world["ws1"], world["a1"], "secret plan")] == ["secret plan alpha"]
    assert [h.text for h in await store.search(world["ws1"], world["a2"], "secret")] == ["secret plan beta"]
    assert [h.text for h in await store.search(world["ws2"], world["b1"], "")] == ["secret plan gamma"]
    # Right agent id, wrong workspace: nothing.
    assert await store.search(world["ws2"], world["a1"], "secret") == []
    assert await store.search(world["ws2"], world["a1"], "") == []


async def test_memory_tools_use_the_context_scope(svc: Services, world: dict[str, str]) -> None:
    deps = ToolDeps(db=svc.db)
    save, search = BUILTIN_TOOLS["memory_save"](deps), BUILTIN_TOOLS["memory_search"](deps)
    ctx_a = ToolContext(world["ws1"], world["a1"], "run_1", "ses_1")
    ctx_b = ToolContext(world["ws1"], world["a2"], "run_2", "ses_2")
    saved = await save.run({"text": "Deploy window is Friday 18:00", "tags": ["ops", "ops", " deploy "]}, ctx_a)
    assert not saved.is_error and orjson.loads(saved.content)["saved"] is True
    found = orjson.loads((await search.run({"query": "deploy window", "limit": 3}, ctx_a)).content)
    assert [r["text"] for r in found["results"]] == ["Deploy window is Friday 18:00"]
    assert found["results"][0]["tags"] == ["ops", "deploy"]
    assert found["results"][0]["id"] == orjson.loads(saved.content)["id"]
    assert orjson.loads((await search.run({"query": "deploy"}, ctx_b)).content) == {"results": []}
    for bad in ({"text": ""}, {"text": "x", "tags": [""]}, {"text": "x" * 9000}, {"text": "x", "tags": ["t"] * 17}):
        result = await save.run(bad, ctx_a)
        assert result.is_error, bad
    assert (await search.run({"query": "x", "limit": 0}, ctx_a)).is_error


async def test_index_follows_updates_and_agent_deletion(svc: Services, world: dict[str, str]) -> None:
    store = AgentMemoryStore(svc.db)
    item = await store.save(world["ws1"], world["a1"], "old wording about penguins")
    async with svc.db.transaction() as s:
        row = (await s.execute(select(AgentMemory).where(AgentMemory.id == item.id))).scalar_one()
        row.text = "new wording about walruses"
    assert await store.search(world["ws1"], world["a1"], "penguins") == []
    assert [h.id for h in await store.search(world["ws1"], world["a1"], "walruses")] == [item.id]
    async with svc.db.transaction() as s:
        await s.execute(delete(Agent).where(Agent.id == world["a1"]))  # memory goes with its agent
    async with svc.db.session() as s:
        left = (await s.execute(select(func.count()).select_from(AgentMemory)
                                .where(AgentMemory.agent_id == world["a1"]))).scalar_one()
        assert left == 0
        if svc.db.is_sqlite:  # the FTS index lost the row too (triggers ran on the cascade)
            fts = (await s.execute(text("SELECT count(*) FROM agent_memory_fts "
                                        "WHERE agent_memory_fts MATCH 'walruses'"))).scalar_one()
            assert fts == 0
    assert await store.search(world["ws1"], world["a1"], "walruses") == []


async def test_save_validates_directly(svc: Services, world: dict[str, str]) -> None:
    store = AgentMemoryStore(svc.db)
    with pytest.raises(ValueError, match="must not be empty"):
        await store.save(world["ws1"], world["a1"], "   ")
    with pytest.raises(ValueError, match="longer than 8000"):
        await store.save(world["ws1"], world["a1"], "x" * 8001)
    with pytest.raises(ValueError, match="at most 16 tags"):
        await store.save(world["ws1"], world["a1"], "x", [str(i) for i in range(17)])
    with pytest.raises(ValueError, match="longer than 64"):
        await store.save(world["ws1"], world["a1"], "x", ["t" * 65])
    with pytest.raises(ValueError, match="non-empty strings"):
        await store.save(world["ws1"], world["a1"], "x", [3])  # type: ignore[list-item]

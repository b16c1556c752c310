"""External agents and the API keys bound to them (issue 17, item 1), through the real
app in front of a loopback provider: a bound key's gateway calls are its agent's
spend (spend rows, usage by agent, the agent's budget), a bound key is no more than
its role, a binding names an agent of the key's own workspace, an external agent has
no loop here (409 ``agent_is_external``), its kind never changes, and deleting it
revokes its keys at once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from websockets.asyncio.client import connect

from tests.support.app import ADMIN_KEY, LiveWarden, client_for
from tests.support.envelope import assert_envelope
from warden.config import Settings
from warden.services import Services
from warden.store.models import AuditEvent, SpendRow
from warden.testing.upstream import DEFAULT_TEXT, UpstreamServer

UPSTREAM_KEY = "sk-up-openai-ext-0123456789"
OUTPUT_TOKENS = len(DEFAULT_TEXT.split())
PRICED = [{"id": "gpt-4o-mini", "input_price": 0, "output_price": 1000}]
COST = Decimal("0.001") * OUTPUT_TOKENS  # exact: the prompt is free, max_tokens = the real output
BODY = {"model": "openai/gpt-4o-mini", "max_tokens": OUTPUT_TOKENS,
        "messages": [{"role": "user", "content": "count me"}]}


@pytest.fixture
def services(any_services: Services) -> Services:
    """Every test here on SQLite and on PostgreSQL (the ``client`` fixture follows)."""
    return any_services


@pytest.fixture
def up() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
async def api(services: Services, up: UpstreamServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(services) as c:
        r = await c.post("/api/byok", json={"provider": "openai", "label": "main", "api_key": UPSTREAM_KEY,
                                            "base_url": up.base_url, "models": PRICED})
        assert r.status_code == 201, r.text
        yield c


async def external_agent(c: httpx.AsyncClient, name: str = "claude-code") -> dict[str, Any]:
    r = await c.post("/api/agents", json={"name": name, "kind": "external"})
    assert r.status_code == 201, r.text
    return r.json()


async def bound_key(c: httpx.AsyncClient, agent: str, name: str = "cc", **fields: Any) -> dict[str, Any]:
    r = await c.post("/api/keys", json={"name": name, "agent": agent, **fields})
    assert r.status_code == 201, r.text
    return r.json()


async def spend(services: Services) -> list[tuple[str | None, str | None, Decimal | None]]:
    await services.spend.flush()
    async with services.db.session() as s:
        rows = (await s.execute(select(SpendRow).order_by(SpendRow.id))).scalars()
        return [(r.api_key_id, r.agent_id, r.cost_usd) for r in rows]


async def audit_events(services: Services, action: str) -> list[AuditEvent]:
    async with services.db.session() as s:
        return list((await s.execute(select(AuditEvent).where(AuditEvent.action == action)
                                     .order_by(AuditEvent.seq))).scalars())


# --- spend, usage, budgets -------------------------------------------------------------------


async def test_a_bound_keys_calls_are_its_agents_spend(api: httpx.AsyncClient, services: Services) -> None:
    agent = await external_agent(api)
    key = await bound_key(api, "claude-code")  # by name; the reply names the agent's id
    assert (key["agent_id"], key["role"]) == (agent["id"], "member") and key["key"].startswith("wk-")
    listed = {k["name"]: k for k in (await api.get("/api/keys")).json()}
    assert listed["cc"]["agent_id"] == agent["id"] and "key" not in listed["cc"]
    assert listed["bootstrap-admin"]["agent_id"] is None
    admin_id = listed["bootstrap-admin"]["id"]

    async with client_for(services, key["key"]) as cc:
        r = await cc.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 200, r.text
        assert Decimal(r.headers["x-warden-cost-usd"]) == COST
    assert (await api.post("/v1/chat/completions", json=BODY)).status_code == 200

    assert await spend(services) == [(key["id"], agent["id"], COST), (admin_id, None, COST)]
    usage = (await api.get("/api/usage", params={"group_by": "agent"})).json()
    assert usage["group_by"] == "agent" and usage["total_requests"] == 2
    assert {row["group"]: (row["requests"], Decimal(row["cost_usd"])) for row in usage["rows"]} == {
        agent["id"]: (1, COST), None: (1, COST)}


async def test_an_agent_budget_stops_its_keys_and_only_them(api: httpx.AsyncClient, services: Services) -> None:
    agent = await external_agent(api)
    first, second = await bound_key(api, agent["id"], "cc-1"), await bound_key(api, agent["id"], "cc-2")
    plain = (await api.post("/api/keys", json={"name": "plain"})).json()
    r = await api.put("/api/budgets", json={"scope": "agent", "scope_id": agent["id"], "period": "total",
                                            "limit_usd": str(COST)})
    assert r.status_code == 200, r.text

    async with client_for(services, first["key"]) as one, client_for(services, second["key"]) as two, \
            client_for(services, plain["key"]) as other:
        assert (await one.post("/v1/chat/completions", json=BODY)).status_code == 200
        # The budget is the agent's: its other key is refused as well, the unbound keys are not.
        refused = assert_envelope(await two.post("/v1/chat/completions", json=BODY), 429, "budget_exceeded")
        again = assert_envelope(await one.post("/v1/chat/completions", json=BODY), 429, "budget_exceeded")
        assert f"agent '{agent['id']}'" in refused["message"] and refused["message"] == again["message"]
        assert (await other.post("/v1/chat/completions", json=BODY)).status_code == 200
    assert (await api.post("/v1/chat/completions", json=BODY)).status_code == 200

    (budget,) = [b for b in (await api.get("/api/budgets")).json()["budgets"] if b["scope"] == "agent"]
    assert Decimal(budget["spent_usd"]) == COST and Decimal(budget["remaining_usd"]) == 0
    rows = await spend(services)
    assert [(k, a) for k, a, _ in rows if a is not None] == [(first["id"], agent["id"])]
    assert len(rows) == 3  # the refused calls reached no provider and cost nothing


# --- keys: binding and what a bound key may do -----------------------------------------------


async def test_a_bound_member_key_sees_what_a_member_sees(api: httpx.AsyncClient, services: Services) -> None:
    agent = await external_agent(api)
    member = await bound_key(api, agent["id"])
    admin = await bound_key(api, agent["id"], "cc-admin", role="admin")
    assert (await services.accounts.authenticate(member["key"])).agent_id == agent["id"]
    async with client_for(services, member["key"]) as m:
        assert_envelope(await m.get("/api/keys"), 403, "admin_required")
        assert_envelope(await m.post("/api/keys", json={"name": "more"}), 403, "admin_required")
        assert_envelope(await m.get("/api/usage"), 403, "admin_required")
        assert_envelope(await m.put("/api/budgets", json={"scope": "agent", "scope_id": agent["id"],
                                                          "period": "total", "limit_usd": "100"}),
                        403, "admin_required")
        # Its own agent is the admin's: a member may read it, not change or delete it.
        assert_envelope(await m.patch(f"/api/agents/{agent['id']}", json={"description": "mine"}),
                        403, "not_owner")
        assert_envelope(await m.delete(f"/api/agents/{agent['id']}"), 403, "not_owner")
        assert_envelope(await m.patch(f"/api/agents/{agent['id']}", json={"tier": "autonomous"}),
                        403, "admin_required")
        seen = (await m.get(f"/api/agents/{agent['id']}")).json()
    assert (seen["kind"], seen["tier"], seen["description"]) == ("external", "student", None)
    async with client_for(services, admin["key"]) as a:
        assert {k["name"] for k in (await a.get("/api/keys")).json()} == {"bootstrap-admin", "cc", "cc-admin"}


async def test_a_binding_names_an_agent_of_the_keys_workspace(client: httpx.AsyncClient,
                                                              services: Services) -> None:
    acme = (await client.post("/api/workspaces", json={"name": "acme"})).json()
    acme_admin = await services.accounts.create_key(acme["id"], "acme-admin", "admin")
    async with client_for(services, acme_admin.key) as theirs:
        foreign = await external_agent(theirs, "theirs")
    before = (await client.get("/api/keys")).json()
    for ref in (foreign["id"], "theirs", "nobody", "agt_0000"):
        err = assert_envelope(await client.post("/api/keys", json={"name": "k", "agent": ref}), 404,
                              "agent_not_found")
        assert ref in err["message"]
    err = assert_envelope(await client.post("/api/keys", json={"name": "k", "agent": ""}), 422,
                          "validation_error")
    assert err["param"] == "agent"
    assert (await client.get("/api/keys")).json() == before  # nothing was created

    own = await external_agent(client, "ours")
    key = await bound_key(client, own["id"])
    (event,) = [e for e in await audit_events(services, "api_key.create") if e.target == key["id"]]
    assert event.data == {"name": "cc", "role": "member", "agent_id": own["id"]}
    async with client_for(services, acme_admin.key) as theirs:  # and acme's admin cannot bind to ours
        assert_envelope(await theirs.post("/api/keys", json={"name": "k", "agent": own["id"]}), 404,
                        "agent_not_found")


async def test_deleting_an_agent_revokes_its_keys_at_once(client: httpx.AsyncClient, services: Services) -> None:
    agent = await external_agent(client)
    bound = await bound_key(client, agent["id"])
    plain = (await client.post("/api/keys", json={"name": "plain"})).json()
    announced: list[tuple[str, str]] = []
    unsubscribe = await services.state.subscribe(lambda topic, key: announced.append((topic, key)))
    async with client_for(services, bound["key"]) as b, client_for(services, plain["key"]) as p:
        assert (await b.get("/api/agents")).status_code == 200  # cached as valid on this instance
        deleted = await client.delete(f"/api/agents/{agent['id']}")
        unsubscribe()
        assert ("api_key", bound["id"]) in announced  # the other instances drop it too
        assert ("api_key", plain["id"]) not in announced
        assert deleted.status_code == 200 and deleted.json()["kind"] == "external"
        assert_envelope(await b.get("/api/agents"), 401, "invalid_api_key")
        assert (await p.get("/api/agents")).status_code == 200
    keys = {k["name"]: k for k in (await client.get("/api/keys")).json()}
    assert keys["cc"]["revoked_at"] is not None and keys["cc"]["agent_id"] is None
    assert keys["plain"]["revoked_at"] is None
    (revoked,) = await audit_events(services, "api_key.revoke")
    assert (revoked.target, revoked.data) == (bound["id"], {"name": "cc", "reason": "agent deleted",
                                                            "agent_id": agent["id"]})
    (gone,) = await audit_events(services, "agent.delete")
    assert gone.data == {"name": "claude-code", "revoked_keys": 1}
    await external_agent(client)  # the same name again is another agent: the old key stays revoked
    assert_envelope(await client_for(services, bound["key"]).get("/api/agents"), 401, "invalid_api_key")


# --- agents: kind ----------------------------------------------------------------------------


async def test_an_external_agent_has_no_loop_here(client: httpx.AsyncClient, services: Services) -> None:
    agent = await external_agent(client)
    assert (agent["kind"], agent["instructions"], agent["model"], agent["tools"]) == ("external", "", "auto", [])
    for path, body in (("/api/sessions", {"agent_id": agent["id"]}),
                       ("/api/chat", {"agent_id": "claude-code", "message": "hi"}),
                       ("/api/chat/stream", {"agent_id": agent["id"], "message": "hi"})):
        err = assert_envelope(await client.post(path, json=body), 409, "agent_is_external")
        assert "its loop runs elsewhere; use the gateway and /mcp with its key" in err["message"], path
    assert (await client.get("/api/runs", params={"agent": agent["id"]})).json() == []
    assert (await client.get("/api/sessions")).json() == []


async def test_an_agents_kind_is_fixed_at_creation(client: httpx.AsyncClient, services: Services) -> None:
    external = await external_agent(client)
    hosted = (await client.post("/api/agents", json={"name": "helper", "instructions": "Help."})).json()
    assert hosted["kind"] == "hosted"
    for agent, other in ((external, "hosted"), (hosted, "external")):
        err = assert_envelope(await client.patch(f"/api/agents/{agent['id']}", json={"kind": other}), 409,
                              "agent_kind_immutable")
        assert f"stays {agent['kind']}" in err["message"]
        assert (await client.get(f"/api/agents/{agent['id']}")).json()["kind"] == agent["kind"]
    # A view sent back unchanged is fine: the kind is the same.
    r = await client.patch(f"/api/agents/{external['id']}", json={"kind": "external", "description": "cc"})
    assert r.status_code == 200 and (r.json()["kind"], r.json()["description"]) == ("external", "cc")
    err = assert_envelope(await client.post("/api/agents", json={"name": "x", "kind": "remote"}), 422,
                          "validation_error")
    assert err["param"] == "kind"
    created = {e.target: e.data for e in await audit_events(services, "agent.create")}
    assert created[external["id"]]["kind"] == "external" and created[hosted["id"]]["kind"] == "hosted"
    (update,) = await audit_events(services, "agent.update")
    assert update.data["changed"] == ["description"]


async def test_the_schema_names_the_new_fields(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    parts = schema["components"]["schemas"]
    assert "agent" in parts["KeyCreate"]["properties"] and "agent_id" in parts["KeyView"]["properties"]
    assert "agent_id" in parts["KeyCreated"]["properties"]
    kind = parts["AgentView"]["properties"]["kind"]
    assert kind.get("enum", kind.get("$ref")) and "kind" in parts["AgentView"]["required"]
    group_by = next(p for p in schema["paths"]["/api/usage"]["get"]["parameters"] if p["name"] == "group_by")
    assert "agent" in orjson.dumps(group_by).decode()


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveWarden]:
    server = LiveWarden(settings).start()
    yield server
    server.stop()


async def test_the_chat_websocket_refuses_an_external_agent(live: LiveWarden) -> None:
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=live.url, headers=auth) as c:
        await external_agent(c)
    async with connect(f"ws://127.0.0.1:{live.port}/api/chat/ws", additional_headers=auth) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"
        await ws.send(orjson.dumps({"message": "hi", "agent_id": "claude-code"}).decode())
        refused = orjson.loads(await ws.recv())
    assert refused["type"] == "error" and refused["error"]["code"] == "agent_is_external"
    assert refused["error"]["status"] == 409 and "runs elsewhere" in refused["error"]["message"]

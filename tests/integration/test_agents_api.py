"""``/api/agents`` and ``warden agents``: CRUD, the ready assistant, who may set what, audit."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.support.app import ADMIN_KEY, client_for
from warden.cli import app
from warden.services import Services
from warden.store.models import AuditEvent


async def audit_actions(services: Services) -> list[tuple[str, dict]]:
    async with services.db.session() as s:
        rows = (await s.execute(select(AuditEvent).where(AuditEvent.action.like("agent.%"))
                                .order_by(AuditEvent.seq))).scalars()
        return [(r.action, r.data) for r in rows]


async def test_crud_and_the_ready_assistant(services: Services) -> None:
    async with client_for(services) as c:
        listed = (await c.get("/api/agents")).json()
        assert [a["name"] for a in listed] == ["assistant"]
        created = await c.post("/api/agents", json={
            "name": "researcher", "instructions": "Dig.", "model": "openai/gpt-4o-mini",
            "fallbacks": ["auto"], "tools": ["current_time"], "max_steps": 4, "temperature": 0.2})
        assert created.status_code == 201, created.text
        a = created.json()
        assert (a["model"], a["fallbacks"], a["tools"], a["max_steps"], a["tier"], a["tier_sticky"]) == (
            "openai/gpt-4o-mini", ["auto"], ["current_time"], 4, "student", False)
        assert (await c.get(f"/api/agents/{a['id']}")).json()["name"] == "researcher"
        assert (await c.get("/api/agents/researcher")).json()["id"] == a["id"]
        dup = await c.post("/api/agents", json={"name": "researcher"})
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "agent_exists"
        patched = (await c.patch(f"/api/agents/{a['id']}", json={"instructions": "Dig deeper.",
                                                                 "fallbacks": None})).json()
        assert patched["instructions"] == "Dig deeper." and patched["fallbacks"] == []
        assert patched["model"] == "openai/gpt-4o-mini"
        assert (await c.delete(f"/api/agents/{a['id']}")).json()["id"] == a["id"]
        assert (await c.get(f"/api/agents/{a['id']}")).status_code == 404
    actions = [x for x, _ in await audit_actions(services)]
    assert actions == ["agent.create", "agent.create", "agent.update", "agent.delete"]


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"name": "bad name!"}, 422, "validation_error"),
    ({"name": "x", "max_steps": 0}, 422, "validation_error"),
    ({"name": "x", "tier": "god"}, 422, "validation_error"),
    ({"name": "x", "tools": ["no_such_tool"]}, 422, "unknown_tool"),
    ({"name": "x", "tool_levels": {"t": 7}}, 422, "validation_error"),
    ({"name": "x", "surprise": 1}, 422, "validation_error"),
])
async def test_invalid_agents_are_refused(services: Services, body: dict, status: int, code: str) -> None:
    async with client_for(services) as c:
        r = await c.post("/api/agents", json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text


async def test_only_admins_set_tiers_and_members_edit_their_own(services: Services) -> None:
    ws = await services.accounts.workspace_by_name("default")
    member = await services.accounts.create_key(ws.id, "m", "member")
    other = await services.accounts.create_key(ws.id, "o", "member")
    async with client_for(services, member.key) as m, client_for(services, other.key) as o, \
            client_for(services) as admin:
        r = await m.post("/api/agents", json={"name": "mine", "tier": "intern"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
        r = await m.post("/api/agents", json={"name": "mine", "tool_levels": {"echo": 1}})
        assert r.status_code == 403
        r = await m.post("/api/agents", json={"name": "mine", "mcp_servers": [
            {"name": "local", "transport": "stdio", "command": "cat"}]})
        assert r.status_code == 403
        mine = (await m.post("/api/agents", json={"name": "mine"})).json()
        assert mine["created_by"] == member.id
        assert (await m.patch("/api/agents/mine", json={"description": "ok"})).json()["description"] == "ok"
        assert (await o.patch("/api/agents/mine", json={"description": "no"})).status_code == 403
        assert (await o.delete("/api/agents/mine")).status_code == 403
        assert (await m.patch("/api/agents/mine", json={"tier": "autonomous"})).status_code == 403
        promoted = (await admin.patch("/api/agents/mine", json={"tier": "intern", "tier_reason": "earned"})).json()
        assert promoted["tier"] == "intern" and promoted["tier_sticky"] is True
        assert (await admin.delete("/api/agents/mine")).status_code == 200
    tier_changes = [d for a, d in await audit_actions(services) if a == "agent.tier_change"]
    assert tier_changes == [{"from": "student", "to": "intern", "manual": True, "reason": "earned"}]


async def test_admin_creates_with_a_tier_and_the_assistant_comes_back(services: Services) -> None:
    async with client_for(services) as c:
        a = (await c.post("/api/agents", json={"name": "ops", "tier": "supervised"})).json()
        assert a["tier"] == "supervised" and a["tier_sticky"] is True
        assistant = (await c.get("/api/agents/assistant")).json()
        await c.delete(f"/api/agents/{assistant['id']}")
        again = (await c.get("/api/agents/assistant")).json()
    assert again["id"] != assistant["id"] and again["tools"] == []
    assert ("agent.tier_change", {"from": "student", "to": "supervised", "manual": True, "reason": ""}) in \
        await audit_actions(services)


def test_cli_agents_create_list_show(monkeypatch: pytest.MonkeyPatch, data_dir) -> None:
    monkeypatch.setenv("WARDEN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WARDEN_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("COLUMNS", "200")  # rich would otherwise shorten names to the test's terminal
    runner = CliRunner()
    assert runner.invoke(app, ["migrate"]).exit_code == 0  # a command never creates the database itself
    r = runner.invoke(app, ["agents", "create", "helper", "--instructions", "Be brief", "--model",
                            "openai/gpt-4o-mini", "--tool", "current_time", "--tier", "intern"])
    assert r.exit_code == 0, r.output
    assert "created agent helper" in r.output
    r = runner.invoke(app, ["agents", "list"])
    assert r.exit_code == 0 and "helper" in r.output and "assistant" in r.output
    r = runner.invoke(app, ["agents", "show", "helper"])
    assert r.exit_code == 0 and '"tier": "intern"' in r.output and '"current_time"' in r.output
    r = runner.invoke(app, ["agents", "show", "ghost"])
    assert r.exit_code == 1 and "no agent 'ghost'" in r.output


async def test_patch_edge_cases(services: Services) -> None:
    async with client_for(services) as c:
        await c.post("/api/agents", json={"name": "a1", "tools": ["current_time"], "model": "auto"})
        await c.post("/api/agents", json={"name": "a2"})
        clash = await c.patch("/api/agents/a2", json={"name": "a1"})
        assert clash.status_code == 409
        cleared = (await c.patch("/api/agents/a1", json={"tools": None, "model": None, "name": "a3"})).json()
        assert (cleared["tools"], cleared["model"], cleared["name"]) == ([], "auto", "a3")
        assert (await c.patch("/api/agents/ghost", json={"description": "x"})).status_code == 404
        assert (await c.delete("/api/agents/ghost")).status_code == 404
        assert (await c.patch("/api/agents/a3", json={"max_steps": 1000})).status_code == 422


async def test_mcp_secrets_are_masked_in_views_and_kept_when_sent_back(services: Services) -> None:
    token = "Bearer tok-0123456789-wxyz"
    server = {"name": "docs", "transport": "http", "url": "https://mcp.example.com/mcp",
              "headers": {"authorization": token, "x-team": "blue", "x-empty": ""}}
    async with client_for(services) as c:
        created = await c.post("/api/agents", json={"name": "reader", "mcp_servers": [server]})
        assert created.status_code == 201, created.text
        view = created.json()["mcp_servers"][0]
        # Sent back as shown, with one header replaced by a new real value and one added.
        back = {**view, "headers": {**view["headers"], "x-team": "green-team-0001", "x-new": "[set]"}}
        refused = await c.patch("/api/agents/reader", json={"mcp_servers": [back]})
        del back["headers"]["x-new"]
        patched = await c.patch("/api/agents/reader", json={"mcp_servers": [back]})
        renamed = await c.patch("/api/agents/reader", json={"mcp_servers": [{**back, "name": "docs2"}]})
        listed = (await c.get("/api/agents")).text
    assert view["headers"] == {"authorization": "…wxyz", "x-team": "[set]", "x-empty": ""}
    assert view["url"] == server["url"] and token not in created.text and token not in listed
    assert refused.status_code == 422 and "x-new" in refused.json()["error"]["message"]
    assert patched.status_code == 200
    assert patched.json()["mcp_servers"][0]["headers"] == {"authorization": "…wxyz", "x-team": "…0001",
                                                            "x-empty": ""}
    # A masked value only stands for the secret of the same server: a renamed one has none.
    assert renamed.status_code == 422 and "no secret is stored" in renamed.json()["error"]["message"]
    stored = (await services.agents.get(created.json()["workspace_id"], "reader")).mcp_servers
    assert stored == [{**server, "headers": {"authorization": token, "x-team": "green-team-0001", "x-empty": ""},
                       "trusted": True}]
    updates = [d for a, d in await audit_actions(services) if a == "agent.update"]
    assert len(updates) == 1 and token not in str(updates)


async def test_a_patch_sending_null_restores_defaults_never_a_500(services: Services) -> None:
    """Found by schemathesis: {"max_steps": null} used to fail the NOT NULL column (500)."""
    async with client_for(services) as c:
        r = await c.post("/api/agents", json={"name": "nulls", "max_steps": 3, "instructions": "be brief"})
        assert r.status_code == 201, r.text
        r = await c.patch("/api/agents/nulls", json={"max_steps": None, "instructions": None, "name": None})
        assert r.status_code == 200, r.text
        assert (r.json()["max_steps"], r.json()["instructions"], r.json()["name"]) == (8, "", "nulls")

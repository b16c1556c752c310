"""Who may change risk levels (the agent's and an MCP server's own), and what of an MCP
server's definition a view masks: URL userinfo and query values, secret-looking stdio args."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.app import ADMIN_KEY, client_for
from warden.config import load_settings
from warden.services import Services

URL = "http://127.0.0.1:9/mcp"  # never contacted: defining an agent does not connect


@pytest.fixture
async def svc(data_dir: Path) -> AsyncIterator[Services]:
    services = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                                  egress_allow="127.0.0.1", mcp_stdio_allow=sys.executable))
    yield services
    await services.close()


async def _member(services: Services) -> str:
    async with client_for(services) as admin:
        return (await admin.post("/api/keys", json={"name": "m", "role": "member"})).json()["key"]


def _web(**fields: object) -> dict:
    return {"name": "web", "transport": "http", "url": URL, **fields}


async def test_members_cannot_set_or_change_an_mcp_servers_tool_levels(svc: Services) -> None:
    member = await _member(svc)
    async with client_for(svc) as admin, client_for(svc, member) as m:
        lowered = await m.post("/api/agents", json={"name": "a1", "mcp_servers": [_web(tool_levels={"wipe": 1})]})
        plain = await m.post("/api/agents", json={"name": "a2", "mcp_servers": [_web(tool_levels={})]})
        admin_set = await admin.patch("/api/agents/a2", json={"mcp_servers": [_web(tool_levels={"wipe": 4})]})
        shown = (await m.get("/api/agents/a2")).json()["mcp_servers"]
        sent_back = await m.patch("/api/agents/a2", json={"description": "mine", "mcp_servers": shown})
        changed = await m.patch("/api/agents/a2", json={"mcp_servers": [_web(tool_levels={"wipe": 1})]})
        dropped = await m.patch("/api/agents/a2", json={"mcp_servers": [_web()]})
        new_server = await m.patch("/api/agents/a2", json={"mcp_servers": [
            *shown, {**_web(tool_levels={"echo": 1}), "name": "web2"}]})
        stored = (await svc.agents.get(plain.json()["workspace_id"], "a2")).mcp_servers
    assert lowered.status_code == 403 and lowered.json()["error"]["code"] == "admin_required"
    assert "tool risk levels" in lowered.json()["error"]["message"]
    assert plain.status_code == 201, plain.text
    assert admin_set.status_code == 200 and admin_set.json()["mcp_servers"][0]["tool_levels"] == {"wipe": 4}
    assert sent_back.status_code == 200, sent_back.text  # unchanged levels may be sent back
    for refused in (changed, dropped, new_server):
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required", refused.text
    assert stored == [_web(tool_levels={"wipe": 4}, trusted=True)]  # the admin's entry, sent back unchanged


@pytest.mark.parametrize("body", [{"tool_levels": {}}, {"tool_levels": None}])
async def test_members_cannot_clear_the_admins_risk_overrides(svc: Services, body: dict) -> None:
    member = await _member(svc)
    async with client_for(svc) as admin, client_for(svc, member) as m:
        assert (await m.post("/api/agents", json={"name": "mine", "tools": ["current_time"]})).status_code == 201
        await admin.patch("/api/agents/mine", json={"tool_levels": {"current_time": 4}})
        r = await m.patch("/api/agents/mine", json=body)
        after = (await m.get("/api/agents/mine")).json()
        by_admin = await admin.patch("/api/agents/mine", json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
    assert after["tool_levels"] == {"current_time": 4}
    assert by_admin.status_code == 200 and by_admin.json()["tool_levels"] == {}


async def test_views_mask_url_credentials_and_secret_args_and_sent_back_keeps_them(svc: Services) -> None:
    url = "http://svc-user:url-pass-9876@127.0.0.1:9/mcp?api_key=qk-secret-5555&region=eu&flag"
    args = ["server.py", "--api-key", "argkey-777", "TOKEN_ENV=envval-888", "--token=tok-999", "-v"]
    stdio = {"name": "local", "transport": "stdio", "command": sys.executable, "args": args}
    member = await _member(svc)
    async with client_for(svc) as admin, client_for(svc, member) as m:
        created = await admin.post("/api/agents", json={"name": "ops", "mcp_servers": [_web(url=url), stdio]})
        seen_by_member = (await m.get("/api/agents/ops")).text
        shown = (await admin.get("/api/agents/ops")).json()["mcp_servers"]
        edited = [{**shown[0], "url": shown[0]["url"].replace("/mcp", "/mcp2")}, shown[1]]
        patched = await admin.patch("/api/agents/ops", json={"mcp_servers": edited})
        stored = (await svc.agents.get(created.json()["workspace_id"], "ops")).mcp_servers
        clone = await admin.post("/api/agents", json={"name": "clone", "mcp_servers": [shown[0]]})
        moved_arg = await admin.patch("/api/agents/ops", json={"mcp_servers": [
            shown[0], {**shown[1], "args": ["server.py", "TOKEN_ENV=***"]}]})
    assert created.status_code == 201, created.text
    for secret in ("svc-user", "url-pass-9876", "qk-secret-5555", "argkey-777", "envval-888", "tok-999"):
        assert secret not in seen_by_member and secret not in created.text and secret not in patched.text
    assert shown[0]["url"] == "http://***@127.0.0.1:9/mcp?api_key=***&region=***&flag"
    assert shown[1]["args"] == ["server.py", "--api-key", "***", "TOKEN_ENV=***", "--token=***", "-v"]
    assert patched.status_code == 200, patched.text
    assert stored[0]["url"] == url.replace("/mcp", "/mcp2")  # the edit applied, the secrets kept
    assert stored[1]["args"] == args
    assert clone.status_code == 422 and "masked value" in clone.json()["error"]["message"]
    assert moved_arg.status_code == 422 and "args[1]" in moved_arg.json()["error"]["message"]


async def test_entries_stored_before_the_trust_flag_are_trusted_only_from_an_admins_agent(svc: Services) -> None:
    """No migration: an entry without ``trusted`` is read as trusted when the agent's creator
    is an admin key (or a stdio server, which only an admin configures), else untrusted."""
    from sqlalchemy import update

    from warden.store.agent_models import Agent

    member = await _member(svc)
    stdio = {"name": "local", "transport": "stdio", "command": sys.executable}
    async with client_for(svc) as admin, client_for(svc, member) as m:
        ws = (await admin.post("/api/agents", json={"name": "by-admin", "mcp_servers": [_web()]})).json()
        await m.post("/api/agents", json={"name": "by-member", "mcp_servers": [_web()]})
        await admin.post("/api/agents", json={"name": "by-gone", "mcp_servers": [_web()]})
        await admin.post("/api/agents", json={"name": "by-cli", "mcp_servers": [_web()]})
        await admin.patch("/api/agents/by-member", json={"mcp_servers": [_web(), stdio]})
        async with svc.db.transaction() as s:  # as rows written before the flag existed
            await s.execute(update(Agent).values(mcp_servers=[_web()]).where(Agent.name.in_(["by-admin", "by-gone", "by-cli"])))
            await s.execute(update(Agent).values(mcp_servers=[_web(), stdio]).where(Agent.name == "by-member"))
            await s.execute(update(Agent).values(created_by="key_gone").where(Agent.name == "by-gone"))
            await s.execute(update(Agent).values(created_by="cli").where(Agent.name == "by-cli"))  # the operator
        listed = {a["name"]: [s["trusted"] for s in a["mcp_servers"]]
                  for a in (await m.get("/api/agents")).json() if a["mcp_servers"]}
        one = (await m.get("/api/agents/by-admin")).json()["mcp_servers"]
        # A member's write of an unchanged legacy entry keeps what it resolved to; the row records it.
        edited = await m.patch("/api/agents/by-member", json={"description": "x", "mcp_servers": [_web()]})
        untouched = await admin.patch("/api/agents/by-admin", json={"description": "y"})
    stored = (await svc.agents.get(ws["workspace_id"], "by-admin")).mcp_servers
    assert listed == {"by-admin": [True], "by-member": [False, True], "by-gone": [False], "by-cli": [True]}
    assert one[0]["trusted"] is True
    assert edited.status_code == 200 and edited.json()["mcp_servers"] == [_web(trusted=False)]
    assert untouched.json()["mcp_servers"] == [_web(trusted=True)] and stored == [_web(trusted=True)]

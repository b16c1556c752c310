"""``/api/mcp-servers``: a workspace's MCP servers (admin), offered to every agent of
the workspace through ``/mcp`` beside its own; secrets masked in every view."""

from __future__ import annotations

import sys

import httpx
import pytest
from sqlalchemy import select

from tests.support.app import ADMIN_KEY, LiveWarden, client_for
from tests.support.mcp_client import external_agent, mcp_session, stdio_fixture, text_of
from warden.config import load_settings
from warden.services import Services
from warden.store.models import AuditEvent

TOKEN = "sk-shared-mcp-token-9876543210"


@pytest.fixture
def settings(data_dir):
    return load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False, mcp_stdio_allow=sys.executable)


async def test_add_list_remove_with_secrets_masked(services: Services) -> None:
    async with client_for(services) as admin:
        entry = stdio_fixture("shared", env={"API_TOKEN": TOKEN})
        made = await admin.post("/api/mcp-servers", json=entry)
        assert made.status_code == 201, made.text
        assert made.json()["name"] == "shared" and TOKEN not in made.text
        assert made.json()["config"]["env"]["API_TOKEN"].endswith("3210")
        again = await admin.post("/api/mcp-servers", json=entry)
        assert again.status_code == 409 and again.json()["error"]["code"] == "mcp_server_exists"
        listed = (await admin.get("/api/mcp-servers")).json()
        assert [s["name"] for s in listed] == ["shared"] and TOKEN not in str(listed)
        assert (await admin.delete("/api/mcp-servers/shared")).status_code == 204
        gone = await admin.delete("/api/mcp-servers/shared")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "mcp_server_not_found"
        assert (await admin.get("/api/mcp-servers")).json() == []
    async with services.db.session() as s:
        events = (await s.execute(select(AuditEvent.action).where(AuditEvent.action.like("mcp_server.%"))
                                  .order_by(AuditEvent.seq))).scalars().all()
    assert list(events) == ["mcp_server.add", "mcp_server.remove"]


async def test_bad_entries_and_members_are_refused(services: Services) -> None:
    async with client_for(services) as admin:
        bad = await admin.post("/api/mcp-servers", json={"name": "x", "transport": "http"})
        assert bad.status_code == 422 and "url" in bad.json()["error"]["message"]
        not_allowed = await admin.post("/api/mcp-servers", json={"name": "sh", "transport": "stdio",
                                                                  "command": "/bin/sh"})
        assert not_allowed.status_code == 403
        assert not_allowed.json()["error"]["code"] == "mcp_command_not_allowed"
        member = (await admin.post("/api/keys", json={"name": "m", "role": "member"})).json()["key"]
    async with client_for(services, member) as client:
        refused = await client.post("/api/mcp-servers", json=stdio_fixture("shared"))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
        assert (await client.get("/api/mcp-servers")).status_code == 403


def test_workspace_servers_reach_every_agent_through_mcp(settings) -> None:
    live = LiveWarden(settings).start()
    try:
        with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
            assert admin.post("/api/mcp-servers", json=stdio_fixture("shared")).status_code == 201
            _, key = external_agent(admin, "uses-shared", tier="student", servers=[stdio_fixture("own")])

        async def run() -> tuple[set[str], str]:
            async with mcp_session(live.url, key) as mcp:
                names = {t.name for t in (await mcp.list_tools()).tools}
                return names, text_of(await mcp.call_tool("shared__echo", {"text": "from the workspace"}))

        import asyncio

        names, echoed = asyncio.run(run())
    finally:
        live.stop()
    assert {"own__echo", "shared__echo"} <= names
    assert echoed == "from the workspace"

"""The MCP reference server ``@modelcontextprotocol/server-everything`` (npm, pinned in
tests/clients/package.json) as a stdio upstream behind Warden's ``/mcp``: its tools
listed under ``everything__*``, a call forwarded, its resources and prompts passed
through read-only."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.mcp_client import external_agent, mcp_session, text_of
from warden.config import load_settings

EVERYTHING = (Path(__file__).parents[1] / "clients" / "node_modules" / "@modelcontextprotocol"
              / "server-everything" / "dist" / "index.js")
NODE = shutil.which("node")
# A third-party program runs with loopback only: Warden starts it through offline-run.
OFFLINE_RUN = str(Path(__file__).resolve().parents[3] / "shared" / "tools" / "offline-run")

pytestmark = pytest.mark.skipif(not EVERYTHING.exists() or NODE is None,
                                reason="npm ci --prefix tests/clients installs server-everything")


@pytest.fixture
def live(data_dir) -> Iterator[LiveWarden]:
    server = LiveWarden(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                      mcp_stdio_allow=OFFLINE_RUN)).start()
    yield server
    server.stop()


@pytest.fixture
def agent_key(live: LiveWarden) -> str:
    with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        # A stdio child in a loopback-only namespace, with only the SDK's safe environment.
        server = {"name": "everything", "transport": "stdio", "command": OFFLINE_RUN,
                  "args": ["--", NODE, str(EVERYTHING), "stdio"]}
        return external_agent(admin, "ref-client", tier="student", servers=[server])[1]


async def test_reference_server_tools_through_the_gateway(live: LiveWarden, agent_key: str) -> None:
    async with mcp_session(live.url, agent_key) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        echo = await mcp.call_tool("everything__echo", {"message": "ping through warden"})
        total = await mcp.call_tool("everything__get-sum", {"a": 19, "b": 23})
        # A student may not mutate: the level-3 tools are hidden, and refused if called anyway.
        refused = await mcp.call_tool("everything__toggle-simulated-logging", {})
    assert tools["everything__echo"].meta["warden/level"] == 1  # readOnlyHint of an admin's server
    assert "everything__toggle-simulated-logging" not in tools
    assert not echo.is_error and "ping through warden" in text_of(echo)
    assert not total.is_error and "42" in text_of(total)
    assert refused.is_error and "matrix:student:3" in text_of(refused)


async def test_reference_server_resources_and_prompts_pass_through(live: LiveWarden, agent_key: str) -> None:
    async with mcp_session(live.url, agent_key) as mcp:
        resources = (await mcp.list_resources()).resources
        doc = next(r for r in resources if str(r.uri).endswith("/architecture.md"))
        assert str(doc.uri).startswith("warden+everything:demo://")
        read = await mcp.read_resource(str(doc.uri))
        prompts = {p.name for p in (await mcp.list_prompts()).prompts}
        prompt = await mcp.get_prompt("everything__args-prompt", {"city": "Lyon", "state": "ARA"})
    assert read.contents and "architecture" in (getattr(read.contents[0], "text", "") or "").lower()
    assert {"everything__simple-prompt", "everything__args-prompt"} <= prompts
    assert "Lyon" in str(prompt.messages[0].content)

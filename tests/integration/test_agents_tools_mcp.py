"""MCP tools against a real MCP server (tests/support/mcp_fixture_server.py, written
with the official SDK), over stdio (a subprocess) and streamable HTTP (uvicorn on loopback)."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import uvicorn

from warden.agents.tools.egress import EgressPolicy
from warden.agents.tools.mcp import McpServerError
from warden.agents.tools.toolbox import build_toolbox
from warden.agents.tools.base import ToolContext
from warden.agents.tools.deps import ToolDeps
from warden.store.db import Database

from tests.support.mcp_fixture_server import build_server

SCRIPT = str(Path(__file__).parents[1] / "support" / "mcp_fixture_server.py")
CTX = ToolContext(workspace_id="ws", agent_id="agt", run_id="run", session_id="ses")
TOKEN = "fixture-token-123"


def stdio_server(name: str = "fx", *extra: str, **fields: object) -> dict:
    """An admin-configured (trusted) stdio server unless ``trusted=False`` is passed."""
    return {"name": name, "transport": "stdio", "command": sys.executable, "args": [SCRIPT, *extra],
            "trusted": True, **fields}


@pytest.fixture
async def deps() -> Iterator[ToolDeps]:
    db = Database("sqlite+aiosqlite:///:memory:")
    yield ToolDeps(db=db, egress=EgressPolicy.from_entries(["127.0.0.1"]), mcp_stdio_allow=(sys.executable,),
                   mcp_connect_timeout=20.0, mcp_call_timeout=5.0)
    await db.close()


class _RequireToken:
    """The HTTP server wants a header, to prove configured headers reach it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (b"x-token", TOKEN.encode()) not in scope["headers"]:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no token"})
            return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def http_mcp() -> Iterator[str]:
    app = _RequireToken(build_server().streamable_http_app())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                           access_log=False, lifespan="on", loop="asyncio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        threading.Event().wait(0.01)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/mcp"
    server.should_exit = True
    thread.join(10)


def http_server(url: str, **fields: object) -> dict:
    """An admin-configured (trusted) HTTP server unless ``trusted=False`` is passed."""
    return {"name": "web", "transport": "http", "url": url, "headers": {"x-token": TOKEN}, "trusted": True,
            **fields}


async def _exercise(box, prefix: str) -> None:
    tools = box.tools
    assert {f"{prefix}__{n}" for n in ("echo", "wipe", "add", "fail", "slow", "big")} <= set(tools)
    echo = await tools[f"{prefix}__echo"].run({"text": "héllo"}, CTX)
    assert echo.content == "héllo" and not echo.is_error
    added = await tools[f"{prefix}__add"].run({"a": 2, "b": 40}, CTX)
    assert orjson.loads(added.content) == {"sum": 42}
    failed = await tools[f"{prefix}__fail"].run({"reason": "x"}, CTX)
    assert failed.is_error and "fail" in failed.content
    bad_args = await tools[f"{prefix}__add"].run({"a": "not a number"}, CTX)
    assert bad_args.is_error
    spec = next(s for s in box.specs() if s.name == f"{prefix}__echo")
    assert spec.description == "Return the text unchanged."
    assert spec.parameters["properties"]["text"]["type"] == "string"


async def test_stdio_server_tools_levels_and_calls(deps: ToolDeps) -> None:
    box = await build_toolbox(["current_time"], [stdio_server(tool_levels={"add": 2})],
                              tool_levels={"fx__slow": 1}, deps=deps)
    try:
        levels = {name: tool.risk_level for name, tool in box.tools.items()}
        assert levels == {"current_time": 1, "fx__echo": 1, "fx__wipe": 4, "fx__add": 2,
                          "fx__fail": 3, "fx__slow": 1, "fx__big": 3}
        await _exercise(box, "fx")
        big = await box.tools["fx__big"].run({"size": 100_000}, CTX)
        assert big.content.startswith("y" * 1000) and "[truncated:" in big.content
        assert len(big.content.encode()) < 33 * 1024
    finally:
        await box.close()
    closed = await box.tools["fx__echo"].run({"text": "x"}, CTX)
    assert closed.is_error and "not connected" in closed.content


async def test_stdio_call_timeout_is_a_tool_error(deps: ToolDeps) -> None:
    quick = ToolDeps(db=deps.db, mcp_stdio_allow=deps.mcp_stdio_allow, mcp_call_timeout=0.5)
    async with await build_toolbox([], [stdio_server()], deps=quick) as box:
        result = await box.tools["fx__slow"].run({"seconds": 10}, CTX)
        assert result.is_error and "did not answer within 0.5 s" in result.content
        assert (await box.tools["fx__echo"].run({"text": "still alive"}, CTX)).content == "still alive"


async def test_stdio_refused_when_not_allow_listed(deps: ToolDeps) -> None:
    strict = ToolDeps(db=deps.db, mcp_stdio_allow=("npx",))
    with pytest.raises(McpServerError, match="not on WARDEN_MCP_STDIO_ALLOW") as exc:
        await build_toolbox([], [stdio_server()], deps=strict)
    assert exc.value.code == "mcp_command_not_allowed" and exc.value.status == 403


async def test_stdio_server_that_crashes_at_start(deps: ToolDeps) -> None:
    with pytest.raises(McpServerError, match="'fx' is unavailable") as exc:
        await build_toolbox([], [stdio_server("fx", "--crash")], deps=deps)
    assert "fixture refuses to start: bad configuration" in exc.value.message  # its stderr, quoted


async def test_stdio_server_that_hangs_times_out(deps: ToolDeps) -> None:
    quick = ToolDeps(db=deps.db, mcp_stdio_allow=deps.mcp_stdio_allow, mcp_connect_timeout=1.0)
    with pytest.raises(McpServerError, match="no answer within 1 s"):
        await build_toolbox([], [stdio_server("fx", "--hang")], deps=quick)


async def test_one_failing_server_closes_the_others(deps: ToolDeps, tmp_path: Path) -> None:
    missing = {"name": "gone", "transport": "stdio", "command": str(tmp_path / "nope")}
    allow = ToolDeps(db=deps.db, mcp_stdio_allow=(sys.executable, str(tmp_path / "nope")))
    with pytest.raises(McpServerError, match="'gone' is unavailable"):
        await build_toolbox([], [stdio_server(), missing], deps=allow)


async def test_http_server_tools_and_calls(deps: ToolDeps, http_mcp: str) -> None:
    async with await build_toolbox([], [http_server(http_mcp, tool_levels={"wipe": 3})], deps=deps) as box:
        assert box.tools["web__echo"].risk_level == 1
        assert box.tools["web__wipe"].risk_level == 3  # admin override of destructiveHint
        assert box.tools["web__add"].risk_level == 3
        await _exercise(box, "web")


async def test_untrusted_server_annotations_may_only_raise_risk(deps: ToolDeps, http_mcp: str) -> None:
    """A server no admin configured: readOnlyHint is ignored (its tools are level 3 at
    least), destructiveHint still gives 4, and admin overrides still apply."""
    untrusted = http_server(http_mcp, trusted=False)
    async with await build_toolbox([], [untrusted], deps=deps) as box:
        levels = {name: tool.risk_level for name, tool in box.tools.items()}
        assert (await box.tools["web__echo"].run({"text": "a"}, CTX)).content == "a"
    assert levels == {"web__echo": 3, "web__wipe": 4, "web__add": 3, "web__fail": 3, "web__slow": 3,
                      "web__big": 3}
    unflagged = {k: v for k, v in untrusted.items() if k != "trusted"}  # no flag: untrusted
    overridden = http_server(http_mcp, trusted=False, tool_levels={"echo": 1})
    async with await build_toolbox([], [unflagged], deps=deps) as box_a, \
            await build_toolbox([], [overridden], tool_levels={"web__add": 2}, deps=deps) as box_b:
        assert box_a.tools["web__echo"].risk_level == 3
        assert box_b.tools["web__echo"].risk_level == 1 and box_b.tools["web__add"].risk_level == 2


async def test_stdio_and_http_together(deps: ToolDeps, http_mcp: str) -> None:
    async with await build_toolbox([], [stdio_server(), http_server(http_mcp)], deps=deps) as box:
        assert (await box.tools["fx__echo"].run({"text": "a"}, CTX)).content == "a"
        assert (await box.tools["web__echo"].run({"text": "b"}, CTX)).content == "b"


async def test_http_server_on_loopback_needs_the_egress_allow_list(deps: ToolDeps, http_mcp: str) -> None:
    closed = ToolDeps(db=deps.db)  # default policy: loopback refused
    with pytest.raises(McpServerError, match="127.0.0.1, a loopback address"):
        await build_toolbox([], [http_server(http_mcp)], deps=closed)


async def test_http_server_errors_are_clear(deps: ToolDeps, http_mcp: str) -> None:
    with pytest.raises(McpServerError, match="'web' is unavailable"):
        await build_toolbox([], [{"name": "web", "transport": "http", "url": http_mcp}], deps=deps)  # no token
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(McpServerError, match="'web' is unavailable"):
        await build_toolbox([], [http_server(f"http://127.0.0.1:{port}/mcp")], deps=deps)


async def test_agent_views_mask_mcp_secrets_and_a_masked_patch_keeps_them(data_dir: Path, http_mcp: str) -> None:
    """Views show header/env names with masked values; sending a view back keeps the real
    secrets (a run's MCP call still carries the real token); a masked value with nothing
    stored behind it is refused."""
    from tests.support.agents import connect_provider

    from tests.conftest import ADMIN_KEY, client_for
    from warden.config import load_settings
    from warden.services import Services
    from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

    secret_env = "sk-live-abcdefgh1234"
    services = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                                  egress_allow="127.0.0.1", mcp_stdio_allow=sys.executable))
    try:
        async with UpstreamServer("openai") as up, client_for(services) as c:
            await connect_provider(services, up)
            servers = [http_server(http_mcp), stdio_server("fx", env={"FIXTURE_KEY": secret_env, "MODE": "x1"})]
            created = await c.post("/api/agents", json={"name": "mcp-user", "mcp_servers": servers})
            assert created.status_code == 201, created.text
            shown = (await c.get("/api/agents/mcp-user")).json()
            listed = (await c.get("/api/agents")).text
            # Send the view back with a change elsewhere and one new env value.
            sent_back = [dict(s) for s in shown["mcp_servers"]]
            sent_back[1]["env"] = {**sent_back[1]["env"], "EXTRA": "plain-new-value-1"}
            patched = await c.patch("/api/agents/mcp-user", json={"description": "edited",
                                                                  "mcp_servers": sent_back})
            stored = (await services.agents.get(shown["workspace_id"], "mcp-user")).mcp_servers
            up.enqueue(Behaviour(tool_calls=[SimToolCall("web__echo", {"text": "through"})]), Behaviour(text="ok"))
            run = await c.post("/api/chat", json={"agent_id": "mcp-user", "message": "use the web echo"})
            bad_patch = await c.patch("/api/agents/mcp-user", json={"mcp_servers": [
                {**sent_back[0], "headers": {"x-token": "…-123", "x-other": "[set]"}}]})
            bad_create = await c.post("/api/agents", json={"name": "clone", "mcp_servers": shown["mcp_servers"]})
            audit = (await c.get("/api/audit", params={"action": "agent."})).text
    finally:
        await services.close()
    for text in (created.text, listed, patched.text, audit):
        assert TOKEN not in text and secret_env not in text
    assert shown["mcp_servers"][0]["headers"] == {"x-token": "…-123"}
    assert shown["mcp_servers"][1]["env"] == {"FIXTURE_KEY": "…1234", "MODE": "[set]"}
    assert shown["mcp_servers"][0]["url"] == http_mcp  # only headers and env are masked
    assert patched.status_code == 200 and patched.json()["description"] == "edited"
    assert patched.json()["mcp_servers"][1]["env"] == {"FIXTURE_KEY": "…1234", "MODE": "[set]", "EXTRA": "…ue-1"}
    assert stored[0]["headers"] == {"x-token": TOKEN}
    assert stored[1]["env"] == {"FIXTURE_KEY": secret_env, "MODE": "x1", "EXTRA": "plain-new-value-1"}
    assert run.status_code == 200 and run.json()["status"] == "completed", run.text
    tool_result = next(m for m in up.requests[1].body["messages"] if m["role"] == "tool")["content"]
    assert tool_result == "through"  # the MCP server accepted the real token
    assert bad_patch.status_code == 422 and "x-other" in bad_patch.json()["error"]["message"]
    assert bad_create.status_code == 422 and "masked value" in bad_create.json()["error"]["message"]


# --- who configured a server decides whether its annotations may lower risk ------------------


@pytest.fixture
async def trust_env(data_dir: Path, http_mcp: str):
    """Warden with a loopback model provider, an admin client and a member client."""
    from tests.support.agents import connect_provider

    from tests.conftest import ADMIN_KEY, client_for
    from warden.config import load_settings
    from warden.services import Services
    from warden.testing.upstream import UpstreamServer

    services = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                                  egress_allow="127.0.0.1"))
    try:
        async with UpstreamServer("openai") as up:
            ws = await connect_provider(services, up)
            member = await services.accounts.create_key(ws, "m", "member")
            async with client_for(services) as admin, client_for(services, member.key) as m:
                yield services, up, admin, m
    finally:
        await services.close()


async def _call_echo(up, client, agent: str, server: str = "web", *, pauses: bool = False) -> dict:
    """One run in which the model calls ``<server>__echo`` and then (unless the run pauses
    for approval) answers; the call's level and decision and how the run ended."""
    from tests.support.agents import stream_chat

    from warden.testing.upstream import Behaviour, SimToolCall

    up.enqueue(Behaviour(tool_calls=[SimToolCall(f"{server}__echo", {"text": "through"})]))
    if not pauses:
        up.enqueue(Behaviour(text="ok"))
    events = await stream_chat(client, {"agent_id": agent, "message": "echo"})
    call = next(e for e in events if e["type"] == "tool.call")
    return {"level": call["risk_level"], "decision": call["decision"], "end": events[-1]["type"]}


async def test_a_members_server_cannot_declare_its_tools_read_only(trust_env, http_mcp: str) -> None:
    services, up, admin, m = trust_env
    # The member claims trust; it is ignored, not stored.
    created = await m.post("/api/agents", json={"name": "mine", "mcp_servers": [http_server(http_mcp)]})
    assert created.status_code == 201, created.text
    assert created.json()["mcp_servers"][0]["trusted"] is False
    as_student = await _call_echo(up, m, "mine")
    await admin.patch("/api/agents/mine", json={"tier": "intern"})
    as_intern = await _call_echo(up, m, "mine", pauses=True)
    admins = await admin.post("/api/agents", json={"name": "admins", "mcp_servers": [http_server(http_mcp)]})
    on_admins_server = await _call_echo(up, admin, "admins")
    stored = (await services.agents.get(created.json()["workspace_id"], "mine")).mcp_servers
    assert as_student == {"level": 3, "decision": "deny", "end": "run.completed"}
    assert as_intern == {"level": 3, "decision": "approve", "end": "run.paused"}
    assert admins.json()["mcp_servers"][0]["trusted"] is True
    assert on_admins_server == {"level": 1, "decision": "allow", "end": "run.completed"}
    assert stored[0]["trusted"] is False and stored[0]["headers"] == {"x-token": TOKEN}


async def test_admin_edits_trust_and_member_changes_or_renames_untrust(trust_env, http_mcp: str) -> None:
    _, up, admin, m = trust_env
    plain = {k: v for k, v in http_server(http_mcp).items() if k != "trusted"}
    await m.post("/api/agents", json={"name": "mine", "mcp_servers": [plain]})
    shown = (await m.get("/api/agents/mine")).json()["mcp_servers"]
    # An admin sending the view back as is vouches for nothing; saying trusted: true does.
    as_shown = await admin.patch("/api/agents/mine", json={"mcp_servers": shown})
    retrusted = await admin.patch("/api/agents/mine", json={"mcp_servers": [{**shown[0], "trusted": True}]})
    after_admin = await _call_echo(up, m, "mine")
    # A member sending the trusted entry back unchanged (with an edit elsewhere) keeps it trusted.
    shown = (await m.get("/api/agents/mine")).json()["mcp_servers"]
    kept = await m.patch("/api/agents/mine", json={"description": "mine", "mcp_servers": shown})
    # Renaming sheds the admin's per-tool overrides keyed by "web__…": the renamed entry is untrusted.
    renamed = await m.patch("/api/agents/mine", json={"mcp_servers": [{**plain, "name": "web2", "trusted": True}]})
    after_rename = await _call_echo(up, m, "mine", server="web2")
    # Back under the old name, but changed (another header): still untrusted.
    retrusted_again = await admin.patch("/api/agents/mine", json={"mcp_servers": [plain]})
    changed = await m.patch("/api/agents/mine", json={"mcp_servers": [
        {**plain, "headers": {**plain["headers"], "x-extra": "1"}, "trusted": True}]})
    # An admin may keep a server untrusted on purpose.
    kept_untrusted = await admin.patch("/api/agents/mine", json={"mcp_servers": [{**plain, "trusted": False}]})
    audit = (await admin.get("/api/audit", params={"action": "agent.update"})).json()["events"]
    assert as_shown.status_code == 200 and as_shown.json()["mcp_servers"][0]["trusted"] is False
    assert retrusted.status_code == 200 and retrusted.json()["mcp_servers"][0]["trusted"] is True
    assert after_admin == {"level": 1, "decision": "allow", "end": "run.completed"}
    assert kept.status_code == 200 and kept.json()["mcp_servers"][0]["trusted"] is True
    assert renamed.status_code == 200 and renamed.json()["mcp_servers"][0]["trusted"] is False
    assert after_rename == {"level": 3, "decision": "deny", "end": "run.completed"}
    assert retrusted_again.json()["mcp_servers"][0]["trusted"] is True
    assert changed.status_code == 200 and changed.json()["mcp_servers"][0]["trusted"] is False
    assert kept_untrusted.json()["mcp_servers"][0]["trusted"] is False
    untrusted = [e["data"]["untrusted_mcp_servers"] for e in audit]
    assert untrusted == [["web"], [], [], ["web2"], [], ["web"], ["web"]], audit

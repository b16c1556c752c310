"""Warden's ``/mcp`` with the official Python ``mcp`` client, against a live Warden
whose agents have a real upstream MCP server (tests/support/mcp_fixture_server.py,
over stdio): list, allowed call, deny, held call approved or rejected over the API,
hold timeout then the same call once, upstream crash, authentication."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support.app import ADMIN_KEY, LiveWarden, client_for
from tests.support.mcp_client import external_agent, mcp_session, pending_approval, stdio_fixture, text_of
from warden.app import create_app
from warden.config import Settings, load_settings
from warden.services import Services


@pytest.fixture
def live(data_dir) -> Iterator[LiveWarden]:
    settings: Settings = load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                       mcp_stdio_allow=sys.executable)
    server = LiveWarden(settings).start()
    yield server
    server.stop()


@pytest.fixture
def admin(live: LiveWarden) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as client:
        yield client


def _fixture_agent(admin: httpx.Client, name: str = "outside", **kw) -> tuple[dict, str]:
    return external_agent(admin, name, servers=[stdio_fixture("fx", "--with-crash")], **kw)


async def test_list_shows_levels_and_hides_denied_tools(live: LiveWarden, admin: httpx.Client) -> None:
    agent, key = _fixture_agent(admin, tool_levels={"fx__big": 1})
    async with mcp_session(live.url, key) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
    # An intern: level 1 allowed, 3 needs approval, 4 (wipe: destructiveHint) denied, so hidden.
    assert "fx__wipe" not in tools
    assert {"fx__echo", "fx__add", "fx__slow", "fx__big", "fx__crash"} <= set(tools)
    echo, add, big = tools["fx__echo"], tools["fx__add"], tools["fx__big"]
    assert echo.description.startswith("[level 1 read, allowed]")
    assert echo.meta == {"warden/level": 1, "warden/decision": "allow", "warden/server": "fx"}
    assert add.description.startswith("[level 3 mutate, needs approval]")
    assert add.meta["warden/decision"] == "approve"
    assert big.meta["warden/level"] == 1  # the admin's override wins over the annotations
    assert echo.input_schema["properties"]["text"]["type"] == "string"
    assert agent["id"]


async def test_allowed_call_is_forwarded_and_recorded(live: LiveWarden, admin: httpx.Client) -> None:
    agent, key = _fixture_agent(admin)
    async with mcp_session(live.url, key) as mcp:
        first = await mcp.call_tool("fx__echo", {"text": "hello through warden"})
        second = await mcp.call_tool("fx__echo", {"text": "again"})
    assert not first.is_error and text_of(first) == "hello through warden"
    assert text_of(second) == "again"
    # One upstream process served both requests (the pool), not one per request.
    assert len(live.services.mcp_gateway.pool) == 1


async def test_denied_call_is_a_readable_tool_error(live: LiveWarden, admin: httpx.Client) -> None:
    _, key = _fixture_agent(admin)
    async with mcp_session(live.url, key) as mcp:
        result = await mcp.call_tool("fx__wipe", {"target": "prod"})
        unknown = await mcp.call_tool("nope__tool", {})
    assert result.is_error
    text = text_of(result)
    assert "Warden refused this call" in text and "matrix:intern:4" in text and "denied" in text
    assert unknown.is_error and "no tool named 'nope__tool'" in text_of(unknown)


async def test_held_call_approved_over_the_api_then_runs(live: LiveWarden, admin: httpx.Client) -> None:
    agent, key = _fixture_agent(admin)
    progress: list[tuple[float, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    async with mcp_session(live.url, key) as mcp:
        call = asyncio.create_task(mcp.call_tool("fx__add", {"a": 2, "b": 3}, progress_callback=on_progress))
        approval = await asyncio.to_thread(pending_approval, admin, agent["id"])
        assert approval["tool"] == "fx__add" and approval["arguments"] == {"a": 2, "b": 3}
        assert not call.done()  # held: the MCP request is still open
        await asyncio.sleep(6)  # long enough for a progress notification
        decided = await asyncio.to_thread(admin.post, f"/api/approvals/{approval['id']}",
                                          json={"decision": "approve", "note": "fine"})
        assert decided.status_code == 200, decided.text
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"sum": 5} or orjson.loads(text_of(result)) == {"sum": 5}
    assert progress and approval["id"] in (progress[-1][1] or "")


async def test_held_call_rejected_comes_back_with_the_note(live: LiveWarden, admin: httpx.Client) -> None:
    agent, key = _fixture_agent(admin)
    async with mcp_session(live.url, key) as mcp:
        call = asyncio.create_task(mcp.call_tool("fx__add", {"a": 1, "b": 1}))
        approval = await asyncio.to_thread(pending_approval, admin, agent["id"])
        await asyncio.to_thread(admin.post, f"/api/approvals/{approval['id']}",
                                json={"decision": "reject", "note": "not on a Friday"})
        result = await asyncio.wait_for(call, 30)
    assert result.is_error
    assert "Warden refused this call" in text_of(result) and "not on a Friday" in text_of(result)


async def test_hold_timeout_then_the_same_call_runs_once(live: LiveWarden, admin: httpx.Client) -> None:
    agent, key = _fixture_agent(admin)
    live.services.mcp_gateway.hold_s = 1.0
    async with mcp_session(live.url, key) as mcp:
        held = await mcp.call_tool("fx__add", {"a": 20, "b": 22})
        assert held.is_error
        approval = await asyncio.to_thread(pending_approval, admin, agent["id"])
        assert approval["id"] in text_of(held) and "NOT run" in text_of(held)
        await asyncio.to_thread(admin.post, f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        retried = await mcp.call_tool("fx__add", {"a": 20, "b": 22})
        assert not retried.is_error, text_of(retried)
        assert "42" in text_of(retried)
        # The approval was for one run: a third identical call is held again.
        again = await mcp.call_tool("fx__add", {"a": 20, "b": 22})
    assert again.is_error and "NOT run" in text_of(again) and approval["id"] not in text_of(again)


async def test_upstream_crash_is_a_tool_error_and_the_gateway_reconnects(live: LiveWarden,
                                                                          admin: httpx.Client) -> None:
    _, key = _fixture_agent(admin)
    async with mcp_session(live.url, key) as mcp:
        assert text_of(await mcp.call_tool("fx__echo", {"text": "before"})) == "before"
        crashed = await mcp.call_tool("fx__crash", {"code": 3})
        assert crashed.is_error
        assert "upstream MCP server 'fx'" in text_of(crashed) and "reconnects" in text_of(crashed)
        after = await mcp.call_tool("fx__echo", {"text": "after"})
    assert not after.is_error and text_of(after) == "after"


async def test_unreachable_upstream_leaves_the_others_listed(live: LiveWarden, admin: httpx.Client) -> None:
    _, key = external_agent(admin, "half", servers=[stdio_fixture("fx"), stdio_fixture("bad", "--crash")])
    async with mcp_session(live.url, key) as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        result = await mcp.call_tool("bad__echo", {"text": "x"})
    assert "fx__echo" in names and not any(n.startswith("bad__") for n in names)
    assert result.is_error and "no tool named 'bad__echo'" in text_of(result)


BODY = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
HEADERS = {"accept": "application/json, text/event-stream"}


def test_mcp_needs_a_key(live: LiveWarden) -> None:
    missing = httpx.post(f"{live.url}/mcp", json=BODY, headers=HEADERS)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    bad = httpx.post(f"{live.url}/mcp", json=BODY, headers={**HEADERS, "authorization": "Bearer wk-nope"})
    assert bad.status_code == 401 and "wk-nope" not in bad.text
    assert bad.json()["error"]["code"] == "invalid_api_key"


def test_mcp_needs_an_agent(live: LiveWarden, admin: httpx.Client) -> None:
    body, headers = BODY, HEADERS
    # A member key bound to no agent has no agent to act as.
    member = admin.post("/api/keys", json={"name": "plain", "role": "member"}).json()["key"]
    unbound = httpx.post(f"{live.url}/mcp", json=body, headers={**headers, "authorization": f"Bearer {member}"})
    assert unbound.status_code == 403 and unbound.json()["error"]["code"] == "agent_key_required"


def test_answers_in_json_unless_progress_is_asked_for(live: LiveWarden, admin: httpx.Client) -> None:
    _, key = _fixture_agent(admin)
    headers = {**HEADERS, "authorization": f"Bearer {key}", "mcp-protocol-version": "2025-06-18"}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "fx__echo", "arguments": {"text": "j"}}}
    plain = httpx.post(f"{live.url}/mcp", json=call, headers=headers, timeout=60)
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/json")
    assert plain.json()["result"]["content"][0]["text"] == "j"
    # A progress token: the SSE stream, which can carry the notifications.
    progress = {**call, "params": {**call["params"], "_meta": {"progressToken": "p1"}}}
    streamed = httpx.post(f"{live.url}/mcp", json=progress, headers=headers, timeout=60)
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert '"text":"j"' in streamed.text.replace(" ", "")
    # A call the gate may hold (level 3 for an intern): SSE, whose pings keep a long hold alive.
    held = {**call, "params": {"name": "fx__add", "arguments": {"a": 1, "b": 2}}}
    with httpx.stream("POST", f"{live.url}/mcp", json=held, headers=headers, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    # A client that does not take JSON, a batch, a body that does not parse: the SSE transport's answers.
    sse_only = httpx.post(f"{live.url}/mcp", json=call, headers={**headers, "accept": "text/event-stream"})
    assert sse_only.status_code == 406
    batch = httpx.post(f"{live.url}/mcp", json=[call], headers=headers)
    assert batch.status_code == 400 and "Traceback" not in batch.text
    broken = httpx.post(f"{live.url}/mcp", content=b"{nope", headers={**headers, "content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == -32700


async def test_a_client_gone_before_its_mcp_body_gets_no_answer(services: Services) -> None:
    """``/mcp`` reads a POST's body to choose JSON or SSE: a client that left meanwhile is
    answered nothing (and nothing is logged as a failure)."""
    async with client_for(services) as admin:
        agent = (await admin.post("/api/agents", json={"name": "gone", "kind": "external"})).json()
        key = (await admin.post("/api/keys", json={"name": "gone", "agent": agent["id"]})).json()["key"]
    app = create_app(services=services)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/mcp", "raw_path": b"/mcp", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"warden.test"), (b"authorization", f"Bearer {key}".encode()),
                         (b"content-type", b"application/json"), (b"accept", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("warden.test", 80)}
    await app(scope, receive, send)
    assert not [m for m in sent if m["type"] == "http.response.start"]


def test_a_call_whose_catalog_fails_is_answered_the_mcp_way(live: LiveWarden, admin: httpx.Client) -> None:
    """``/mcp`` reads the catalog to choose JSON or SSE; when that fails (an entry stored by
    an older version that no longer parses) the handler meets it again and answers it."""
    import sqlite3

    agent, key = _fixture_agent(admin, name="broken")
    with sqlite3.connect(live.settings.data_dir / "warden.db") as db:
        db.execute("UPDATE agents SET mcp_servers = ? WHERE id = ?", ('[{"name": 7}]', agent["id"]))
    assert live.services is not None
    live.services.gate.agents.forget(agent["id"])
    headers = {**HEADERS, "authorization": f"Bearer {key}", "mcp-protocol-version": "2025-06-18"}
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "fx__echo", "arguments": {}}}
    r = httpx.post(f"{live.url}/mcp", json=call, headers=headers, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "mcp_servers[0]" in r.text and "Traceback" not in r.text

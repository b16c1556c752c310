"""The console's runs pages and playground over the real services: a run's timeline
replayed from stored events (model calls with cost, the tool call, its decision and
who approved it, the reply), a member kept to their own runs, and a playground
turn streamed (SSE) and sent without script, both through ``Runs``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests.support.agents import parse_sse, stream_chat, types_of
from tests.support.app import client_for
from tests.support.console import console_client
from tests.support.governance import follow, make_agent, setup_echo

from warden.services import Services
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def _approved_run(services: Services, up: UpstreamServer) -> str:
    """A run of "mailer" that asked for echo (level 2), was approved with a note, and completed."""
    await setup_echo(services, up)
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "mail", "password": "pw-0123456789"})]),
               Behaviour(text="all sent"))
    async with client_for(services) as admin:
        agent = await make_agent(admin, "mailer", tool_levels={"echo": 2})
        events = await stream_chat(admin, {"agent_id": agent["id"], "message": "send it"})
        assert types_of(events)[-1] == "run.paused"
        run_id = events[0]["run_id"]
        approval = (await admin.get("/api/approvals", params={"status": "pending"})).json()[0]
        await admin.post(f"/api/approvals/{approval['id']}", json={"decision": "approve", "note": "fine by me"})
        await asyncio.wait_for(follow(admin, run_id), 30)
    return run_id


async def test_a_runs_timeline_shows_model_calls_tool_calls_approver_and_reply(
        services: Services, up: UpstreamServer) -> None:
    run_id = await _approved_run(services, up)
    async with console_client(services) as (c, _):
        listing = await c.get("/ui/runs")
        page = await c.get(f"/ui/runs/{run_id}")
    assert f'data-run="{run_id}"' in listing.text and "mailer" in listing.text
    assert page.status_code == 200 and 'id="run-status">completed' in page.text
    model_calls = page.text.split('id="model-calls"', 1)[1].split("</table>", 1)[0]
    assert model_calls.count("<tr><td>") == 2 and "gpt-4o-mini" in model_calls and "$0.0000" in model_calls
    assert 'data-tool="echo"' in page.text and "level 2" in page.text and ">approve<" in page.text
    assert "approved by <strong>key:" in page.text and "fine by me" in page.text
    assert "pw-0123456789" not in page.text and "&#34;***&#34;" in page.text
    timeline = page.text.split('id="timeline"', 1)[1]
    kinds = [part.split('"', 1)[0] for part in timeline.split('data-kind="')[1:]]
    assert kinds[0] == "run.started" and kinds[-1] == "run.completed"
    assert {"tool.call", "approval.required", "run.paused", "tool.result", "message"} <= set(kinds)
    assert "all sent" in timeline


async def test_a_member_sees_only_their_own_runs(services: Services, up: UpstreamServer) -> None:
    run_id = await _approved_run(services, up)
    ws = (await services.accounts.workspace_by_name("default")).id
    member = await services.accounts.create_key(ws, "member", "member")
    async with console_client(services, member.key) as (c, _):
        listing = await c.get("/ui/runs")
        page = await c.get(f"/ui/runs/{run_id}")
    assert "No run yet." in listing.text and run_id not in listing.text
    assert page.status_code == 404 and 'data-code="run_not_found"' in page.text


async def test_the_playground_streams_a_reply_and_works_without_script(services: Services, up: UpstreamServer) -> None:
    await setup_echo(services, up)
    async with client_for(services) as admin:
        agent = await make_agent(admin, "helper")
    up.enqueue(Behaviour(text="hello from the stream"), Behaviour(text="hello without script"))
    async with console_client(services) as (c, csrf):
        page = await c.get("/ui/playground")
        async with c.stream("POST", "/ui/playground/stream", data={"message": "hi", "agent": agent["id"]},
                            headers={"x-csrf-token": csrf}) as resp:
            body = await resp.aread()
        plain = await c.post("/ui/playground", data={"csrf_token": csrf, "message": "again", "agent": agent["id"]})
        no_csrf = await c.post("/ui/playground/stream", data={"message": "hi", "agent": agent["id"]})
        unknown = await c.post("/ui/playground/stream", data={"message": "hi", "agent": "nobody"},
                               headers={"x-csrf-token": csrf})
    assert 'src="/ui/static/playground.js' in page.text and "helper" in page.text and "<script>" not in page.text
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(body)
    assert types_of(events)[0] == "run.started" and types_of(events)[-1] == "run.completed"
    assert "".join(e.get("text", "") for e in events if e["type"] == "message.delta") == "hello from the stream"
    assert plain.status_code == 200 and "hello without script" in plain.text and "/ui/runs/run_" in plain.text
    assert no_csrf.status_code == 403
    assert unknown.status_code == 404 and "error-page" in unknown.text


async def test_the_playground_script_is_served_with_the_console_assets(services: Services) -> None:
    async with client_for(services, key=None) as c:
        script = await c.get("/ui/static/playground.js")
    assert script.status_code == 200 and "message.delta" in script.text and "text/event-stream" in script.text

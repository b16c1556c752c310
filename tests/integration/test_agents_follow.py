"""Following a run that paused for an approval, over a real server: a WebSocket
client re-attaches with a ``follow`` message and sees the resumed run to its end;
an SSE follower of a quiet run gets keep-alive comments."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import orjson
import pytest
from tests.support.agents import EchoTool, connect_provider, parse_sse, types_of
from websockets.asyncio.client import connect

from tests.support.app import ADMIN_KEY, LiveWarden
from warden.config import Settings
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
ENDS = ("run.completed", "run.failed", "run.cancelled", "run.paused", "error", "follow.ended")


@pytest.fixture
def up():
    with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
def live(settings: Settings, up: UpstreamServer):
    server = LiveWarden(settings).start()
    server.call(connect_provider(server.services, up))
    server.echo = EchoTool()
    server.services.tools.register(server.echo)
    yield server
    server.stop()


async def recv_until_end(ws) -> list[dict]:
    events = []
    while True:
        event = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        events.append(event)
        if event["type"] in ENDS:
            return events


async def send(ws, body: dict) -> None:
    await ws.send(orjson.dumps(body).decode())


async def drafting_agent(c: httpx.AsyncClient) -> dict:
    r = await c.post("/api/agents", json={"name": "drafter", "tools": ["echo"], "tool_levels": {"echo": 2}})
    assert r.status_code == 201, r.text
    return r.json()  # student x draft: every echo call waits for a human


async def approve(c: httpx.AsyncClient, run_id: str) -> dict:
    pending = (await c.get("/api/approvals", params={"status": "pending", "run_id": run_id})).json()
    assert len(pending) == 1, pending
    r = await c.post(f"/api/approvals/{pending[0]['id']}", json={"decision": "approve"})
    assert r.status_code == 200, r.text
    return r.json()


async def test_websocket_follow_sees_the_resumed_run_to_its_end(live: LiveWarden, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "memo"})]), Behaviour(text="memo sent"),
               Behaviour(text="next turn"))
    async with httpx.AsyncClient(base_url=live.url, headers=AUTH) as c, \
            connect(f"ws://127.0.0.1:{live.port}/api/chat/ws", additional_headers=AUTH) as ws:
        agent = await drafting_agent(c)
        assert orjson.loads(await ws.recv())["type"] == "ready"
        await send(ws, {"agent_id": agent["id"], "message": "send the memo"})
        turn = await recv_until_end(ws)
        paused = turn[-1]
        assert types_of(turn) == ["run.started", "tool.call", "approval.required", "run.paused"]
        await send(ws, {"type": "follow", "run_id": paused["run_id"], "after": paused["seq"]})
        # While following, the socket refuses a new turn but keeps following.
        await send(ws, {"message": "are you there?"})
        busy = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        decision = await approve(c, paused["run_id"])  # another client decides
        resumed = await recv_until_end(ws)
        ended = await recv_until_end(ws)
        # The socket takes turns again once the followed run ended.
        await send(ws, {"session_id": paused["session_id"], "message": "thanks"})
        after = await recv_until_end(ws)
    assert busy["type"] == "error" and busy["error"]["code"] == "turn_in_progress"
    assert decision["status"] == "approved"
    assert types_of(resumed) == ["tool.result", "message.delta", "message.delta", "run.completed"]
    assert ended == [{"type": "follow.ended", "run_id": paused["run_id"], "reason": "run_ended"}]
    assert [e["seq"] for e in resumed] == [paused["seq"] + i for i in range(1, 5)]
    assert {e["run_id"] for e in resumed} == {paused["run_id"]}
    assert resumed[0]["content"] == '{"echo":{"text":"memo"}}'
    assert resumed[-1]["message"]["content"] == "memo sent"
    assert live.echo.calls == [{"text": "memo"}]
    assert types_of(after)[-1] == "run.completed" and after[0]["run_id"] != paused["run_id"]


async def test_websocket_follow_replays_unfollows_and_refuses_other_runs(live: LiveWarden,
                                                                          up: UpstreamServer) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "a"})]), Behaviour(text="other"))
    async with httpx.AsyncClient(base_url=live.url, headers=AUTH) as c, \
            connect(f"ws://127.0.0.1:{live.port}/api/chat/ws", additional_headers=AUTH) as ws:
        agent = await drafting_agent(c)
        await ws.recv()
        await send(ws, {"agent_id": agent["id"], "message": "draft"})
        paused = (await recv_until_end(ws))[-1]
        # From the start: the stored events are replayed, then the follow waits for the human.
        await send(ws, {"type": "follow", "run_id": paused["run_id"]})
        replayed = [orjson.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(4)]
        await send(ws, {"type": "unfollow"})
        unfollowed = await recv_until_end(ws)
        await send(ws, {"message": "something else"})  # a new session: the socket is free again
        other = await recv_until_end(ws)
        await send(ws, {"type": "unfollow"})
        stray = await recv_until_end(ws)
        await send(ws, {"type": "follow", "run_id": "run_nobody"})
        missing = await recv_until_end(ws)
        await send(ws, {"type": "follow", "run_id": paused["run_id"], "after": -1})
        bad_after = await recv_until_end(ws)
        run = (await c.get(f"/api/runs/{paused['run_id']}")).json()
    assert types_of(replayed) == ["run.started", "tool.call", "approval.required", "run.paused"]
    assert unfollowed == [{"type": "follow.ended", "run_id": paused["run_id"], "reason": "unfollowed"}]
    assert run["status"] == "paused"  # following (and leaving) never touches the run
    assert types_of(other)[-1] == "run.completed" and other[0]["run_id"] != paused["run_id"]
    assert stray[0]["error"]["code"] == "not_following"
    assert missing[0]["error"]["code"] == "run_not_found" and missing[0]["error"]["status"] == 404
    assert bad_after[0]["error"]["code"] == "validation_error" and "after" in bad_after[0]["error"]["message"]


async def test_websocket_follow_of_an_ended_run_replays_and_stops(live: LiveWarden, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="done already"))
    async with connect(f"ws://127.0.0.1:{live.port}/api/chat/ws", additional_headers=AUTH) as ws:
        await ws.recv()
        await send(ws, {"message": "hi"})
        turn = await recv_until_end(ws)
        await send(ws, {"type": "follow", "run_id": turn[0]["run_id"], "after": 1})
        tail = await recv_until_end(ws)
        tail_end = await recv_until_end(ws)
        # Following after the last event of an ended run relays nothing and ends at once.
        await send(ws, {"type": "follow", "run_id": turn[0]["run_id"], "after": turn[-1]["seq"]})
        nothing = await recv_until_end(ws)
        up.enqueue(Behaviour(text="free"))
        await send(ws, {"message": "still free?"})
        nxt = await recv_until_end(ws)
    assert tail == turn[1:]
    assert types_of(tail_end) == types_of(nothing) == ["follow.ended"]
    assert types_of(nxt) == ["run.started", "message.delta", "run.completed"]


async def test_sse_follower_of_a_paused_run_gets_keepalives_then_the_rest(live: LiveWarden,
                                                                          up: UpstreamServer) -> None:
    live.services.runs.config = dataclasses.replace(live.services.runs.config, keepalive_s=0.05)
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "x"})]), Behaviour(text="ok"))
    async with httpx.AsyncClient(base_url=live.url, headers=AUTH, timeout=30) as c:
        agent = await drafting_agent(c)
        async with c.stream("POST", "/api/chat/stream", json={"agent_id": agent["id"], "message": "go"}) as resp:
            turn = parse_sse(await resp.aread())
        paused = turn[-1]
        raw = b""
        async with c.stream("GET", f"/api/runs/{paused['run_id']}/events",
                            params={"after": paused["seq"]}) as resp:
            chunks = resp.aiter_bytes()
            while raw.count(b": ping\n\n") < 2:  # the run is paused: only keep-alives flow
                raw += await asyncio.wait_for(anext(chunks), 30)
            await approve(c, paused["run_id"])
            async for chunk in chunks:
                raw += chunk
    assert raw.startswith(b": ping\n\n")
    events = parse_sse(raw)
    assert types_of(events) == ["tool.result", "message.delta", "run.completed"]
    assert b"event:" not in raw.split(b": ping\n\n")[0]  # nothing but pings before the decision

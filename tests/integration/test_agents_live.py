"""Over a real server: WebSocket turns, a client leaving mid-run, a restart, the watchdog."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from tests.support.agents import connect_provider, types_of
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.app import ADMIN_KEY, LiveWarden, client_for
from warden.config import Settings
from warden.services import Services
from warden.store.agent_models import Run, RunEvent
from warden.store.base import utcnow
from warden.testing.upstream import Behaviour, UpstreamServer

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def up():
    with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
def live(settings: Settings, up: UpstreamServer):
    server = LiveWarden(settings).start()
    server.call(connect_provider(server.services, up))
    yield server
    server.stop()


async def ws_turn(ws, body: dict) -> list[dict]:
    await ws.send(orjson.dumps(body).decode())
    events = []
    while True:
        event = orjson.loads(await ws.recv())
        events.append(event)
        if event["type"] in ("run.completed", "run.failed", "run.paused", "error"):
            return events


async def test_websocket_several_turns_on_one_socket(live: LiveWarden, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="one"), Behaviour(text="two"))
    async with connect(f"ws://127.0.0.1:{live.port}/api/chat/ws", additional_headers=AUTH) as ws:
        ready = orjson.loads(await ws.recv())
        assert ready["type"] == "ready"
        first = await ws_turn(ws, {"message": "hi"})
        second = await ws_turn(ws, {"message": "again", "session_id": first[0]["session_id"]})
        bad = await ws_turn(ws, {"message": ""})
    assert types_of(first) == ["run.started", "message.delta", "run.completed"]
    assert types_of(second) == ["run.started", "message.delta", "run.completed"], second
    assert [e["seq"] for e in second] == [1, 2, 3]
    assert second[0]["session_id"] == first[0]["session_id"] and second[0]["run_id"] != first[0]["run_id"]
    assert bad == [{"type": "error", "error": {"type": "invalid_request_error", "code": "validation_error",
                                               "message": bad[0]["error"]["message"], "status": 422}}]
    assert [m["content"] for m in up.requests[1].body["messages"][1:]] == ["hi", "one", "again"]


async def test_websocket_auth_by_first_message_and_url_token_refused(live: LiveWarden, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="fine"))
    url = f"ws://127.0.0.1:{live.port}/api/chat/ws"
    async with connect(url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": ADMIN_KEY}).decode())
        assert orjson.loads(await ws.recv())["type"] == "ready"
        assert types_of(await ws_turn(ws, {"message": "hi"}))[-1] == "run.completed"
    async with connect(url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": "wk-wrong-key-000000000000000"}).decode())
        assert orjson.loads(await ws.recv())["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    with pytest.raises(InvalidStatus):
        async with connect(f"{url}?token={ADMIN_KEY}"):
            pass
    with pytest.raises(InvalidStatus):
        async with connect(url, additional_headers={"authorization": "Bearer wk-nope-nope-nope-nope-nope"}):
            pass


async def test_websocket_disconnect_mid_run_cancels(live: LiveWarden, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="slow " * 50, token_delay=0.05))
    async with connect(f"ws://127.0.0.1:{live.port}/api/chat/ws", additional_headers=AUTH) as ws:
        await ws.recv()
        await ws.send(orjson.dumps({"message": "talk"}).decode())
        started = orjson.loads(await ws.recv())
        assert orjson.loads(await ws.recv())["type"] == "message.delta"
    await _assert_cancelled(live, started["run_id"])


async def test_sse_disconnect_mid_run_cancels_and_keeps_partial_text(live: LiveWarden, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="slow " * 50, token_delay=0.05))
    async with httpx.AsyncClient(base_url=live.url, headers=AUTH) as c, \
            c.stream("POST", "/api/chat/stream", json={"message": "talk"}) as resp:
        run_id = resp.headers["x-warden-run-id"]
        seen = b""
        async for chunk in resp.aiter_bytes():
            seen += chunk
            if seen.count(b"event: message.delta") >= 2:
                break
    await _assert_cancelled(live, run_id)


async def _assert_cancelled(live: LiveWarden, run_id: str) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=AUTH) as c:
        for _ in range(200):
            run = (await c.get(f"/api/runs/{run_id}")).json()
            if run["status"] != "running":
                break
            await asyncio.sleep(0.02)
        assert run["status"] == "cancelled"
        session = (await c.get(f"/api/sessions/{run['session_id']}")).json()
        async with c.stream("GET", f"/api/runs/{run_id}/events") as resp:
            body = await resp.aread()
    partial = session["messages"][-1]
    assert partial["role"] == "assistant" and partial["content"].startswith("slow ")
    assert len(partial["content"]) < len("slow " * 50)
    assert body.rstrip().endswith(b"}") and b"event: run.cancelled" in body


async def test_session_survives_a_restart(settings: Settings, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="remembered"), Behaviour(text="still here"))
    first = await Services.start(settings)
    await connect_provider(first, up)
    async with client_for(first) as c:
        sid = (await c.post("/api/chat", json={"message": "remember me"})).json()["session_id"]
    await first.close()
    second = await Services.start(settings)
    try:
        async with client_for(second) as c:
            r = await c.post("/api/chat", json={"session_id": sid, "message": "still?"})
            session = (await c.get(f"/api/sessions/{sid}")).json()
    finally:
        await second.close()
    assert r.json()["message"]["content"] == "still here"
    assert [m["content"] for m in up.requests[1].body["messages"][1:]] == ["remember me", "remembered", "still?"]
    assert session["message_count"] == 4


async def test_watchdog_marks_stale_runs_failed(settings: Settings, data_dir: Path, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="ok"))
    first = await Services.start(settings)
    await connect_provider(first, up)
    async with client_for(first) as c:
        r = (await c.post("/api/chat", json={"message": "hi"})).json()
    stale = utcnow() - timedelta(minutes=10)
    async with first.db.transaction() as s:  # a run its process left behind, as a crash would
        run = await s.get(Run, r["run_id"])
        run.status, run.heartbeat_at, run.ended_at = "running", stale, None
        fresh = Run(id="run_fresh", workspace_id=run.workspace_id, session_id=run.session_id,
                    agent_id=run.agent_id, status="running", steps=[], heartbeat_at=utcnow())
        s.add(fresh)
    await first.close()
    second = await Services.start(settings)
    try:
        async with client_for(second) as c:
            swept = (await c.get(f"/api/runs/{r['run_id']}")).json()
            untouched = (await c.get("/api/runs/run_fresh")).json()
        async with second.db.session() as s:
            from sqlalchemy import select
            last = (await s.execute(select(RunEvent).where(RunEvent.run_id == r["run_id"])
                                    .order_by(RunEvent.seq.desc()))).scalars().first()
    finally:
        await second.close()
    assert swept["status"] == "failed" and swept["error"]["code"] == "run_abandoned"
    assert untouched["status"] == "running"  # a live heartbeat (maybe another instance) is left alone
    assert last.type == "run.failed" and last.seq == 4

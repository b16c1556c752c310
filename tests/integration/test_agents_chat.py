"""Chat over HTTP and SSE with the loopback provider: out of the box, history, isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.support.agents import MODEL, connect_provider, parse_sse, stream_chat, types_of

from tests.support.app import client_for
from warden.services import Services
from warden.testing.upstream import Behaviour, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def test_chat_out_of_the_box_with_assistant(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    up.enqueue(Behaviour(text="Hi there friend"))
    async with client_for(services) as c:
        r = await c.post("/api/chat", json={"message": "Hello"})
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["status"] == "completed"
    assert body["message"]["content"] == "Hi there friend"
    assert body["message"]["role"] == "assistant"
    assert body["provider"] == "openai" and body["model"] == MODEL
    assert body["usage"]["output_tokens"] == 3
    assert body["session_id"].startswith("ses_") and body["run_id"].startswith("run_")
    # The instructions of the ready-made assistant went first.
    sent = up.requests[-1].body["messages"]
    assert sent[0]["role"] == "system" and sent[-1] == {"role": "user", "content": "Hello"}


async def test_sse_events_in_order(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    up.enqueue(Behaviour(text="one two three"))
    async with client_for(services) as c:
        events = await stream_chat(c, {"message": "count"})
    assert types_of(events) == ["run.started", "message.delta", "message.delta", "message.delta", "run.completed"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert len({e["run_id"] for e in events}) == 1 and len({e["session_id"] for e in events}) == 1
    assert "".join(e["text"] for e in events if e["type"] == "message.delta") == "one two three"
    assert events[-1]["usage"]["output_tokens"] == 3


async def test_history_persisted_listed_and_paged(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    up.enqueue(Behaviour(text="first answer"), Behaviour(text="second answer"))
    async with client_for(services) as c:
        s = (await c.post("/api/sessions", json={"title": "Plans"})).json()
        assert s["message_count"] == 0 and s["title"] == "Plans"
        r1 = await c.post("/api/chat", json={"session_id": s["id"], "message": "first question"})
        r2 = await c.post("/api/chat", json={"session_id": s["id"], "message": "second question"})
        assert r1.json()["session_id"] == r2.json()["session_id"] == s["id"]
        other = (await c.post("/api/sessions", json={})).json()
        listing = (await c.get("/api/sessions")).json()
        page1 = (await c.get(f"/api/sessions/{s['id']}?limit=3")).json()
        page2 = (await c.get(f"/api/sessions/{s['id']}?after=3&limit=3")).json()
    # The second call sent the whole conversation so far.
    sent = [(m["role"], m["content"]) for m in up.requests[1].body["messages"][1:]]
    assert sent == [("user", "first question"), ("assistant", "first answer"), ("user", "second question")]
    assert [x["id"] for x in listing] == [other["id"], s["id"]]  # newest activity first
    assert listing[1]["message_count"] == 4 and listing[1]["preview"] == "second answer"
    assert [m["content"] for m in page1["messages"]] == ["first question", "first answer", "second question"]
    assert page1["has_more"] is True and page2["has_more"] is False
    assert [m["seq"] for m in page2["messages"]] == [4]
    assert page2["messages"][0]["run_id"] == r2.json()["run_id"]


async def test_new_session_is_created_and_titled_from_the_first_message(services: Services,
                                                                          up: UpstreamServer) -> None:
    await connect_provider(services, up)
    async with client_for(services) as c:
        r = await c.post("/api/chat", json={"message": "What is the plan?"})
        s = (await c.get(f"/api/sessions/{r.json()['session_id']}")).json()
        agents = (await c.get("/api/agents")).json()
    assert s["title"] == "What is the plan?" and s["agent_id"] == agents[0]["id"]
    assert agents[0]["name"] == "assistant" and agents[0]["tools"] == []


async def test_history_windowed_to_the_model_context(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up, context_window=400)
    async with client_for(services) as c:
        sid = None
        for i in range(4):
            r = await c.post("/api/chat", json={"session_id": sid, "message": f"turn {i} " + "word " * 150})
            assert r.status_code == 200, r.text
            sid = r.json()["session_id"]
    last = up.requests[-1].body["messages"]
    assert last[0]["role"] == "system"
    users = [m["content"].split()[1] for m in last if m["role"] == "user"]
    assert users[-1] == "3" and "0" not in users and len(users) < 4
    # Whole turns: each kept user message still has its answer after it.
    roles = [m["role"] for m in last[1:]]
    assert roles == ["user", "assistant"] * (len(users) - 1) + ["user"]


async def test_delete_session(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    async with client_for(services) as c:
        r = await c.post("/api/chat", json={"message": "hi"})
        sid, rid = r.json()["session_id"], r.json()["run_id"]
        assert (await c.delete(f"/api/sessions/{sid}")).json()["id"] == sid
        assert (await c.get(f"/api/sessions/{sid}")).status_code == 404
        assert (await c.get(f"/api/runs/{rid}")).status_code == 404
        assert (await c.delete(f"/api/sessions/{sid}")).status_code == 404


async def test_isolation_between_keys_and_workspaces(services: Services, up: UpstreamServer) -> None:
    ws_id = await connect_provider(services, up)
    alice = await services.accounts.create_key(ws_id, "alice", "member")
    bob = await services.accounts.create_key(ws_id, "bob", "member")
    other_ws = await services.accounts.create_workspace("other")
    # No provider for "other": each refusal below comes before any call, and a workspace
    # other than default may not point a credential at the loopback simulator anyway.
    outsider = await services.accounts.create_key(other_ws.id, "admin2", "admin")
    async with client_for(services, alice.key) as a, client_for(services, bob.key) as b, \
            client_for(services) as admin, client_for(services, outsider.key) as o:
        r = (await a.post("/api/chat", json={"message": "alice here"})).json()
        sid, rid = r["session_id"], r["run_id"]
        await b.post("/api/chat", json={"message": "bob here"})
        assert [s["id"] for s in (await a.get("/api/sessions")).json()] == [sid]
        assert len((await admin.get("/api/sessions")).json()) == 2
        for client in (b, o):
            assert (await client.get(f"/api/sessions/{sid}")).status_code == 404
            assert (await client.get(f"/api/runs/{rid}")).status_code == 404
            assert (await client.get(f"/api/runs/{rid}/events")).status_code == 404
            cont = await client.post("/api/chat", json={"session_id": sid, "message": "hijack"})
            assert cont.status_code == 404 and cont.json()["error"]["code"] == "session_not_found"
            assert (await client.delete(f"/api/sessions/{sid}")).status_code == 404
        assert (await admin.get(f"/api/sessions/{sid}")).json()["api_key_id"] == alice.id
        assert (await o.get("/api/sessions")).json() == []
        # Another workspace's agent is not found either.
        agent_id = (await admin.get("/api/agents/assistant")).json()["id"]
        assert (await o.get(f"/api/agents/{agent_id}")).status_code == 404


async def test_bad_input(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    async with client_for(services) as c:
        cases = [
            ({"message": "hi", "agent_id": "nobody"}, 404, "agent_not_found"),
            ({"message": "hi", "session_id": "ses_missing"}, 404, "session_not_found"),
            ({"message": ""}, 422, "validation_error"),
            ({"message": "   \n"}, 422, "validation_error"),
            ({"message": "x" * 100_001}, 422, "validation_error"),
            ({}, 422, "validation_error"),
        ]
        for body, status, code in cases:
            for path in ("/api/chat", "/api/chat/stream"):
                r = await c.post(path, json=body)
                assert (r.status_code, r.json()["error"]["code"]) == (status, code), (path, body, r.text)
        assert (await c.post("/api/chat", content=b"{nope")).status_code == 400
        too_big = await c.post("/api/chat", content=b'{"message": "' + b"x" * 9_000_000 + b'"}')
        assert too_big.status_code == 413
        assert (await c.post("/api/sessions", json={"agent_id": "ghost"})).status_code == 404
        assert (await c.get("/api/runs/run_nope")).status_code == 404
    assert up.requests == []  # nothing reached the model


async def test_events_replay_after_reconnect(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    up.enqueue(Behaviour(text="a b c d"))
    async with client_for(services) as c:
        events = await stream_chat(c, {"message": "go"})
        rid = events[0]["run_id"]
        async with c.stream("GET", f"/api/runs/{rid}/events?after=2") as resp:
            replay = parse_sse(await resp.aread())
        async with c.stream("GET", f"/api/runs/{rid}/events", headers={"last-event-id": "4"}) as resp:
            by_header = parse_sse(await resp.aread())
    assert replay == events[2:]
    assert by_header == events[4:]

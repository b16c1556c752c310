"""The run loop with tools: governance decisions, parallel calls, tool failures,
malformed arguments, approvals and their resume, step limits, upstream errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from tests.support.agents import (
    EchoTool,
    HangingTool,
    RaisingTool,
    connect_provider,
    stream_chat,
    types_of,
)

from tests.support.app import client_for
from warden.agents.runs import RuntimeConfig
from warden.services import Services
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
async def echo(services: Services, up: UpstreamServer) -> EchoTool:
    await connect_provider(services, up)
    tool = EchoTool()
    services.tools.register(tool)
    return tool


async def make_agent(c, **fields) -> dict:
    r = await c.post("/api/agents", json={"name": "worker", "instructions": "Use tools.", **fields})
    assert r.status_code == 201, r.text
    return r.json()


def tool_messages(request_body: dict) -> list[dict]:
    return [m for m in request_body["messages"] if m["role"] == "tool"]


async def test_allowed_tool_call_runs_and_the_model_reads_its_result(
        services: Services, up: UpstreamServer, echo: EchoTool) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "hi"})]), Behaviour(text="all done"))
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["echo"])
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "echo hi"})
        run = (await c.get(f"/api/runs/{events[0]['run_id']}")).json()
    assert types_of(events) == ["run.started", "tool.call", "tool.result", "message.delta", "message.delta",
                                "run.completed"]
    call = events[1]
    assert (call["name"], call["risk_level"], call["decision"], call["rule"]) == ("echo", 1, "allow", "matrix:student:1")
    assert orjson.loads(call["arguments"]) == {"text": "hi"}
    assert events[2]["is_error"] is False and orjson.loads(events[2]["content"]) == {"echo": {"text": "hi"}}
    assert echo.calls == [{"text": "hi"}]
    assert echo.contexts[0].run_id == run["id"] and echo.contexts[0].agent_id == agent["id"]
    # The second model call carried the assistant's tool call and the tool's result.
    second = up.requests[1].body
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "echo"
    assert tool_messages(second)[0]["content"] == '{"echo":{"text":"hi"}}'
    assert run["status"] == "completed" and len(run["steps"]) == 2
    assert [s["finish_reason"] for s in run["steps"]] == ["tool_calls", "stop"]
    assert run["tool_calls"][0]["decision"] == "allow" and run["tool_calls"][0]["status"] == "completed"
    assert run["usage"]["output_tokens"] == 1 + 2
    assert float(run["cost_usd"]) > 0


async def test_parallel_tool_calls_in_one_step(services: Services, up: UpstreamServer, echo: EchoTool) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "a"}), SimToolCall("echo", {"text": "b"})]),
               Behaviour(text="both"))
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["echo"])
        r = await c.post("/api/chat", json={"agent_id": agent["name"], "message": "two"})
        assert r.json()["status"] == "completed", r.text
        session = (await c.get(f"/api/sessions/{r.json()['session_id']}")).json()
    assert sorted(a["text"] for a in echo.calls) == ["a", "b"]
    assert [m["role"] for m in session["messages"]] == ["user", "assistant", "tool", "tool", "assistant"]
    results = tool_messages(up.requests[1].body)
    assert [orjson.loads(m["content"])["echo"]["text"] for m in results] == ["a", "b"]


async def test_deny_from_the_matrix_is_a_refusal_the_model_reads(
        services: Services, up: UpstreamServer, echo: EchoTool) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "x"})]), Behaviour(text="ok, I cannot"))
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["echo"], tool_levels={"echo": 3})  # student x mutate = deny
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "do it"})
        run = (await c.get(f"/api/runs/{events[0]['run_id']}")).json()
    assert echo.calls == []
    call = next(e for e in events if e["type"] == "tool.call")
    assert (call["decision"], call["rule"], call["risk_level"]) == ("deny", "matrix:student:3", 3)
    result = next(e for e in events if e["type"] == "tool.result") if "tool.result" in types_of(events) else None
    assert result is None  # nothing ran
    refusal = tool_messages(up.requests[1].body)[0]["content"]
    assert refusal.startswith("refused:") and "student" in refusal
    assert run["status"] == "completed"
    assert run["tool_calls"][0]["decision"] == "deny" and run["tool_calls"][0]["status"] == "denied"
    assert run["tool_calls"][0]["is_error"] is True


async def test_approve_pauses_the_run_and_resume_continues_it(
        services: Services, up: UpstreamServer, echo: EchoTool) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "draft"})]), Behaviour(text="sent"))
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["echo"], tool_levels={"echo": 2})  # student x draft = approve
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "draft it"})
        assert types_of(events) == ["run.started", "tool.call", "approval.required", "run.paused"]
        run_id = events[0]["run_id"]
        run = (await c.get(f"/api/runs/{run_id}")).json()
        assert run["status"] == "paused" and run["pending"] == [events[2]["tool_call_id"]]
        assert run["tool_calls"][0]["decision"] == "approve"
        assert run["tool_calls"][0]["status"] == "pending_approval"
        assert events[2]["arguments"] == {"text": "draft"} and events[2]["rule"] == "matrix:student:2"
        assert echo.calls == []
        # The session is busy until the approval is settled.
        busy = await c.post("/api/chat", json={"session_id": events[0]["session_id"], "message": "hello?"})
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "session_busy"

        handle = await services.runs.resume_run(run_id, "approve", actor="key:admin")
        outcome = await services.runs.wait(handle)
        assert outcome.status == "completed" and outcome.message["content"] == "sent"
        assert echo.calls == [{"text": "draft"}]
        async with c.stream("GET", f"/api/runs/{run_id}/events?after=4") as resp:
            from tests.support.agents import parse_sse
            tail = parse_sse(await resp.aread())
        run = (await c.get(f"/api/runs/{run_id}")).json()
    assert types_of(tail) == ["tool.result", "message.delta", "run.completed"]
    assert [e["seq"] for e in tail] == [5, 6, 7]
    assert run["status"] == "completed" and run["tool_calls"][0]["status"] == "completed"
    assert run["usage"]["output_tokens"] == 1 + 1


async def test_rejected_approval_tells_the_model(services: Services, up: UpstreamServer, echo: EchoTool) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "draft"})]), Behaviour(text="understood"))
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["echo"], tool_levels={"echo": 2})
        r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": "draft it"})
        assert r.json()["status"] == "paused" and r.json()["message"] is None
        handle = await services.runs.resume_run(r.json()["run_id"], "reject", note="not today")
        assert (await services.runs.wait(handle)).status == "completed"
    assert echo.calls == []
    content = tool_messages(up.requests[1].body)[0]["content"]
    assert "rejected" in content and "not today" in content


async def test_tool_errors_reach_the_model(services: Services, up: UpstreamServer, echo: EchoTool) -> None:
    services.tools.register(RaisingTool())
    hanging = HangingTool()
    services.tools.register(hanging)
    services.runs.config = RuntimeConfig(tool_timeout_s=0.2)
    up.enqueue(Behaviour(tool_calls=[SimToolCall("explode", {}), SimToolCall("hang", {}),
                                     SimToolCall("missing", {})]),
               Behaviour(text="recovered"))
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["echo", "explode", "hang"])
        r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": "try"})
        run = (await c.get(f"/api/runs/{r.json()['run_id']}")).json()
    assert r.json()["status"] == "completed"
    contents = [m["content"] for m in tool_messages(up.requests[1].body)]
    assert "failed (RuntimeError)" in contents[0] and "boom" not in contents[0]
    assert "timed out after 0.2 s" in contents[1]
    assert "no tool named 'missing'" in contents[2] and "echo" in contents[2]
    assert hanging.cancelled
    statuses = {tc["name"]: (tc["status"], tc["decision"], tc["is_error"]) for tc in run["tool_calls"]}
    assert statuses == {"explode": ("failed", "allow", True), "hang": ("timeout", "allow", True),
                        "missing": ("failed", "deny", True)}


def _stream_with_args(args: str) -> bytes:
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        body = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(body) + b"\n\n"
    call = {"index": 0, "id": "call_bad", "type": "function", "function": {"name": "echo", "arguments": args}}
    usage = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini", "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
    return (chunk({"role": "assistant", "tool_calls": [call]}) + chunk({}, "tool_calls")
            + b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n")


@pytest.mark.parametrize(("args", "problem"), [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object")])
async def test_malformed_tool_arguments_are_a_tool_error(
        services: Services, up: UpstreamServer, echo: EchoTool, args: str, problem: str) -> None:
    up.enqueue(Behaviour(raw=_stream_with_args(args), content_type="text/event-stream"), Behaviour(text="fixed"))
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["echo"])
        r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": "go"})
        run = (await c.get(f"/api/runs/{r.json()['run_id']}")).json()
    assert r.json()["status"] == "completed"
    assert echo.calls == []
    assert problem in tool_messages(up.requests[1].body)[0]["content"]
    assert run["tool_calls"][0]["arguments"] == args and run["tool_calls"][0]["status"] == "failed"


async def test_max_steps_ends_the_run_as_failed(services: Services, up: UpstreamServer, echo: EchoTool) -> None:
    up.default = Behaviour(tool_calls=[SimToolCall("echo", {"text": "again"})])
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["echo"], max_steps=2)
        r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": "loop"})
        run = (await c.get(f"/api/runs/{r.headers['x-warden-run-id']}")).json()
    assert r.status_code == 422 and r.json()["error"]["code"] == "max_steps_exceeded"
    assert len(echo.calls) == 2 and len(up.requests) == 2
    assert run["status"] == "failed" and run["error"]["code"] == "max_steps_exceeded"


async def test_upstream_error_fails_the_run_with_a_typed_error(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    up.enqueue(Behaviour(status=400, error_message="bad things"))
    async with client_for(services) as c:
        events = await stream_chat(c, {"message": "hi"})
        r = await c.get(f"/api/runs/{events[0]['run_id']}")
    assert types_of(events) == ["run.started", "run.failed"]
    assert events[-1]["error"]["type"] == "invalid_request_error" and events[-1]["error"]["status"] == 400
    assert r.json()["status"] == "failed" and r.json()["error"] == events[-1]["error"]


async def test_no_provider_key_fails_the_run_cleanly(services: Services) -> None:
    async with client_for(services) as c:
        r = await c.post("/api/chat", json={"message": "hi"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_eligible_deployment"
    assert r.headers["x-warden-session-id"].startswith("ses_")


async def test_heartbeat_keeps_a_long_run_fresh_and_resume_refuses_bad_calls(
        services: Services, up: UpstreamServer, echo: EchoTool) -> None:
    hanging = HangingTool()
    services.tools.register(hanging)
    services.runs.config = RuntimeConfig(tool_timeout_s=0.5, heartbeat_s=0.02, sweep_every_s=0.04,
                                         stale_after_s=0.01)
    await services.runs.close()  # restart maintenance with the short intervals
    await services.runs.start_background()
    up.enqueue(Behaviour(tool_calls=[SimToolCall("hang", {})]), Behaviour(text="done"))
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["hang"])
        r = await c.post("/api/chat", json={"agent_id": agent["id"], "message": "wait"})
        run_id = r.json()["run_id"]
    # Sweeps ran while the tool hung, but a run executing here is never taken for abandoned.
    assert r.json()["status"] == "completed"
    from warden.errors import Conflict, NotFound
    with pytest.raises(Conflict):
        await services.runs.resume_run(run_id, "approve")
    with pytest.raises(NotFound):
        await services.runs.resume_run("run_missing", "approve")

"""OpenTelemetry traces over a real server, exported to a loopback OTLP receiver: a
gateway request (streamed and not) whose first attempt fails, an agent run with a tool
call; and a process without the OTLP variable that imports no SDK and sends nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from tests.support.agents import MODEL, EchoTool, connect_provider

from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.otlp import OtlpReceiver, ReceivedSpan, children
from warden import tracing
from warden.config import Settings
from warden.store.models import SpendRow
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch):
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # ms: export soon, the test waits
        monkeypatch.setenv("OTEL_SERVICE_NAME", "warden-under-test")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
        yield receiver


@pytest.fixture
def up():
    with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
def live(settings: Settings, up: UpstreamServer, otlp: OtlpReceiver):
    server = LiveWarden(settings).start()
    server.call(connect_provider(server.services, up))
    server.echo = EchoTool()
    server.services.tools.register(server.echo)
    yield server
    server.stop()
    assert tracing.TRACER is None  # released at close


def one(spans: list[ReceivedSpan], **match: object) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(s.name, s.kind) for s in spans])
    return found[0]


def spend_cost(live: LiveWarden, request_id: str) -> Decimal:
    async def read() -> Decimal:
        async with live.services.db.session() as s:
            return (await s.execute(select(SpendRow.cost_usd).where(SpendRow.request_id == request_id))).scalar_one()
    return live.call(read())


def assert_failed_over(spans: list[ReceivedSpan], request: ReceivedSpan, upstream_status: int) -> None:
    attempts = sorted(children(spans, request), key=lambda s: s.attrs["warden.attempt"])
    assert [(a.name, a.kind, a.attrs["warden.attempt"]) for a in attempts] == [
        (f"chat {MODEL}", "client", 1), (f"chat {MODEL}", "client", 2)]
    first, second = attempts
    assert first.error and first.attrs["error.type"] == "upstream_overloaded"
    assert first.attrs["http.response.status_code"] == upstream_status and first.attrs["warden.error.status"] == 503
    assert not second.error and "error.type" not in second.attrs
    for a in attempts:
        assert a.attrs["gen_ai.provider.name"] == "openai" and a.attrs["gen_ai.request.model"] == MODEL
        assert a.attrs["server.address"] == "127.0.0.1" and a.attrs["warden.deployment"] == request.attrs[
            "warden.deployment"]


def test_chat_completion_traced_with_its_attempts(live: LiveWarden, up: UpstreamServer, otlp: OtlpReceiver) -> None:
    up.enqueue(Behaviour(status=500), Behaviour(text="traced reply"))
    r = httpx.post(f"{live.url}/v1/chat/completions", headers={**AUTH, "x-request-id": "req-traced-1"},
                   json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    spans = otlp.wait(lambda ss: len([s for s in ss if s.kind == "client"]) >= 2 and any(
        s.kind == "server" for s in ss))
    request = one(spans, kind="server")
    assert request.name == f"chat {MODEL}" and request.parent_id == "" and not request.error
    a = request.attrs
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.response.model"] == MODEL
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        usage["prompt_tokens"], usage["completion_tokens"])
    assert a["warden.attempts"] == 2 == int(r.headers["x-warden-attempts"])
    assert a["warden.cost_usd"] == pytest.approx(float(r.headers["x-warden-cost-usd"])) and a["warden.cost_usd"] > 0
    assert a["warden.request_id"] == "req-traced-1" and a["warden.stream"] is False
    assert_failed_over(spans, request, 500)
    assert request.resource["service.name"] == "warden-under-test"
    assert request.resource["deployment.environment"] == "ci"
    assert set(otlp.paths) == {"/v1/traces"}
    # Nothing of the conversation leaves in a span.
    assert not any("traced reply" in str(s.attrs) or "'hi'" in str(s.attrs) for s in spans)


def test_streamed_completion_traced_to_its_end(live: LiveWarden, up: UpstreamServer, otlp: OtlpReceiver) -> None:
    up.enqueue(Behaviour(status=503), Behaviour(text="one two three four"))
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", headers={**AUTH, "x-request-id": "req-stream-1"},
                      json={"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": "count"}]}, timeout=30) as r:
        assert r.status_code == 200
        body = r.read().decode()
    assert "[DONE]" in body
    spans = otlp.wait(lambda ss: any(s.kind == "server" for s in ss) and len(
        [s for s in ss if s.kind == "client"]) >= 2)
    request = one(spans, kind="server")
    a = request.attrs
    assert a["warden.stream"] is True and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.usage.input_tokens"] > 0 and a["warden.attempts"] == 2 and "warden.status" not in a
    assert a["warden.cost_usd"] == pytest.approx(float(spend_cost(live, "req-stream-1")))
    assert_failed_over(spans, request, 503)


def test_agent_run_traced_with_model_and_tool_calls(live: LiveWarden, up: UpstreamServer,
                                                   otlp: OtlpReceiver) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "ping"})]), Behaviour(text="done"))
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=30) as c:
        agent = c.post("/api/agents", json={"name": "tracer", "tools": ["echo"]})
        assert agent.status_code == 201, agent.text
        r = c.post("/api/chat", json={"agent_id": agent.json()["id"], "message": "echo ping"})
    assert r.status_code == 200, r.text
    reply = r.json()
    assert live.echo.calls == [{"text": "ping"}]
    spans = otlp.wait(lambda ss: any(s.name.startswith("invoke_agent") for s in ss))
    run = one(spans, name="invoke_agent tracer")
    assert run.parent_id == "" and run.kind == "internal" and not run.error
    ra = run.attrs
    assert ra["gen_ai.operation.name"] == "invoke_agent" and ra["gen_ai.agent.id"] == agent.json()["id"]
    assert ra["warden.run.id"] == reply["run_id"] and ra["warden.run.status"] == "completed"
    assert ra["gen_ai.conversation.id"] == reply["session_id"] and ra["warden.cost_usd"] > 0
    under = children(spans, run)
    models = [s for s in under if s.attrs["gen_ai.operation.name"] == "chat"]
    tools = [s for s in under if s.attrs["gen_ai.operation.name"] == "execute_tool"]
    assert len(models) == 2 and all(m.kind == "internal" and len(children(spans, m)) == 1 for m in models)
    assert sum(m.attrs["gen_ai.usage.output_tokens"] for m in models) == ra["gen_ai.usage.output_tokens"]
    assert all(m.attrs["gen_ai.agent.id"] == ra["gen_ai.agent.id"] for m in models)
    (tool,) = tools
    ta = tool.attrs
    assert tool.name == "execute_tool echo" and ta["gen_ai.tool.name"] == "echo"
    assert ta["warden.decision"] == "allow" and ta["warden.tool.level"] == 1 and ta["warden.rule"]
    assert ta["warden.tool.status"] == "completed" and ta["gen_ai.tool.call.id"]
    assert not any("ping" in str(s.attrs) for s in spans)  # tool arguments stay out


def test_approved_action_names_who_decided(live: LiveWarden, up: UpstreamServer, otlp: OtlpReceiver) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "memo"})]), Behaviour(text="sent"))
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=30) as c:
        agent = c.post("/api/agents", json={"name": "drafter", "tools": ["echo"], "tool_levels": {"echo": 2}})
        assert agent.status_code == 201, agent.text
        paused = c.post("/api/chat", json={"agent_id": agent.json()["id"], "message": "send it"}).json()
        assert paused["status"] == "paused", paused
        pending = c.get("/api/approvals", params={"status": "pending", "run_id": paused["run_id"]}).json()
        decided = c.post(f"/api/approvals/{pending[0]['id']}", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
    spans = otlp.wait(lambda ss: len([s for s in ss if s.name == "execute_tool echo"]) == 2
                      and len([s for s in ss if s.name == "invoke_agent drafter"]) == 2)
    held, ran = sorted((s for s in spans if s.name == "execute_tool echo"), key=lambda s: "warden.decided_by" in s.attrs)
    assert held.attrs["warden.decision"] == "approve" and held.attrs["warden.tool.status"] == "pending_approval"
    assert ran.attrs["warden.decision"] == "approve" and ran.attrs["warden.tool.status"] == "completed"
    assert ran.attrs["warden.decided_by"] == decided.json()["decided_by"]
    runs = [s for s in spans if s.name == "invoke_agent drafter"]
    assert sorted(s.attrs["warden.run.status"] for s in runs) == ["completed", "paused"]
    assert {s.attrs["warden.run.id"] for s in runs} == {paused["run_id"]}


_NO_ENV_PROBE = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    import httpx
    from warden.app import create_app
    from warden.config import load_settings
    from warden.services import Services
    from warden.testing.upstream import UpstreamServer
    import warden.server  # what `warden serve` imports

    async def main():
        with UpstreamServer("openai") as up:
            svc = await Services.start(load_settings(data_dir=Path(sys.argv[1]), admin_key=sys.argv[2],
                                                     access_log=False))
            ws = (await svc.accounts.workspace_by_name("default")).id
            await svc.byok.create(ws, {"provider": "openai", "api_key": "sk-test", "base_url": up.base_url,
                                       "label": "sim", "models": [{"id": "gpt-4o-mini"}]}, actor="test")
            transport = httpx.ASGITransport(app=create_app(services=svc))
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         headers={"authorization": "Bearer " + sys.argv[2]}) as c:
                r = await c.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "stream": True,
                                 "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
            await svc.close()
        heavy = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto", "google.protobuf",
                 "warden.tracing.otel")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
    asyncio.run(main())
""")


@pytest.mark.parametrize("env", [{}, {"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}],
                         ids=["no-endpoint", "sdk-disabled", "exporter-none"])
def test_without_the_variable_nothing_is_imported_or_sent(tmp_path: Path, env: dict[str, str]) -> None:
    with OtlpReceiver() as receiver:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        if env:  # an endpoint is set, and the operator's switch keeps traces off
            clean |= {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "10", **env}
        out = subprocess.run([sys.executable, "-c", _NO_ENV_PROBE, str(tmp_path), ADMIN_KEY], cwd=ROOT,
                             env=clean, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1] == "[]"
        assert receiver.spans == [] and receiver.paths == []

"""Both endpoints through the real app and the official SDKs, mostly with a
stand-in gateway (the real one is exercised end to end by the gateway's own
tests); the real gateway and a loopback upstream where the error path matters."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import anthropic
import httpx
import httpx2
import openai
import pytest
from tests.support.gateway_fakes import FakeGateway, FakeStream, make_info

from tests.support.app import ADMIN_KEY, client_for
from warden.app import create_app
from warden.gateway.errors import Overloaded, RateLimited
from warden.gateway.types import (
    ChatResponse,
    ErrorEvent,
    FinishEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from warden.services import Services
from warden.testing.upstream import Behaviour, UpstreamServer

USAGE = Usage(input_tokens=30, output_tokens=7, cache_read_tokens=10, cache_write_tokens=5)
TEXT = ChatResponse(id="up-1", model="gpt-4o-mini", text="Hello!", usage=USAGE)


def install(services: Services, gateway: FakeGateway) -> FakeGateway:
    services.gateway = gateway  # type: ignore[attr-defined]
    return gateway


def oai(services: Services) -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=create_app(services=services))
    return openai.AsyncOpenAI(base_url="http://warden.test/v1", api_key=ADMIN_KEY, max_retries=0,
                              http_client=httpx.AsyncClient(transport=transport))


def claude(services: Services, key: str = ADMIN_KEY) -> anthropic.AsyncAnthropic:
    transport = httpx2.ASGITransport(app=create_app(services=services))
    return anthropic.AsyncAnthropic(base_url="http://warden.test", api_key=key, max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=transport))


def assert_warden_headers(headers, *, cost: str | None) -> None:
    assert headers["x-warden-provider"] == "openai"
    assert headers["x-warden-model"] == "gpt-4o-mini"
    assert headers["x-warden-attempts"] == "2"
    assert headers["x-warden-overhead-ms"] == "1.23"
    assert len(headers["x-request-id"]) == 32
    if cost is None:
        assert "x-warden-cost-usd" not in headers
    else:
        assert headers["x-warden-cost-usd"] == cost


# --- OpenAI ------------------------------------------------------------------------


async def test_openai_completion_through_the_sdk(services: Services) -> None:
    gw = install(services, FakeGateway(response=TEXT))
    raw = await oai(services).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}],
        extra_body={"warden": {"prefer": "cost", "max_cost_usd": 0.01}})
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello!"
    assert completion.model == "openai/gpt-4o-mini" and completion.usage.prompt_tokens == 30
    assert_warden_headers(raw.headers, cost="0.000123")
    req, ctx = gw.calls[0]
    assert req.model == "auto" and req.messages[0].text_content == "hi"
    principal = await services.accounts.authenticate(ADMIN_KEY)
    assert (ctx.workspace_id, ctx.api_key_id) == (principal.workspace_id, principal.key_id)
    assert ctx.request_id == raw.headers["x-request-id"]
    assert (ctx.options.prefer, ctx.options.max_cost_usd) == ("cost", Decimal("0.01"))


async def test_openai_unknown_cost_header(services: Services) -> None:
    install(services, FakeGateway(response=TEXT, info=make_info(cost=None)))
    raw = await oai(services).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-warden-cost-usd"] == "unknown"
    assert raw.parse().usage.model_extra["warden"]["cost_usd"] is None


async def test_openai_tool_calls_through_the_sdk(services: Services) -> None:
    install(services, FakeGateway(response=ChatResponse(id="x", model="m", finish_reason="tool_calls", tool_calls=[
        ToolCall("call_1", "f", '{"a":1}'), ToolCall("call_2", "g", "{}")])))
    completion = await oai(services).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "go"}],
        tools=[{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "g"}}])
    calls = completion.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_1", "f", '{"a":1}'), ("call_2", "g", "{}")]


async def test_openai_stream_through_the_sdk(services: Services) -> None:
    stream = FakeStream([TextDelta("Hel"), TextDelta("lo"), UsageEvent(USAGE), FinishEvent("stop")],
                        make_info(cost=None), final_cost=Decimal("0.002"))
    gw = install(services, FakeGateway(stream=stream))
    raw = await oai(services).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    assert_warden_headers(raw.headers, cost=None)
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = [c async for c in raw.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-1].usage.total_tokens == 37
    assert chunks[-1].usage.model_extra["warden"]["cost_usd"] == "0.002"
    assert gw.calls[0][0].stream is True
    assert stream.closed == 1


async def test_openai_error_after_first_token_raises_in_the_sdk(services: Services) -> None:
    stream = FakeStream([TextDelta("par"), ErrorEvent(Overloaded("upstream overloaded"))], make_info())
    install(services, FakeGateway(stream=stream))
    seen = []
    with pytest.raises(openai.APIError, match="upstream overloaded"):
        async for chunk in await oai(services).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True):
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["", "par"]
    assert stream.closed == 1


async def test_openai_errors_before_streaming(services: Services) -> None:
    install(services, FakeGateway(error=RateLimited("every deployment is rate limited", retry_after=2)))
    with pytest.raises(openai.RateLimitError) as err:
        await oai(services).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                    stream=True)
    assert err.value.body["code"] == "upstream_rate_limited"


async def test_openai_validation_and_auth(services: Services) -> None:
    install(services, FakeGateway(response=TEXT))
    async with client_for(services) as c:
        r = await c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user"}],
                                                       "temperature": "hot"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "temperature"
        r = await c.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}],
                                                       "warden": {"prefer": "vibes"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "warden.prefer"
    async with client_for(services, key=None) as anon:
        r = await anon.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


async def test_openai_models_list(services: Services) -> None:
    gw = install(services, FakeGateway(models=[{"id": "openai/gpt-4o-mini", "owned_by": "openai"},
                                               {"id": "auto", "owned_by": "warden"}]))
    page = await oai(services).models.list()
    assert [(m.id, m.owned_by) for m in page.data] == [("openai/gpt-4o-mini", "openai"), ("auto", "warden")]
    principal = await services.accounts.authenticate(ADMIN_KEY)
    assert gw.listed == [principal.workspace_id]


# --- Anthropic --------------------------------------------------------------------------


async def test_anthropic_message_through_the_sdk(services: Services) -> None:
    gw = install(services, FakeGateway(response=ChatResponse(
        id="x", model="m", text="Let me check.", finish_reason="tool_calls", usage=USAGE,
        tool_calls=[ToolCall("call_9", "weather", '{"city":"Oslo"}')])))
    raw = await claude(services).messages.with_raw_response.create(
        model="openai/gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "weather?"}],
        tools=[{"name": "weather", "input_schema": {"type": "object"}}])
    msg = await raw.parse()
    assert_warden_headers(raw.headers, cost="0.000123")
    assert msg.stop_reason == "tool_use" and msg.content[0].text == "Let me check."
    assert (msg.content[1].name, msg.content[1].input) == ("weather", {"city": "Oslo"})
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (
        15, 10, 5)
    assert gw.calls[0][0].max_tokens == 64


async def test_anthropic_stream_through_the_sdk(services: Services) -> None:
    stream = FakeStream([TextDelta("Hel"), TextDelta("lo"), ToolCallDelta(0, id="t1", name="f", arguments='{"a":'),
                         ToolCallDelta(0, arguments="1}"), UsageEvent(USAGE), FinishEvent("tool_calls")],
                        make_info(), final_cost=Decimal("0.07"))
    install(services, FakeGateway(stream=stream))
    async with claude(services).messages.stream(model="m", max_tokens=50,
                                                messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert text == "Hello"
    assert final.stop_reason == "tool_use" and final.model == "openai/gpt-4o-mini"
    assert (final.content[1].name, final.content[1].input) == ("f", {"a": 1})
    assert (final.usage.input_tokens, final.usage.output_tokens) == (15, 7)
    assert stream.closed == 1


async def test_anthropic_error_after_first_token_raises_in_the_sdk(services: Services) -> None:
    stream = FakeStream([TextDelta("par"), ErrorEvent(Overloaded("busy upstream"))], make_info())
    install(services, FakeGateway(stream=stream))
    with pytest.raises(anthropic.APIStatusError, match="busy upstream") as err:
        async with claude(services).messages.stream(model="m", max_tokens=50,
                                                    messages=[{"role": "user", "content": "hi"}]) as s:
            async for _ in s:
                pass
    assert err.value.body["error"]["type"] == "overloaded_error"
    assert stream.closed == 1


async def test_anthropic_errors_carry_the_top_level_type(services: Services) -> None:
    install(services, FakeGateway(error=Overloaded("all deployments busy")))
    with pytest.raises(anthropic.APIStatusError) as err:
        await claude(services).messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 503
    assert err.value.body["type"] == "error" and err.value.body["error"]["code"] == "upstream_overloaded"
    with pytest.raises(anthropic.AuthenticationError) as auth:
        await claude(services, key="wk-nope-0000000000000000").messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert auth.value.body["type"] == "error"
    async with client_for(services) as c:
        r = await c.post("/v1/messages", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        body = r.json()
        assert r.status_code == 422 and body["type"] == "error"
        assert body["error"]["param"] == "max_tokens" and body["error"]["code"] == "validation_error"
        assert body["error"]["request_id"] == r.headers["x-request-id"]
        r = await c.post("/v1/messages", content=b"{oops", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


async def test_anthropic_error_type_is_the_same_before_and_after_the_first_token(services: Services) -> None:
    """One upstream failure (Anthropic overloaded), once before the stream starts and
    once after its first token, through the real route and gateway: the client is
    told the same Anthropic error type both times (it used to get Warden's own
    ``upstream_error`` before the first token and ``overloaded_error`` after)."""
    async with UpstreamServer("anthropic") as up:
        ws_id = (await services.accounts.workspace_by_name("default")).id
        await services.byok.create(ws_id, {"provider": "anthropic", "label": "a", "api_key": "sk-ant-up-0123456789",
                                           "base_url": up.base_url, "models": [{"id": "claude-haiku-4-5"}]},
                                   actor="test")
        client = claude(services)
        ask = {"model": "anthropic/claude-haiku-4-5", "max_tokens": 50,
               "messages": [{"role": "user", "content": "hi"}]}
        up.default = Behaviour(status=529, error_message="Overloaded")  # every retry too
        with pytest.raises(anthropic.APIStatusError) as before:
            async with client.messages.stream(**ask) as s:
                async for _ in s:
                    pass
        up.default = Behaviour(stream_error="overloaded_error", error_message="Overloaded", fault_after=4)
        received = []
        with pytest.raises(anthropic.APIStatusError) as after:
            async with client.messages.stream(**ask) as s:
                async for text in s.text_stream:
                    received.append(text)
    assert before.value.status_code == 503 and received  # the second failed after a token
    assert before.value.body["error"]["type"] == after.value.body["error"]["type"] == "overloaded_error"
    assert before.value.body["error"]["code"] == after.value.body["error"]["code"] == "upstream_overloaded"


# --- client disconnect --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("how", ["disconnect_message", "failing_send"])
async def test_client_disconnect_cancels_the_upstream_stream(services: Services, path: str, how: str) -> None:
    """A server says a client left either by an ``http.disconnect`` message (the
    upstream may be silent meanwhile) or, on ASGI 2.4 servers, by a failing send."""
    events = [TextDelta("first")] if how == "disconnect_message" else [TextDelta("first"), TextDelta("second")]
    stream = FakeStream(events, make_info(), hang=True)
    install(services, FakeGateway(stream=stream))
    app = create_app(services=services)
    body = json.dumps({"model": "m", "max_tokens": 5, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    got_token = asyncio.Event()
    sent: list[bytes] = []
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        if how == "failing_send":
            await asyncio.Event().wait()  # this server never reports the disconnect here
        await got_token.wait()  # the client goes away once it has seen the first token
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            if got_token.is_set() and how == "failing_send":
                raise OSError("connection reset")
            sent.append(message["body"])
            if b"first" in message["body"]:
                got_token.set()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "client": ("127.0.0.1", 5000), "server": ("warden.test", 80),
             "headers": [(b"authorization", f"Bearer {ADMIN_KEY}".encode()),
                         (b"content-type", b"application/json")]}
    await asyncio.wait_for(app(scope, receive, send), timeout=10)  # a guard against hanging, not a timing check
    assert any(b"first" in chunk for chunk in sent)
    assert not any(b"second" in chunk for chunk in sent)
    assert stream.closed == 1

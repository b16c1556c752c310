"""Requests built by the official ``anthropic`` SDK parsed into the internal
format, and internal results rendered back, checked against the SDK's types."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import get_args

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from tests.support.gateway_fakes import Capture, FakeStream, make_info, sse_events
from pydantic import TypeAdapter

from warden.errors import (
    InvalidRequest,
    BudgetExceeded,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    WardenError,
)
from warden.formats.anthropic_stream import EventRenderer
from warden.formats.anthropic import (
    MessagesBody,
    error_body,
    error_type,
    render_message,
    to_chat_request,
)
from warden.formats.common import parse_body, render_stream
from warden.gateway.errors import (
    AuthFailed,
    BadRequest,
    ConnectFailed,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    RateLimited,
    Timeout,
    UpstreamMalformed,
)
from warden.gateway.providers import anthropic as adapter
from warden.gateway.types import (
    ChatRequest,
    ChatResponse,
    Endpoint,
    ErrorEvent,
    FinishEvent,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    ResponseFormat,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageEvent,
)

REPLY = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
         "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
EVENTS = TypeAdapter(RawMessageStreamEvent)
USAGE = Usage(input_tokens=1200, output_tokens=80, cache_read_tokens=1000, cache_write_tokens=150, reasoning_tokens=30)


@pytest.fixture
def sent() -> tuple[anthropic.Anthropic, Capture]:
    cap = Capture(REPLY, http=httpx2)
    client = anthropic.Anthropic(base_url="http://warden.test", api_key="wk-test", max_retries=0,
                                 http_client=cap.client())
    return client, cap


def parse(raw: bytes):
    return to_chat_request(parse_body(MessagesBody, raw))


def test_system_blocks_sampling_and_thinking(sent) -> None:
    client, cap = sent
    client.messages.create(
        model="anthropic/claude-sonnet-4", max_tokens=300,
        system=[{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind",
                                                       "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hi"}],
        stop_sequences=["END"], metadata={"user_id": "u"},
        thinking={"type": "enabled", "budget_tokens": 8000},
        # Newer SDKs dropped the sampling parameters; older ones and raw clients still send them.
        extra_body={"warden": {"fallbacks": ["openai/gpt-4o"]}, "temperature": 0.2, "top_p": 0.8, "top_k": 5},
    )
    assert cap.requests[0].url.path == "/v1/messages"
    body = parse_body(MessagesBody, cap.last)
    req = to_chat_request(body)
    assert body.warden == {"fallbacks": ["openai/gpt-4o"]}
    assert req.system_text == "be brief\n\nbe kind"
    assert [(m.role, m.text_content) for m in req.messages] == [
        ("system", "be brief"), ("system", "be kind"), ("user", "hi")]
    assert (req.max_tokens, req.stop, req.temperature, req.top_p) == (300, ["END"], 0.2, 0.8)
    assert req.reasoning_effort == "medium"


@pytest.mark.parametrize(("thinking", "effort"), [
    ({"type": "enabled", "budget_tokens": 1024}, "low"), ({"type": "enabled", "budget_tokens": 4096}, "medium"),
    ({"type": "enabled", "budget_tokens": 16384}, "high"), ({"type": "disabled"}, None)])
def test_thinking_budget_to_effort(sent, thinking: dict, effort: str | None) -> None:
    client, cap = sent
    client.messages.create(model="m", max_tokens=20000, messages=[{"role": "user", "content": "x"}],
                           thinking=thinking)
    assert parse(cap.last).reasoning_effort == effort


def test_tools_tool_use_results_images_and_thinking_history(sent) -> None:
    client, cap = sent
    client.messages.create(
        model="m", max_tokens=100,
        tools=[{"name": "weather", "description": "by city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}},
                {"type": "image", "source": {"type": "url", "url": "https://img.test/a.jpg"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "plan", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "cold"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no data"}]},
                {"type": "text", "text": "and?"},
            ]},
        ])
    req = parse(cap.last)
    assert [(t.name, t.description, t.parameters["properties"]) for t in req.tools] == [
        ("weather", "by city", {"city": {"type": "string"}})]
    assert req.tool_choice == ToolChoice("required") and req.parallel_tool_calls is False
    user, assistant, r1, r2, follow = req.messages
    assert user.content == [TextPart("look"), ImagePart(data="QUJD", media_type="image/png"),
                            ImagePart(url="https://img.test/a.jpg")]
    assert assistant.reasoning == "plan" and assistant.text_content == "checking"
    assert assistant.tool_calls == [ToolCall("toolu_1", "weather", '{"city":"Oslo"}'),
                                    ToolCall("toolu_2", "weather", '{"city":"Rome"}')]
    assert (r1.role, r1.tool_call_id, r1.name, r1.text_content) == ("tool", "toolu_1", "weather", "cold")
    assert (r2.tool_call_id, r2.text_content) == ("toolu_2", "Tool error: no data")
    assert (follow.role, follow.text_content) == ("user", "and?")


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, ToolChoice("auto")), ({"type": "none"}, ToolChoice("none")),
    ({"type": "tool", "name": "weather"}, ToolChoice("tool", "weather"))])
def test_tool_choice(sent, choice: dict, expected: ToolChoice) -> None:
    client, cap = sent
    client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                           tools=[{"name": "weather", "input_schema": {"type": "object"}}], tool_choice=choice)
    req = parse(cap.last)
    assert req.tool_choice == expected and req.parallel_tool_calls is None


def test_output_config_format_and_effort(sent) -> None:
    client, cap = sent
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                           thinking={"type": "enabled", "budget_tokens": 2000},
                           output_config={"effort": "max", "format": {"type": "json_schema", "schema": schema}})
    req = parse(cap.last)
    assert req.response_format == ResponseFormat("json_schema", schema=schema)
    assert req.reasoning_effort == "high"
    client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                           output_config={"effort": "low"})
    req = parse(cap.last)
    assert (req.reasoning_effort, req.response_format) == ("low", None)


def test_string_assistant_turn() -> None:
    req = parse(b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a"},'
                b'{"role":"assistant","content":"b"}]}')
    assert [(m.role, m.text_content) for m in req.messages] == [("user", "a"), ("assistant", "b")]


M = b'"messages":[{"role":"user","content":"x"}]'


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model":"m",' + M + b'}', "max_tokens"),
    (b'{"model":"m","max_tokens":0,' + M + b'}', "max_tokens"),
    (b'{"max_tokens":5,' + M + b'}', "model"),
    (b'{"model":"m","max_tokens":5,"messages":[{"role":"tool","content":"x"}]}', "messages.0.role"),
    (b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file"}}]}]}',
     "messages.0.content.0.source"),
    (b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}',
     "messages.0.content.0.tool_use_id"),
    (b'{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use"}]}]}',
     "messages.0.content.0"),
    (b'{"model":"m","max_tokens":5,' + M + b',"tool_choice":{"type":"tool"}}', "tool_choice.name"),
    (b'{"model":"m","max_tokens":5,' + M + b',"tool_choice":{"type":"maybe"}}', "tool_choice.type"),
])
def test_validation_errors_name_the_field(raw: bytes, param: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        parse(raw)
    assert (err.value.status, err.value.param) == (422, param)


@pytest.mark.parametrize(("raw", "param", "code"), [
    (b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document"}]}]}',
     "messages.0.content.0.type", "unsupported_content"),
    (b'{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"image"}]}]}',
     "messages.0.content.0.type", "unsupported_content"),
    (b'{"model":"m","max_tokens":5,' + M + b',"tools":[{"name":"web","type":"web_search_20250305"}]}',
     "tools.0.input_schema", "unsupported_tool"),
])
def test_what_warden_cannot_serve_is_a_400_naming_it(raw: bytes, param: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(raw)
    assert (err.value.status, err.value.param, err.value.code) == (400, param, code)


def test_the_published_block_schema_says_which_fields_a_type_needs() -> None:
    from jsonschema import Draft202012Validator

    schema = MessagesBody.model_json_schema()
    block = {**schema["$defs"]["_AnthropicBlock"], "$defs": schema["$defs"]}
    valid = Draft202012Validator(block).is_valid
    assert valid({"type": "tool_result", "tool_use_id": "t"}) and not valid({"type": "tool_result"})
    assert not valid({"type": "tool_use", "id": "", "name": "n"})
    assert valid({"type": "image", "source": {"type": "base64", "data": "iVBORw0KGgo="}})
    assert not valid({"type": "image", "source": {"type": "base64", "data": "not base64!"}})
    assert not valid({"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}})


# --- rendering ----------------------------------------------------------------------


def test_message_with_thinking_text_tools_and_anthropic_usage() -> None:
    resp = ChatResponse(id="chatcmpl-up", model="gpt", text="Checking.", reasoning="plan",
                        finish_reason="tool_calls", usage=USAGE, tool_calls=[
                            ToolCall("call_a", "weather", '{"city":"Oslo"}'), ToolCall("call_b", "weather", "{oops")])
    out = render_message(resp, make_info())
    msg = AnthropicMessage.model_validate(out)
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == "openai/gpt-4o-mini" and msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[0].thinking == "plan" and msg.content[1].text == "Checking."
    assert (msg.content[2].id, msg.content[2].name, msg.content[2].input) == ("call_a", "weather", {"city": "Oslo"})
    assert msg.content[3].input == {}  # not valid JSON from the model: an empty object, logged
    # Anthropic's input_tokens excludes cache reads and writes; ours includes them.
    u = msg.usage
    assert (u.input_tokens, u.output_tokens) == (50, 80)
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (1000, 150)
    assert u.output_tokens_details.thinking_tokens == 30
    assert out["usage"]["warden"] == {"cost_usd": "0.000123"}


@pytest.mark.parametrize(("ours", "theirs"), [("stop", "end_turn"), ("length", "max_tokens"),
                                               ("content_filter", "refusal"), ("error", "end_turn")])
def test_stop_reasons(ours: str, theirs: str) -> None:
    out = render_message(ChatResponse(id="msg_up", model="m", text="t", finish_reason=ours), make_info(cost=None))
    msg = AnthropicMessage.model_validate(out)
    assert msg.stop_reason == theirs and msg.id == "msg_up"
    assert out["usage"]["warden"]["cost_usd"] is None and "output_tokens_details" not in out["usage"]


async def collect(stream: FakeStream) -> list[tuple[str, dict]]:
    renderer = EventRenderer(stream.info, request_id="rid-9")
    raw = b"".join([f async for f in render_stream(stream, renderer)])
    events = sse_events(raw)
    for name, data in events:
        assert data["type"] == name
    return events


async def test_stream_event_order_and_blocks() -> None:
    stream = FakeStream([
        ReasoningDelta("hm"), ReasoningDelta("m"), TextDelta("Hi"), TextDelta(" there"),
        ToolCallDelta(0, id="call_a", name="weather", arguments='{"city":'), ToolCallDelta(0, arguments='"Oslo"}'),
        ToolCallDelta(1, id="call_b", name="now"), ToolCallDelta(0, arguments=""),
        UsageEvent(USAGE), FinishEvent("tool_calls"),
    ], make_info(), final_cost=Decimal("0.5"))
    events = await collect(stream)
    parsed = [EVENTS.validate_python(data) for _, data in events]
    names = [n for n, _ in events]
    assert names == ["message_start",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_stop",
                     "message_delta", "message_stop"]
    start = parsed[0].message
    assert start.id.startswith("msg_") and start.model == "openai/gpt-4o-mini" and start.content == []
    blocks = [p for p in parsed if p.type == "content_block_start"]
    assert [(b.index, b.content_block.type) for b in blocks] == [(0, "thinking"), (1, "text"), (2, "tool_use"),
                                                                 (3, "tool_use")]
    assert (blocks[2].content_block.id, blocks[2].content_block.name) == ("call_a", "weather")
    json_parts = [p.delta.partial_json for p in parsed if p.type == "content_block_delta"
                  and p.delta.type == "input_json_delta"]
    assert json.loads("".join(json_parts)) == {"city": "Oslo"}
    delta = parsed[-2]
    assert delta.delta.stop_reason == "tool_use"
    assert (delta.usage.input_tokens, delta.usage.output_tokens, delta.usage.cache_read_input_tokens,
            delta.usage.cache_creation_input_tokens) == (50, 80, 1000, 150)
    assert events[-2][1]["usage"]["warden"] == {"cost_usd": "0.5"}


async def test_error_after_first_token_is_an_error_event_without_message_stop() -> None:
    stream = FakeStream([TextDelta("part"), ErrorEvent(Overloaded("busy", provider="anthropic")), TextDelta("x")],
                        make_info(), final_cost=Decimal("1"))
    events = await collect(stream)
    assert stream.info.cost_usd == Decimal("1")  # drained to its end, so the gateway settles it as failed
    assert [n for n, _ in events] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "busy",
                                              "code": "upstream_overloaded", "request_id": "rid-9"}}


async def test_raised_and_silent_endings_become_error_events() -> None:
    class Raising(FakeStream):
        async def _iter(self):
            yield TextDelta("a")
            raise RateLimited("slow down")

    class Buggy(FakeStream):
        async def _iter(self):
            yield TextDelta("a")
            raise KeyError("bug")

    for stream, kind in [(Raising([], make_info()), "rate_limit_error"), (Buggy([], make_info()), "api_error"),
                         (FakeStream([TextDelta("a")], make_info()), "api_error")]:
        events = await collect(stream)
        assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == kind
        assert "message_stop" not in [n for n, _ in events]


@pytest.mark.parametrize(("error", "kind"), [
    (RateLimited("x"), "rate_limit_error"), (Overloaded("x"), "overloaded_error"), (Timeout("x"), "timeout_error"),
    (BadRequest("x"), "invalid_request_error"), (ConnectFailed("x"), "api_error"), (WardenError("x"), "api_error")])
def test_stream_error_types(error: WardenError, kind: str) -> None:
    assert error_type(error) == kind


@pytest.mark.parametrize(("error", "kind"), [
    (Unauthorized("x"), "authentication_error"), (Forbidden("x"), "permission_error"),
    (NotFound("x"), "not_found_error"), (ValidationFailed("x"), "invalid_request_error"),
    (PayloadTooLarge("x"), "request_too_large"), (BudgetExceeded("x"), "rate_limit_error"),
    (ServiceUnavailable("x"), "api_error"), (ContextTooLong("x"), "request_too_large"),
    (ContentFiltered("x"), "invalid_request_error"), (AuthFailed("x"), "api_error"),
    (UpstreamMalformed("x"), "api_error")])
def test_every_error_has_an_anthropic_type(error: WardenError, kind: str) -> None:
    """Anthropic's own words, by the upstream class or else by the HTTP status; an
    upstream that refused Warden's credential is not the client's authentication error."""
    assert error_type(error) == kind


def test_the_error_body_is_the_envelope_with_anthropics_type() -> None:
    error = ValidationFailed("max_tokens: field required", param="max_tokens")
    assert error_body(error, "rid-1") == {
        "type": "error", "error": {**error.envelope("rid-1")["error"], "type": "invalid_request_error"}}
    assert "request_id" not in error_body(error, "")["error"]


# --- round trips through the Anthropic adapter's vocabulary ------------------------------

EP = Endpoint(provider="anthropic", wire="anthropic", base_url="http://up.test", model="m")


@pytest.mark.parametrize("reason", [r for r in get_args(FinishReason) if r != "error"])
def test_stop_reasons_read_back_as_they_were(reason: FinishReason) -> None:
    out = render_message(ChatResponse(id="msg_1", model="m", text="t", finish_reason=reason), make_info())
    assert adapter.parse_response(EP, out, json_mode=False).finish_reason == reason


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_efforts_survive_the_adapters_thinking_budgets(effort: str) -> None:
    req = ChatRequest(model="m", messages=[Message.text("user", "x")], reasoning_effort=effort)  # type: ignore[arg-type]
    sent = adapter.build_body(EP, req, stream=False)
    assert sent["thinking"]["budget_tokens"] == adapter.THINKING_BUDGET[effort]
    assert parse(orjson.dumps(sent)).reasoning_effort == effort


@pytest.mark.parametrize("cls", sorted({cls for _, cls in adapter.ERROR_TYPES.values()} - {AuthFailed},
                                       key=lambda c: c.__name__))
def test_upstream_error_types_read_back_as_the_same_class(cls: type[WardenError]) -> None:
    error = cls("x")
    raw = orjson.dumps(error_body(error, "rid-1"))
    assert type(adapter.classify("anthropic", error.status, {}, raw)) is cls

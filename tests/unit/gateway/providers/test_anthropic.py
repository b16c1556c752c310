"""Anthropic Messages adapter: requests checked with the SDK's own types, documented
replies and streams (text, tool use, thinking, errors) replayed byte for byte."""

from __future__ import annotations

import orjson
import pytest
from anthropic.types import message_create_params as mcp
from tests.support.providers import assemble_calls, chat, collect, endpoint, text_of, validate_params

from warden.gateway.errors import BadRequest, ContextTooLong, Overloaded
from warden.gateway.providers.anthropic import JSON_TOOL
from warden.gateway.providers.adapters import get_adapter
from warden.gateway.types import (
    ChatRequest,
    FinishEvent,
    ImagePart,
    Message,
    ReasoningDelta,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
    UsageEvent,
)
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def conversation() -> list[Message]:
    return [
        Message.text("system", "Be brief."),
        Message.text("system", "Use metric units."),
        Message(
            "user",
            [
                TextPart("Compare these"),
                ImagePart(url="https://example.com/a.jpg"),
                ImagePart(url="data:image/gif;base64,R0lGOD=="),
                ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
            ],
        ),
        Message(
            "assistant",
            [TextPart("Checking.")],
            tool_calls=[
                ToolCall("toolu_1", "lookup", '{"q": "a"}'),
                ToolCall("toolu_2", "lookup", "not json"),
            ],
        ),
        Message("tool", [TextPart("result a")], tool_call_id="toolu_1"),
        Message("tool", [TextPart("result b")], tool_call_id="toolu_2"),
        Message.text("user", "And now?"),
    ]


async def test_request_validates_against_sdk_types(anthropic_up: UpstreamServer) -> None:
    up = anthropic_up
    req = ChatRequest(
        model="m1",
        messages=conversation(),
        tools=[ToolSpec("lookup", "Look up", SCHEMA)],
        tool_choice=ToolChoice("tool", "lookup"),
        parallel_tool_calls=False,
        temperature=0.5,
        top_p=0.8,
        stop=["STOP"],
        user="user-7",
        seed=3,
    )
    await get_adapter("anthropic").complete(endpoint(up), req)
    body = up.last.body
    validate_params(mcp.MessageCreateParamsNonStreaming, body)
    assert up.last.path == "/v1/messages"
    assert up.last.headers["anthropic-version"] == "2023-06-01"
    assert up.last.headers["x-api-key"].startswith("sk-test")
    assert body["system"] == "Be brief.\n\nUse metric units."
    assert body["max_tokens"] == 4096
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    images = [b["source"] for b in body["messages"][0]["content"] if b["type"] == "image"]
    assert images == [
        {"type": "url", "url": "https://example.com/a.jpg"},
        {"type": "base64", "media_type": "image/gif", "data": "R0lGOD=="},
        {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    ]
    tool_uses = [b for b in body["messages"][1]["content"] if b["type"] == "tool_use"]
    assert [t["input"] for t in tool_uses] == [{"q": "a"}, {}]
    # Both results and the next user text share one user turn.
    last = body["messages"][2]["content"]
    assert [b["type"] for b in last] == ["tool_result", "tool_result", "text"]
    assert last[1] == {"type": "tool_result", "tool_use_id": "toolu_2", "content": "result b"}
    assert body["tools"] == [{"name": "lookup", "description": "Look up", "input_schema": SCHEMA}]
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "lookup",
        "disable_parallel_tool_use": True,
    }
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.5, 0.8, ["STOP"])
    assert body["metadata"] == {"user_id": "user-7"}
    assert "seed" not in body


async def test_reasoning_effort_becomes_thinking_budget(anthropic_up: UpstreamServer) -> None:
    up = anthropic_up
    await collect(
        up, chat("hi", reasoning_effort="low", temperature=0.3, tool_choice=ToolChoice("required"))
    )
    body = up.last.body
    validate_params(mcp.MessageCreateParamsStreaming, body)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 2048 + 4096
    assert "temperature" not in body  # refused by the API with thinking on
    assert body["tool_choice"] == {"type": "any"}
    # A max_tokens too small for the minimum budget: no thinking, sampling kept.
    await collect(up, chat("hi", reasoning_effort="high", max_tokens=500, temperature=0.3))
    assert "thinking" not in up.last.body and up.last.body["temperature"] == 0.3
    await collect(up, chat("hi", reasoning_effort="high", max_tokens=3000))
    assert up.last.body["thinking"]["budget_tokens"] == 2999


@pytest.mark.parametrize("fmt_type", ["json_schema", "json_object"])
async def test_json_mode_uses_a_forced_tool(anthropic_up: UpstreamServer, fmt_type: str) -> None:
    up = anthropic_up
    reply = Behaviour(tool_calls=[SimToolCall(JSON_TOOL, {"city": "Paris"})])
    up.enqueue(reply, reply)
    req = chat(
        "where?",
        response_format=ResponseFormat(fmt_type, SCHEMA if fmt_type == "json_schema" else None),
    )  # type: ignore[arg-type]
    resp = await get_adapter("anthropic").complete(endpoint(up), req)
    body = up.last.body
    assert body["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    assert body["tools"][0]["input_schema"] == (
        SCHEMA if fmt_type == "json_schema" else {"type": "object"}
    )
    assert orjson.loads(resp.text or "") == {"city": "Paris"}
    assert (resp.tool_calls, resp.finish_reason) == ([], "stop")
    events = await collect(up, req)
    assert orjson.loads(text_of(events)) == {"city": "Paris"}
    assert assemble_calls(events) == []
    assert events[-1] == FinishEvent("stop")


async def test_json_mode_with_user_tools_uses_a_system_instruction(
    anthropic_up: UpstreamServer,
) -> None:
    req = chat("hi", response_format=ResponseFormat("json_object"), tools=[ToolSpec("f")])
    await get_adapter("anthropic").complete(endpoint(anthropic_up), req)
    body = anthropic_up.last.body
    assert [t["name"] for t in body["tools"]] == ["f"]
    assert "JSON" in body["system"]


def test_default_base_url_is_used_when_empty() -> None:
    from warden.gateway.providers.anthropic import DEFAULT_BASE_URL, AnthropicAdapter
    from warden.gateway.types import Endpoint

    ep = Endpoint(provider="anthropic", wire="anthropic", base_url="", model="m")
    assert AnthropicAdapter()._url(ep, "/messages") == DEFAULT_BASE_URL + "/messages"


# --- documented examples ------------------------------------------------------

DOC_MESSAGE = b"""{
  "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "model": "claude-3-7-sonnet-20250219",
  "role": "assistant",
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "type": "message",
  "usage": {"input_tokens": 2095, "output_tokens": 503,
            "cache_creation_input_tokens": 2051, "cache_read_input_tokens": 2051}
}"""


def _ev(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


DOC_STREAM = b"".join(
    [
        _ev(
            "message_start",
            '{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}',
        ),
        _ev(
            "content_block_start",
            '{"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}',
        ),
        _ev(
            "content_block_delta",
            '{"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "I need the weather."}}',
        ),
        _ev(
            "content_block_delta",
            '{"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}',
        ),
        _ev("content_block_stop", '{"type": "content_block_stop", "index": 0}'),
        _ev(
            "content_block_start",
            '{"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}',
        ),
        _ev("ping", '{"type": "ping"}'),
        _ev(
            "content_block_delta",
            '{"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello"}}',
        ),
        _ev(
            "content_block_delta",
            '{"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "!"}}',
        ),
        _ev("content_block_stop", '{"type": "content_block_stop", "index": 1}'),
        _ev(
            "content_block_start",
            '{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}',
        ),
        _ev(
            "content_block_delta",
            '{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}',
        ),
        _ev(
            "content_block_delta",
            '{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}',
        ),
        _ev(
            "content_block_delta",
            '{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" \\"San Francisco, CA\\"}"}}',
        ),
        _ev("content_block_stop", '{"type":"content_block_stop","index":2}'),
        _ev(
            "message_delta",
            '{"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence":null}, "usage": {"output_tokens": 89}}',
        ),
        _ev("message_stop", '{"type": "message_stop"}'),
    ]
)


async def test_documented_message(anthropic_up: UpstreamServer) -> None:
    anthropic_up.enqueue(Behaviour(raw=DOC_MESSAGE))
    resp = await get_adapter("anthropic").complete(endpoint(anthropic_up), chat("hi"))
    assert resp.text == "Hi! My name is Claude."
    assert resp.id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert resp.usage == Usage(
        input_tokens=2095 + 2051 + 2051,
        output_tokens=503,
        cache_read_tokens=2051,
        cache_write_tokens=2051,
    )


async def test_documented_stream_with_thinking_and_tool_use(anthropic_up: UpstreamServer) -> None:
    anthropic_up.enqueue(Behaviour(raw=DOC_STREAM))
    events = await collect(anthropic_up, chat("weather?"))
    assert [e for e in events if isinstance(e, ReasoningDelta)] == [
        ReasoningDelta("I need the weather.")
    ]
    assert text_of(events) == "Hello!"
    assert assemble_calls(events) == [
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", '{"location": "San Francisco, CA"}')
    ]
    # message_delta's cumulative output count wins over message_start's placeholder.
    assert events[-2] == UsageEvent(Usage(input_tokens=25, output_tokens=89))
    assert events[-1] == FinishEvent("tool_calls")


async def test_documented_error_event_mid_stream(anthropic_up: UpstreamServer) -> None:
    raw = DOC_STREAM[: DOC_STREAM.index(b"event: content_block_stop")] + _ev(
        "error", '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    )
    anthropic_up.enqueue(Behaviour(raw=raw))
    with pytest.raises(Overloaded, match="Overloaded"):
        await collect(anthropic_up, chat("hi"))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            529,
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            Overloaded,
        ),
        (529, b"", Overloaded),
        (
            400,
            b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}',
            BadRequest,
        ),
        (
            413,
            b'{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}',
            ContextTooLong,
        ),
    ],
)
async def test_structured_error_bodies(
    anthropic_up: UpstreamServer, status: int, body: bytes, expected: type
) -> None:
    anthropic_up.enqueue(Behaviour(status=status, raw=body))
    with pytest.raises(expected) as info:
        await get_adapter("anthropic").complete(endpoint(anthropic_up), chat("hi"))
    assert info.value.upstream_status == status


async def test_cache_markers_native_fields_and_headers_reach_the_upstream(anthropic_up: UpstreamServer) -> None:
    from warden.gateway.types import Native

    eph = {"type": "ephemeral"}
    req = ChatRequest(
        model="m",
        messages=[Message("system", [TextPart("Be brief.", eph)]), Message.text("system", "Metric."),
                  Message("user", [TextPart("hi")], cache_control=eph)],
        tools=[ToolSpec("lookup", "d", {"type": "object"}, eph)],
        response_format=ResponseFormat("json_schema", schema=SCHEMA),
        native=Native("anthropic", body={"top_k": 3}, headers={"anthropic-beta": "b-1"}))
    await get_adapter("anthropic").complete(endpoint(anthropic_up), req)
    sent = anthropic_up.last
    assert sent.body["system"][:2] == [{"type": "text", "text": "Be brief.", "cache_control": eph},
                                       {"type": "text", "text": "Metric."}]
    assert sent.body["system"][2]["text"].startswith("Reply with a single valid JSON")  # with tools: asked
    assert sent.body["messages"][0]["content"][-1]["cache_control"] == eph
    assert sent.body["tools"][0]["cache_control"] == eph and sent.body["top_k"] == 3
    assert sent.headers["anthropic-beta"] == "b-1"
    validate_params(mcp.MessageCreateParamsNonStreaming, sent.body)
    other = ChatRequest(model="m", messages=[Message.text("user", "hi")], native=Native("openai", body={"x": 1}))
    await get_adapter("anthropic").complete(endpoint(anthropic_up), other)
    assert "x" not in anthropic_up.last.body  # another format's extras are not ours


async def test_count_tokens_is_the_upstreams_count(anthropic_up: UpstreamServer) -> None:
    req = ChatRequest(model="m", messages=[Message.text("system", "be kind"), Message.text("user", "hi there")])
    assert await get_adapter("anthropic").count_tokens(endpoint(anthropic_up), req) == 4
    assert anthropic_up.last.path == "/v1/messages/count_tokens" and "max_tokens" not in anthropic_up.last.body
    assert await get_adapter("openai").count_tokens(endpoint(anthropic_up), req) is None  # no counter

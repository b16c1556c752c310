"""Internal responses and stream events rendered as Chat Completions, checked
against the official ``openai`` SDK types."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import get_args

import pytest
from tests.support.gateway_fakes import FakeStream, make_info, sse_data
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from warden.formats.common import render_stream
from warden.formats.openai import ChunkRenderer, error_payload, render_completion, render_models
from warden.errors import ValidationFailed, WardenError
from warden.gateway.errors import Overloaded
from warden.gateway.providers import openai as adapter
from warden.gateway.types import (
    ChatResponse,
    Endpoint,
    ErrorEvent,
    FinishEvent,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

USAGE = Usage(input_tokens=120, output_tokens=40, cache_read_tokens=100, cache_write_tokens=5, reasoning_tokens=12)


def test_text_completion_with_usage_and_reasoning() -> None:
    resp = ChatResponse(id="msg_up", model="claude", text="Hello!", reasoning="thought", usage=USAGE)
    out = render_completion(resp, make_info(provider="anthropic", model="claude-3-5-haiku"), created=123)
    parsed = ChatCompletion.model_validate(out)
    assert parsed.id.startswith("chatcmpl-") and parsed.id != "chatcmpl-"
    assert parsed.object == "chat.completion" and parsed.created == 123
    assert parsed.model == "anthropic/claude-3-5-haiku"
    choice = parsed.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", "Hello!", "stop")
    assert choice.message.tool_calls is None
    assert out["choices"][0]["message"]["reasoning_content"] == "thought"
    u = parsed.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (120, 40, 160)
    assert u.prompt_tokens_details.cached_tokens == 100
    assert u.completion_tokens_details.reasoning_tokens == 12
    assert out["usage"]["warden"] == {"cost_usd": "0.000123", "cache_write_tokens": 5}


def test_upstream_chatcmpl_id_is_kept_and_unknown_cost_is_null() -> None:
    out = render_completion(ChatResponse(id="chatcmpl-up", model="m", text="x"), make_info(cost=None))
    assert out["id"] == "chatcmpl-up"
    assert out["usage"]["warden"]["cost_usd"] is None


def test_parallel_tool_calls() -> None:
    resp = ChatResponse(id="x", model="m", finish_reason="tool_calls", tool_calls=[
        ToolCall("call_a", "weather", '{"city":"Oslo"}'), ToolCall("call_b", "weather", '{"city":"Rome"}')])
    parsed = ChatCompletion.model_validate(render_completion(resp, make_info()))
    msg = parsed.choices[0].message
    assert parsed.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments)["city"]) for c in msg.tool_calls] == [
        ("call_a", "function", "weather", "Oslo"), ("call_b", "function", "weather", "Rome")]


def test_legacy_function_call_reply() -> None:
    resp = ChatResponse(id="x", model="m", finish_reason="tool_calls", tool_calls=[ToolCall("c", "lookup", "{}")])
    parsed = ChatCompletion.model_validate(render_completion(resp, make_info(), legacy_functions=True))
    assert parsed.choices[0].finish_reason == "function_call"
    assert parsed.choices[0].message.function_call.name == "lookup"
    assert parsed.choices[0].message.tool_calls is None


@pytest.mark.parametrize(("ours", "theirs"), [("length", "length"), ("content_filter", "content_filter"),
                                               ("error", "stop")])
def test_finish_reasons(ours: str, theirs: str) -> None:
    out = render_completion(ChatResponse(id="x", model="m", text="t", finish_reason=ours), make_info())
    assert ChatCompletion.model_validate(out).choices[0].finish_reason == theirs


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("reason", [r for r in get_args(FinishReason) if r != "error"])
def test_finish_reasons_read_back_as_they_were(reason: FinishReason, legacy: bool) -> None:
    """Rendered by the inverse of the adapter's table, so the adapter reads each back."""
    out = render_completion(ChatResponse(id="x", model="m", text="t", finish_reason=reason), make_info(),
                            legacy_functions=legacy)
    ep = Endpoint(provider="openai", wire="openai", base_url="http://up.test", model="m")
    assert adapter.parse_response(ep, out).finish_reason == reason


def test_error_payload_is_the_envelope() -> None:
    error = ValidationFailed("temperature: too hot", param="temperature")
    assert error_payload(error, "rid-1") == error.envelope("rid-1")
    assert error_payload(error, "") == error.envelope()


async def collect(stream: FakeStream, **kw) -> bytes:
    renderer = ChunkRenderer(stream.info, request_id="rid-1", **kw)
    return b"".join([frame async for frame in render_stream(stream, renderer)])


async def test_stream_order_tool_deltas_usage_and_done() -> None:
    stream = FakeStream([
        ReasoningDelta("think"), TextDelta("Hel"), TextDelta("lo"),
        ToolCallDelta(0, id="call_a", name="weather", arguments='{"ci'), ToolCallDelta(0, arguments='ty":"Oslo"}'),
        ToolCallDelta(1, id="call_b", name="now"),
        UsageEvent(USAGE), FinishEvent("tool_calls"),
    ], make_info(cost=None), final_cost=Decimal("0.0042"))
    raw = await collect(stream, include_usage=True)
    data = sse_data(raw)
    assert data[-1] == "[DONE]" and raw.endswith(b"data: [DONE]\n\n")
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in data[:-1]]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == "openai/gpt-4o-mini" for c in chunks)
    assert (chunks[0].choices[0].delta.role, chunks[0].choices[0].delta.content) == ("assistant", "")
    deltas = [c.choices[0].delta for c in chunks[1:-2]]
    assert json.loads(data[1])["choices"][0]["delta"] == {"reasoning_content": "think"}
    assert "".join(d.content or "" for d in deltas) == "Hello"
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert [(c.index, c.id, c.type, c.function.name, c.function.arguments) for c in calls] == [
        (0, "call_a", "function", "weather", '{"ci'), (0, None, None, None, 'ty":"Oslo"}'),
        (1, "call_b", "function", "now", "")]
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "tool_calls" and finish.usage is None
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.prompt_tokens == 120 and usage.usage.total_tokens == 160
    assert usage.usage.prompt_tokens_details.cached_tokens == 100
    # The cost is known only when the stream ends: it rides in the usage chunk.
    assert json.loads(data[-2])["usage"]["warden"]["cost_usd"] == "0.0042"


async def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    data = sse_data(await collect(FakeStream([TextDelta("a"), UsageEvent(USAGE), FinishEvent("length")],
                                             make_info()), include_usage=False))
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in data[:-1]]
    assert data[-1] == "[DONE]"
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, "length"]
    assert all(c.usage is None for c in chunks)


async def test_legacy_function_call_stream() -> None:
    data = sse_data(await collect(FakeStream([ToolCallDelta(0, id="c", name="lookup", arguments="{}"),
                                              FinishEvent("tool_calls")], make_info()),
                                  include_usage=False, legacy_functions=True))
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in data[:-1]]
    assert chunks[1].choices[0].delta.function_call.name == "lookup"
    assert chunks[-1].choices[0].finish_reason == "function_call"


async def test_error_after_first_token_ends_without_done() -> None:
    stream = FakeStream([TextDelta("partial"), ErrorEvent(Overloaded("upstream overloaded", provider="openai")),
                         TextDelta("never sent")], make_info(), final_cost=Decimal("1"))
    data = sse_data(await collect(stream, include_usage=True))
    assert stream.info.cost_usd == Decimal("1")  # drained to its end, so the gateway settles it as failed
    assert "[DONE]" not in data
    assert json.loads(data[1])["choices"][0]["delta"] == {"content": "partial"}
    assert len(data) == 3
    assert json.loads(data[-1]) == {"error": {"type": "upstream_error", "code": "upstream_overloaded",
                                              "message": "upstream overloaded", "request_id": "rid-1"}}


async def test_raised_errors_and_silent_ends_become_error_events() -> None:
    class Raising(FakeStream):
        async def _iter(self):
            yield TextDelta("a")
            raise WardenError("boom", code="stream_broke", status=502)

    class Buggy(FakeStream):
        async def _iter(self):
            yield TextDelta("a")
            raise KeyError("bug")

    cases = [(Raising([], make_info()), "stream_broke"), (Buggy([], make_info()), "internal_error"),
             (FakeStream([TextDelta("a")], make_info()), "stream_incomplete")]
    for stream, code in cases:
        data = sse_data(await collect(stream, include_usage=True))
        assert "[DONE]" not in data
        assert json.loads(data[-1])["error"]["code"] == code


def test_models_list_shape() -> None:
    from openai.types import Model
    out = render_models([{"id": "openai/gpt-4o-mini", "owned_by": "openai"}, {"id": "auto"}])
    assert out["object"] == "list"
    models = [Model.model_validate(m) for m in out["data"]]
    assert [(m.id, m.owned_by, m.object) for m in models] == [
        ("openai/gpt-4o-mini", "openai", "model"), ("auto", "warden", "model")]

"""OpenAI Chat Completions adapter: outgoing requests checked with the SDK's own types,
and documented reply / stream examples replayed byte for byte."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from openai.types import embedding_create_params as ecp
from openai.types.chat import completion_create_params as ccp
from tests.support.providers import assemble_calls, chat, collect, endpoint, text_of, validate_params

from warden.gateway.errors import (
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    RateLimited,
    UpstreamMalformed,
)
from warden.gateway.providers.adapters import get_adapter
from warden.gateway.types import (
    ChatRequest,
    EmbeddingRequest,
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
from warden.testing.upstream import Behaviour, UpstreamServer, embedding_vector

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def full_request(**kw: object) -> ChatRequest:
    messages = [
        Message.text("system", "You are terse."),
        Message(
            "user",
            [
                TextPart("What is in these images?"),
                ImagePart(url="https://example.com/cat.png", detail="low"),
                ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
            ],
        ),
        Message("assistant", [], tool_calls=[ToolCall("call_1", "lookup", '{"q": "cat"}')]),
        Message("tool", [TextPart("a cat")], tool_call_id="call_1", name="lookup"),
    ]
    return ChatRequest(
        model="m1",
        messages=messages,
        tools=[ToolSpec("lookup", "Look things up", SCHEMA)],
        tool_choice=ToolChoice("tool", "lookup"),
        parallel_tool_calls=False,
        response_format=ResponseFormat("json_schema", SCHEMA, "answer", True),
        temperature=0.2,
        top_p=0.9,
        max_tokens=100,
        stop=["END"],
        seed=7,
        reasoning_effort="low",
        user="u-1",
        **kw,  # type: ignore[arg-type]
    )


async def test_request_validates_against_sdk_types(openai_up: UpstreamServer) -> None:
    up = openai_up
    ep = dataclasses.replace(endpoint(up), provider="openai")
    await get_adapter("openai").complete(ep, full_request())
    body = up.last.body
    validate_params(ccp.CompletionCreateParamsNonStreaming, body)
    assert up.last.path == "/v1/chat/completions"
    assert up.last.headers["authorization"].startswith("Bearer sk-test")
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    parts = body["messages"][1]["content"]
    assert parts[1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
    }
    assert parts[2]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo="
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "lookup",
        "arguments": '{"q": "cat"}',
    }
    assert body["messages"][2]["content"] is None
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (
        0.2,
        0.9,
        7,
        ["END"],
    )
    assert (body["reasoning_effort"], body["user"]) == ("low", "u-1")


async def test_stream_request_asks_for_usage(openai_up: UpstreamServer) -> None:
    up = openai_up
    req = chat(
        "hi",
        response_format=ResponseFormat("json_object"),
        max_tokens=5,
        tool_choice=ToolChoice("required"),
    )
    await collect(up, req)
    body = up.last.body
    validate_params(ccp.CompletionCreateParamsStreaming, body)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["response_format"] == {"type": "json_object"}
    assert body["max_tokens"] == 5  # compatible servers (not provider "openai") get max_tokens
    assert body["tool_choice"] == "required"
    assert up.last.headers["accept"] == "text/event-stream"


async def test_json_schema_reply_is_text(openai_up: UpstreamServer) -> None:
    openai_up.enqueue(Behaviour(text='{"city": "Paris"}'))
    req = chat("where?", response_format=ResponseFormat("json_schema", SCHEMA))
    resp = await get_adapter("openai").complete(endpoint(openai_up), req)
    assert orjson.loads(resp.text or "") == {"city": "Paris"}
    assert openai_up.last.body["response_format"]["json_schema"]["name"] == "response"


async def test_auth_none_and_extra_headers(openai_up: UpstreamServer) -> None:
    async with UpstreamServer("openai") as open_up:
        ep = dataclasses.replace(endpoint(open_up, key=None), auth="none", headers={"x-extra": "1"})
        await get_adapter("openai").complete(ep, chat("hi"))
        assert "authorization" not in open_up.last.headers
        assert open_up.last.headers["x-extra"] == "1"


# --- documented examples ------------------------------------------------------

DOC_COMPLETION = b"""{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
      "reasoning_tokens": 0, "audio_tokens": 0,
      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default"
}"""

_HEAD = b'"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb"'


def _chunk(delta: str, finish: str = "null") -> bytes:
    return (
        b"data: {"
        + _HEAD
        + b',"choices":[{"index":0,"delta":'
        + delta.encode()
        + b',"logprobs":null,"finish_reason":'
        + finish.encode()
        + b"}]}\n\n"
    )


DOC_TOOL_STREAM = (
    b": keep-alive\n\n"
    + _chunk(
        '{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}]}'
    )
    + _chunk('{"tool_calls":[{"index":0,"function":{"arguments":"{\\""}}]}')
    + _chunk('{"tool_calls":[{"index":0,"function":{"arguments":"location"}}]}')
    + b": OPENROUTER PROCESSING\n\n"
    + _chunk('{"tool_calls":[{"index":0,"function":{"arguments":"\\":\\""}}]}')
    + _chunk('{"tool_calls":[{"index":0,"function":{"arguments":"Paris, France"}}]}')
    + _chunk('{"tool_calls":[{"index":0,"function":{"arguments":"\\"}"}}]}')
    + _chunk("{}", '"tool_calls"')
    + b"data: {"
    + _HEAD
    + b',"choices":[],"usage":{"prompt_tokens":81,"completion_tokens":16,"total_tokens":97,'
    b'"prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":0}}}\n\n'
    + b"data: [DONE]\n\n"
)

DEEPSEEK_STREAM = (
    _chunk('{"role":"assistant","content":null,"reasoning_content":""}')
    + _chunk('{"content":null,"reasoning_content":"Hmm"}')
    + _chunk('{"content":"Hi","reasoning_content":null}')
    + _chunk('{"content":"","reasoning_content":null}', '"stop"').replace(
        b'"finish_reason":"stop"}]}',
        b'"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,"prompt_cache_hit_tokens":8,"prompt_cache_miss_tokens":2,"completion_tokens_details":{"reasoning_tokens":2}}}',
    )
    + b"data: [DONE]\n\n"
)


async def test_documented_completion(openai_up: UpstreamServer) -> None:
    openai_up.enqueue(Behaviour(raw=DOC_COMPLETION))
    resp = await get_adapter("openai").complete(endpoint(openai_up), chat("hi"))
    assert resp.id == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert resp.model == "gpt-4.1-2025-04-14"
    assert resp.text == "Hello! How can I assist you today?"
    assert resp.usage == Usage(input_tokens=19, output_tokens=10)


async def test_documented_tool_stream_with_keepalive_comments(openai_up: UpstreamServer) -> None:
    openai_up.enqueue(Behaviour(raw=DOC_TOOL_STREAM))
    events = await collect(openai_up, chat("weather?"))
    assert assemble_calls(events) == [
        ("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", '{"location":"Paris, France"}')
    ]
    assert events[-2] == UsageEvent(Usage(input_tokens=81, output_tokens=16, cache_read_tokens=64))
    assert events[-1] == FinishEvent("tool_calls")


async def test_deepseek_reasoning_content_and_cache_hits(openai_up: UpstreamServer) -> None:
    openai_up.enqueue(Behaviour(raw=DEEPSEEK_STREAM))
    events = await collect(openai_up, chat("hi"))
    assert [e for e in events if isinstance(e, ReasoningDelta)] == [ReasoningDelta("Hmm")]
    assert text_of(events) == "Hi"
    assert events[-2] == UsageEvent(Usage(10, 3, cache_read_tokens=8, reasoning_tokens=2))
    assert events[-1] == FinishEvent("stop")


async def test_error_object_inside_200_stream(openai_up: UpstreamServer) -> None:
    raw = _chunk('{"content":"Hel"}') + (
        b'data: {"error":{"message":"The server had an error while processing your request.",'
        b'"type":"server_error","param":null,"code":null}}\n\n'
    )
    openai_up.enqueue(Behaviour(raw=raw))
    with pytest.raises(Overloaded) as info:
        await collect(openai_up, chat("hi"))
    assert info.value.upstream_status is None


async def test_content_filter_finish_and_stop_without_done(openai_up: UpstreamServer) -> None:
    # Some compatible servers end after the finish chunk without [DONE]; that is complete.
    openai_up.enqueue(Behaviour(raw=_chunk('{"content":"x"}') + _chunk("{}", '"content_filter"')))
    events = await collect(openai_up, chat("hi"))
    assert events == [events[0], FinishEvent("content_filter")]


async def test_tool_calls_with_stop_finish_normalised(openai_up: UpstreamServer) -> None:
    raw = _chunk('{"tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{}"}}]}') + _chunk(
        "{}", '"stop"'
    )
    openai_up.enqueue(Behaviour(raw=raw + b"data: [DONE]\n\n"))
    events = await collect(openai_up, chat("hi"))
    assert assemble_calls(events) == [("c1", "f", "{}")]
    assert events[-1] == FinishEvent("tool_calls")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}',
            ContextTooLong,
        ),
        (
            b'{"error":{"message":"filtered","type":"invalid_request_error","code":"content_policy_violation"}}',
            ContentFiltered,
        ),
        (
            b'{"error":{"message":"slow down","type":"tokens","code":"rate_limit_exceeded"}}',
            RateLimited,
        ),
        (b"<html>bad gateway</html>", Overloaded),
    ],
)
async def test_structured_error_bodies(
    openai_up: UpstreamServer, body: bytes, expected: type
) -> None:
    status = 502 if body.startswith(b"<") else 400
    openai_up.enqueue(Behaviour(status=status, raw=body))
    # `raw` with an error status replays the body as the error reply.
    with pytest.raises(expected):
        await get_adapter("openai").complete(endpoint(openai_up), chat("hi"))


# --- embeddings -----------------------------------------------------------------


async def test_embeddings_request_is_the_sdks_and_reply_is_read_in_index_order(
        openai_up: UpstreamServer) -> None:
    req = EmbeddingRequest("ignored", ["a b", "c"], dimensions=4, user="u-1")
    resp = await get_adapter("openai").embed(endpoint(openai_up, model="text-embedding-3-small"), req)
    sent = openai_up.last
    assert sent.path == "/v1/embeddings"
    assert validate_params(ecp.EmbeddingCreateParams, sent.body) == {
        "model": "text-embedding-3-small", "input": ["a b", "c"], "dimensions": 4,
        "user": "u-1", "encoding_format": "float"}
    assert resp.vectors == [embedding_vector("a b", 4), embedding_vector("c", 4)]
    assert resp.usage == Usage(input_tokens=3) and resp.model == "text-embedding-3-small"
    tokens = await get_adapter("openai").embed(endpoint(openai_up), EmbeddingRequest("m", [[1, 2, 3]]))
    assert openai_up.last.body["input"] == [[1, 2, 3]]  # one input of token ids, as the SDK sends it
    assert tokens.vectors == [embedding_vector([1, 2, 3], 1536)] and tokens.usage.input_tokens == 3
    # The documented reply shape, items out of order: put back by index.
    doc = {"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 2},
           "data": [{"object": "embedding", "index": 1, "embedding": [0.5, -1]},
                    {"object": "embedding", "index": 0, "embedding": [0.25, 0]}]}
    openai_up.enqueue(Behaviour(raw=orjson.dumps(doc)))
    resp = await get_adapter("openai").embed(endpoint(openai_up), EmbeddingRequest("m", ["x", "y"]))
    assert resp.vectors == [[0.25, 0], [0.5, -1]] and resp.usage.input_tokens == 2


@pytest.mark.parametrize("reply", [
    {"data": [{"index": 0, "embedding": "AAAA"}]},  # base64 although floats were asked for
    {"data": [{"index": 0, "embedding": ["x"]}]},
    {"data": []},  # one input, no vector
    {"data": [{"index": 0, "embedding": []}]},
])
async def test_embeddings_malformed_replies_are_typed(openai_up: UpstreamServer, reply: dict) -> None:
    openai_up.enqueue(Behaviour(raw=orjson.dumps(reply)))
    with pytest.raises(UpstreamMalformed):
        await get_adapter("openai").embed(endpoint(openai_up), EmbeddingRequest("m", ["x"]))

"""Gemini generateContent adapter: request mapping and documented replies/streams."""

from __future__ import annotations

import orjson
import pytest
from tests.support.providers import assemble_calls, chat, collect, endpoint, text_of

from warden.gateway.errors import AuthFailed, BadRequest, ContentFiltered, RateLimited, UpstreamMalformed
from warden.gateway.providers.adapters import get_adapter
from warden.gateway.types import (
    EmbeddingRequest,
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
from warden.testing.upstream import Behaviour, UpstreamServer, embedding_vector

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "additionalProperties": False,
}


def conversation() -> list[Message]:
    return [
        Message.text("system", "Be brief."),
        Message(
            "user",
            [
                TextPart("Look"),
                ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
                ImagePart(url="data:image/webp;base64,UklGRg=="),
                ImagePart(url="https://example.com/a.jpg"),
            ],
        ),
        Message(
            "assistant",
            [],
            tool_calls=[
                ToolCall("c1", "get_weather", '{"city": "Paris"}'),
                ToolCall("c2", "get_time", "oops"),
            ],
        ),
        Message("tool", [TextPart('{"temp": 21}')], tool_call_id="c1"),
        Message("tool", [TextPart("noon")], tool_call_id="c2", name="get_time"),
        Message("tool", [TextPart("[1, 2]")], tool_call_id="unknown"),
    ]


async def test_request_mapping(gemini_up: UpstreamServer) -> None:
    up = gemini_up
    req = ChatRequest(
        model="m1",
        messages=conversation(),
        tools=[ToolSpec("get_weather", "Weather", SCHEMA)],
        tool_choice=ToolChoice("tool", "get_weather"),
        temperature=0.1,
        top_p=0.5,
        max_tokens=64,
        seed=9,
        stop=["X"],
        reasoning_effort="medium",
        response_format=ResponseFormat("json_schema", SCHEMA),
    )
    await get_adapter("gemini").complete(endpoint(up, model="gemini-2.5-flash"), req)
    rec = up.last
    assert rec.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert rec.headers["x-goog-api-key"].startswith("sk-test")
    body = rec.body
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0]["parts"] == [
        {"text": "Look"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}},
    ]
    assert body["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]
    # Names come from Message.name or the earlier call; non-object results are wrapped.
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
        {"functionResponse": {"name": "tool", "response": {"result": [1, 2]}}},
    ]
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "get_weather", "description": "Weather", "parametersJsonSchema": SCHEMA}
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    assert body["generationConfig"] == {
        "temperature": 0.1,
        "topP": 0.5,
        "maxOutputTokens": 64,
        "seed": 9,
        "stopSequences": ["X"],
        "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA,
        "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True},
    }


async def test_stream_url_and_minimal_body(gemini_up: UpstreamServer) -> None:
    up = gemini_up
    events = await collect(
        up,
        chat("hi", response_format=ResponseFormat("json_object"), tool_choice=ToolChoice("none")),
    )
    assert up.last.path == "/v1beta/models/m1:streamGenerateContent"
    assert up.last.query == {"alt": "sse"}
    assert up.last.body["generationConfig"] == {"responseMimeType": "application/json"}
    assert up.last.body["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}
    assert "systemInstruction" not in up.last.body
    assert events[-1] == FinishEvent("stop")


async def test_json_schema_reply(gemini_up: UpstreamServer) -> None:
    gemini_up.enqueue(Behaviour(text='{"city": "Rome"}'))
    resp = await get_adapter("gemini").complete(
        endpoint(gemini_up), chat("where?", response_format=ResponseFormat("json_schema", SCHEMA))
    )
    assert orjson.loads(resp.text or "") == {"city": "Rome"}


# --- documented examples ------------------------------------------------------

DOC_RESPONSE = b"""{
  "candidates": [
    {
      "content": {"parts": [{"text": "Let me think.", "thought": true}, {"text": "AI learns patterns from data."}], "role": "model"},
      "finishReason": "STOP",
      "avgLogprobs": -0.2
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 8,
    "candidatesTokenCount": 12,
    "totalTokenCount": 120,
    "cachedContentTokenCount": 4,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
    "thoughtsTokenCount": 100
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "abc123"
}"""

DOC_FUNCTION_CALL = b"""{
  "candidates": [{
    "content": {"role": "model", "parts": [
      {"functionCall": {"name": "set_light_values", "args": {"brightness": 25, "color_temp": "warm"}}},
      {"functionCall": {"id": "fc-2", "name": "power", "args": {}}}
    ]},
    "finishReason": "STOP"
  }],
  "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 20, "totalTokenCount": 50}
}"""

DOC_STREAM = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],'
    b'"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": " sky is blue"}],"role": "model"},"index": 0}],'
    b'"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 4,"totalTokenCount": 13},"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}],"role": "model"},'
    b'"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 6,'
    b'"totalTokenCount": 30,"thoughtsTokenCount": 15},"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
)


async def test_documented_response_with_thoughts(gemini_up: UpstreamServer) -> None:
    gemini_up.enqueue(Behaviour(raw=DOC_RESPONSE))
    resp = await get_adapter("gemini").complete(endpoint(gemini_up), chat("hi"))
    assert (resp.id, resp.model) == ("abc123", "gemini-2.5-flash")
    assert (resp.text, resp.reasoning) == ("AI learns patterns from data.", "Let me think.")
    assert resp.usage == Usage(
        input_tokens=8, output_tokens=112, cache_read_tokens=4, reasoning_tokens=100
    )


async def test_documented_function_calls(gemini_up: UpstreamServer) -> None:
    gemini_up.enqueue(Behaviour(raw=DOC_FUNCTION_CALL))
    resp = await get_adapter("gemini").complete(endpoint(gemini_up), chat("lights"))
    assert [(c.id, c.name, orjson.loads(c.arguments)) for c in resp.tool_calls] == [
        ("call_0", "set_light_values", {"brightness": 25, "color_temp": "warm"}),
        ("fc-2", "power", {}),
    ]
    assert resp.finish_reason == "tool_calls"


async def test_documented_stream(gemini_up: UpstreamServer) -> None:
    gemini_up.enqueue(Behaviour(raw=DOC_STREAM))
    events = await collect(gemini_up, chat("sky?"))
    assert text_of(events) == "The sky is blue"
    assert assemble_calls(events) == [("call_0", "f", '{"a":1}')]
    assert events[-2] == UsageEvent(Usage(input_tokens=9, output_tokens=21, reasoning_tokens=15))
    assert events[-1] == FinishEvent("tool_calls")


async def test_stream_thought_parts_are_reasoning(gemini_up: UpstreamServer) -> None:
    gemini_up.enqueue(Behaviour(text="yes", reasoning="hmm ok"))
    events = await collect(gemini_up, chat("hi"))
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "hmm ok"
    assert text_of(events) == "yes"


BLOCKED = b'{"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}, "usageMetadata": {"promptTokenCount": 5}}'


async def test_blocked_prompt_is_content_filtered(gemini_up: UpstreamServer) -> None:
    gemini_up.enqueue(Behaviour(raw=BLOCKED), Behaviour(raw=b"data: " + BLOCKED + b"\r\n\r\n"))
    with pytest.raises(ContentFiltered, match="SAFETY"):
        await get_adapter("gemini").complete(endpoint(gemini_up), chat("bad"))
    with pytest.raises(ContentFiltered):
        await collect(gemini_up, chat("bad"))


async def test_safety_finish_and_missing_candidates(gemini_up: UpstreamServer) -> None:
    gemini_up.enqueue(
        Behaviour(text="partial", finish_reason="SAFETY"), Behaviour(raw=b'{"candidates": []}')
    )
    resp = await get_adapter("gemini").complete(endpoint(gemini_up), chat("x"))
    assert resp.finish_reason == "content_filter"
    with pytest.raises(UpstreamMalformed, match="no candidates"):
        await get_adapter("gemini").complete(endpoint(gemini_up), chat("x"))


async def test_stream_skips_usage_only_chunks(gemini_up: UpstreamServer) -> None:
    raw = (
        b'data: {"usageMetadata": {"promptTokenCount": 3}}\r\n\r\n'
        b'data: {"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "MAX_TOKENS"}],'
        b' "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}}\r\n\r\n'
    )
    gemini_up.enqueue(Behaviour(raw=raw))
    events = await collect(gemini_up, chat("x"))
    assert events[-2:] == [UsageEvent(Usage(3, 1)), FinishEvent("length")]


@pytest.mark.parametrize(
    ("status", "body", "expected", "retry_after"),
    [
        (
            429,
            (
                b'{"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED",'
                b' "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"},'
                b' "junk"]}}'
            ),
            RateLimited,
            31.0,
        ),
        (
            400,
            (
                b'[{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",'
                b' "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",'
                b' "reason": "API_KEY_INVALID"}]}}]'
            ),
            AuthFailed,
            None,
        ),
    ],
)
async def test_structured_error_bodies(
    gemini_up: UpstreamServer, status: int, body: bytes, expected: type, retry_after: float | None
) -> None:
    gemini_up.enqueue(Behaviour(status=status, raw=body))
    with pytest.raises(expected) as info:
        await get_adapter("gemini").complete(endpoint(gemini_up), chat("x"))
    assert info.value.retry_after == retry_after


async def test_missing_key_is_auth_failed(gemini_up: UpstreamServer) -> None:
    with pytest.raises(AuthFailed) as info:
        await get_adapter("gemini").list_models(endpoint(gemini_up, key=None))
    assert info.value.upstream_status == 403


# --- embeddings -----------------------------------------------------------------


async def test_embeddings_one_input_is_embed_content_several_batch(gemini_up: UpstreamServer) -> None:
    ep = endpoint(gemini_up, model="gemini-embedding-001")
    resp = await get_adapter("gemini").embed(ep, EmbeddingRequest("x", ["four chars"], dimensions=3))
    assert gemini_up.last.path == "/v1beta/models/gemini-embedding-001:embedContent"
    assert gemini_up.last.body == {"model": "models/gemini-embedding-001",
                                   "content": {"parts": [{"text": "four chars"}]},
                                   "outputDimensionality": 3}
    assert resp.vectors == [embedding_vector("four chars", 3)]
    assert resp.usage.input_tokens == 3  # no count from Gemini: ceil(10 characters / 4)
    resp = await get_adapter("gemini").embed(ep, EmbeddingRequest("x", ["a", "b"]))
    assert gemini_up.last.path.endswith(":batchEmbedContents")
    assert [r["content"]["parts"][0]["text"] for r in gemini_up.last.body["requests"]] == ["a", "b"]
    assert "outputDimensionality" not in gemini_up.last.body["requests"][0]
    assert resp.vectors == [embedding_vector("a", 3072), embedding_vector("b", 3072)]


async def test_embeddings_refuse_token_ids_and_read_replies_strictly(gemini_up: UpstreamServer) -> None:
    with pytest.raises(BadRequest) as exc:
        await get_adapter("gemini").embed(endpoint(gemini_up), EmbeddingRequest("x", [[1, 2]]))
    assert exc.value.code == "token_input_unsupported" and gemini_up.requests == []
    gemini_up.enqueue(Behaviour(raw=orjson.dumps({"embeddings": [{"values": [0.5]}]})))
    with pytest.raises(UpstreamMalformed):  # two inputs, one vector
        await get_adapter("gemini").embed(endpoint(gemini_up), EmbeddingRequest("x", ["a", "b"]))

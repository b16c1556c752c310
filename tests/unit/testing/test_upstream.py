"""The loopback upstream simulator, checked with the official SDKs and their types."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from array import array
from collections.abc import Iterator

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from warden.testing.upstream import (
    DEFAULT_TEXT,
    Behaviour,
    SimToolCall,
    UpstreamServer,
    embedding_vector,
    prompt_words,
    split_pieces,
)

KEY = "sk-sim-test-key-123456"
CALLS = [SimToolCall("get_weather", {"city": "Paris"}), SimToolCall("get_time", {})]


@pytest.fixture(scope="module")
def openai_thread() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=KEY) as up:  # background thread: sync SDK clients work
        yield up


@pytest.fixture
def oa(openai_thread: UpstreamServer) -> Iterator[openai.OpenAI]:
    openai_thread.reset()
    with openai.OpenAI(api_key=KEY, base_url=openai_thread.base_url, max_retries=0) as client:
        yield client


def sse_data(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


# --- OpenAI ---------------------------------------------------------------------


def test_openai_sdk_completion_with_exact_usage(
    oa: openai.OpenAI, openai_thread: UpstreamServer
) -> None:
    openai_thread.enqueue(Behaviour(reasoning="a b", reasoning_tokens=5, cache_read_tokens=2))
    resp = oa.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "hello there"},
        ],
    )
    assert resp.choices[0].message.content == DEFAULT_TEXT
    assert resp.model == "gpt-4o-mini"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 4 + 2
    assert resp.usage.prompt_tokens_details.cached_tokens == 2  # type: ignore[union-attr]
    assert resp.usage.completion_tokens == len(DEFAULT_TEXT.split()) + 2 + 5
    assert resp.usage.completion_tokens_details.reasoning_tokens == 7  # type: ignore[union-attr]
    assert openai_thread.last.headers["authorization"] == f"Bearer {KEY}"
    assert openai_thread.last.body["messages"][1]["content"] == "hello there"


def test_openai_sdk_stream_tools_and_usage_chunk(
    oa: openai.OpenAI, openai_thread: UpstreamServer
) -> None:
    openai_thread.enqueue(Behaviour(tool_calls=CALLS))
    chunks = list(
        oa.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "w"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2
    args: dict[int, str] = {}
    for c in chunks[:-1]:
        for tc in c.choices[0].delta.tool_calls or []:
            args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")  # type: ignore[union-attr]
    assert {i: orjson.loads(a) for i, a in args.items()} == {0: {"city": "Paris"}, 1: {}}
    assert chunks[-2].choices[0].finish_reason == "tool_calls"


def test_openai_stream_without_include_usage_has_no_usage(openai_thread: UpstreamServer) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    r = httpx.post(
        openai_thread.base_url + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {KEY}"},
    )
    data = sse_data(r.content)
    assert data[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(d) for d in data[:-1]]
    assert all(c.usage is None and c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_TEXT
    assert r.headers["content-type"] == "text/event-stream"


def test_openai_replies_parse_as_sdk_types(openai_thread: UpstreamServer) -> None:
    openai_thread.enqueue(
        Behaviour(tool_calls=CALLS, text="x", reasoning="r", finish_reason="length")
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(
        openai_thread.base_url + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {KEY}"},
    )
    completion = ChatCompletion.model_validate_json(r.content)
    assert completion.choices[0].finish_reason == "length"
    assert [t.function.name for t in completion.choices[0].message.tool_calls or []] == [
        "get_weather",
        "get_time",
    ]  # type: ignore[union-attr]
    assert r.json()["choices"][0]["message"]["reasoning_content"] == "r"


def test_openai_sdk_errors(oa: openai.OpenAI, openai_thread: UpstreamServer) -> None:
    openai_thread.enqueue(Behaviour(status=429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as info:
        oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.code == "rate_limit_exceeded"
    bad = openai.OpenAI(api_key="sk-wrong", base_url=openai_thread.base_url, max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError) as auth:
        bad.models.list()
    assert auth.value.code == "invalid_api_key"


def test_openai_sdk_models_list(oa: openai.OpenAI) -> None:
    assert [m.id for m in oa.models.list()] == ["gpt-4o-mini", "gpt-4o"]


def test_missing_key_and_unknown_route(openai_thread: UpstreamServer) -> None:
    r = httpx.get(openai_thread.base_url + "/models")
    assert r.status_code == 401 and r.json()["error"]["code"] is None
    r = httpx.get(openai_thread.base_url + "/nope", headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


# --- Anthropic -------------------------------------------------------------------


async def test_anthropic_sdk_message_and_stream_events() -> None:
    async with UpstreamServer("anthropic", api_key=KEY) as up:
        client = anthropic.AsyncAnthropic(api_key=KEY, base_url=up.url, max_retries=0)
        up.enqueue(
            Behaviour(
                reasoning="hmm", tool_calls=CALLS[:1], cache_write_tokens=3, cache_read_tokens=4
            )
        )
        msg = await client.messages.create(
            model="claude-x",
            max_tokens=100,
            system="sys words",
            messages=[{"role": "user", "content": "one two"}],
        )
        assert isinstance(msg, AnthropicMessage)
        assert [b.type for b in msg.content] == ["thinking", "tool_use"]
        assert msg.stop_reason == "tool_use"
        assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 2)
        assert (msg.usage.cache_creation_input_tokens, msg.usage.cache_read_input_tokens) == (3, 4)

        up.enqueue(Behaviour(text="a b c", tool_calls=CALLS))
        async with client.messages.stream(
            model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
        assert final.content[0].text == "a b c"  # type: ignore[union-attr]
        assert [b.input for b in final.content[1:]] == [{"city": "Paris"}, {}]  # type: ignore[union-attr]
        assert final.usage.output_tokens == 5
        assert [m.id async for m in client.models.list()] == [
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
        ]
        await client.close()


async def test_anthropic_raw_stream_is_event_lines_and_sdk_types() -> None:
    async with UpstreamServer("anthropic") as up, httpx.AsyncClient() as http:
        up.enqueue(Behaviour(text="x y", reasoning="r"))
        body = {
            "model": "c",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        r = await http.post(
            up.base_url + "/messages", json=body, headers={"anthropic-version": "2023-06-01"}
        )
        blocks = [b for b in r.text.split("\n\n") if b]
        adapter = TypeAdapter(RawMessageStreamEvent)
        assert (
            blocks[1] == 'event: ping\ndata: {"type":"ping"}'
        )  # the SDK skips pings: not a RawMessageStreamEvent
        for block in blocks[:1] + blocks[2:]:
            event_line, data_line = block.split("\n")
            event = adapter.validate_json(data_line.removeprefix("data: "))
            assert event_line == f"event: {event.type}"
        assert [b.split("\n")[0] for b in blocks[-2:]] == [
            "event: message_delta",
            "event: message_stop",
        ]


async def test_anthropic_sdk_errors() -> None:
    async with UpstreamServer("anthropic", api_key=KEY) as up:
        client = anthropic.AsyncAnthropic(api_key=KEY, base_url=up.url, max_retries=0)
        up.enqueue(Behaviour(status=529, error_message="Overloaded"))
        with pytest.raises(anthropic.APIStatusError) as info:
            await client.messages.create(
                model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert info.value.status_code == 529
        assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        bad = anthropic.AsyncAnthropic(api_key="wrong", base_url=up.url, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            await bad.models.list()
        async with httpx.AsyncClient() as http:
            r = await http.get(up.base_url + "/models", headers={"x-api-key": KEY})
            assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
            r = await http.get(up.base_url + "/models", headers={"anthropic-version": "2023-06-01"})
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        await client.close()
        await bad.close()


# --- Gemini ----------------------------------------------------------------------


async def test_gemini_shapes_auth_and_array_stream() -> None:
    async with (
        UpstreamServer("gemini", api_key=KEY, models=["g1"]) as up,
        httpx.AsyncClient() as http,
    ):
        body = {"contents": [{"role": "user", "parts": [{"text": "one two three"}]}]}
        url = up.base_url + "/models/g1:generateContent"
        r = await http.post(url, json=body, params={"key": KEY})
        data = r.json()
        assert data["candidates"][0]["content"] == {
            "parts": [{"text": DEFAULT_TEXT}],
            "role": "model",
        }
        assert data["usageMetadata"]["promptTokenCount"] == 3
        assert data["modelVersion"] == "g1"
        r = await http.post(
            up.base_url + "/models/g1:streamGenerateContent",
            json=body,
            headers={"x-goog-api-key": KEY},
        )
        chunks = r.json()  # without alt=sse: one JSON array of responses
        assert (
            "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
            == DEFAULT_TEXT
        )
        assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
        r = await http.get(up.base_url + "/models")
        assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
        r = await http.get(up.base_url + "/models", headers={"x-goog-api-key": "bad"})
        assert (
            r.status_code == 400 and r.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        )
        r = await http.get(up.base_url + "/models", headers={"x-goog-api-key": KEY})
        assert r.json()["models"][0]["name"] == "models/g1"
        up.enqueue(Behaviour(status=429, retry_after=5))
        r = await http.post(url, json=body, params={"key": KEY})
        assert r.json()["error"]["details"][0]["retryDelay"] == "5s"
        assert r.headers["retry-after"] == "5"
        up.enqueue(Behaviour(text="", stream_error=None))
        r = await http.post(
            up.base_url + "/models/g1:streamGenerateContent",
            json=body,
            params={"key": KEY, "alt": "sse"},
        )
        assert r.text.endswith("\r\n\r\n") and '"finishReason":"STOP"' in r.text


# --- the usage rule, scripting and the HTTP layer -----------------------------------


def test_usage_rule_helpers() -> None:
    assert split_pieces("abcdefg", 3) == ["abc", "de", "fg"]
    assert split_pieces("hi there", None) == ["hi ", "there"]
    assert split_pieces("", None) == []
    body = {
        "system": [{"type": "text", "text": "a b"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": "c d e"},
                    {"type": "image", "source": {"type": "base64", "data": "x y z"}},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {"text": "no"}}],
            },
        ],
    }
    assert prompt_words("anthropic", body) == 5
    assert prompt_words("openai", None) == 1
    assert prompt_words("gemini", {"contents": []}) == 1


async def test_chunks_behaviour_sets_output_tokens_and_reset() -> None:
    async with (
        UpstreamServer("openai", default=Behaviour(text="fixed")) as up,
        httpx.AsyncClient() as http,
    ):
        up.enqueue(Behaviour(text="abcdefghij", chunks=4))
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "q"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        r = await http.post(up.base_url + "/chat/completions", json=body)
        chunks = [ChatCompletionChunk.model_validate_json(d) for d in sse_data(r.content)[:-1]]
        assert [c.choices[0].delta.content for c in chunks[1:5]] == ["abc", "def", "gh", "ij"]
        assert chunks[-1].usage.completion_tokens == 4  # type: ignore[union-attr]
        r = await http.post(up.base_url + "/chat/completions", json={**body, "stream": False})
        assert r.json()["choices"][0]["message"]["content"] == "fixed"  # queue empty: the default
        assert len(up.requests) == 2
        up.enqueue(Behaviour(status=500))
        up.reset()
        assert up.requests == []
        up.record = False
        r = await http.post(up.base_url + "/chat/completions", json={**body, "stream": False})
        assert r.status_code == 200


async def test_http_layer_keep_alive_close_and_bad_requests() -> None:
    async with UpstreamServer("openai") as up:
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                r = await http.get(up.base_url + "/models")
                assert r.status_code == 200
            assert len(up._connections) == 1  # keep-alive reuses one connection
            r = await http.get(up.base_url + "/models", headers={"connection": "close"})
            assert r.headers["connection"] == "close"
            up.enqueue(Behaviour(status=418))
            r = await http.get(up.base_url + "/models")
            assert (r.status_code, r.reason_phrase) == (418, "I'm a Teapot")
            up.enqueue(Behaviour(status=529))
            r = await http.get(up.base_url + "/models")
            assert r.reason_phrase == "Overloaded"
            r = await http.post(up.base_url + "/chat/completions", content=b"not json")
            assert r.status_code == 404 and up.last.body is None
        reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
        writer.write(b"GARBAGE\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        UpstreamServer("cohere")  # type: ignore[arg-type]


def test_start_fails_on_taken_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            UpstreamServer("openai", port=s.getsockname()[1]).start()


def test_command_line_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "warden.testing.upstream",
            "--format",
            "anthropic",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--text",
            "bench reply",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"upstream anthropic listening on http://127.0.0.1:{port}/v1"
        client = anthropic.Anthropic(
            api_key=KEY, base_url=f"http://127.0.0.1:{port}", max_retries=0
        )
        msg = client.messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.content[0].text == "bench reply"  # type: ignore[union-attr]
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- embeddings ------------------------------------------------------------------


def test_openai_sdk_embeddings_base64_and_float(oa: openai.OpenAI, openai_thread: UpstreamServer) -> None:
    resp = oa.embeddings.create(model="text-embedding-3-small", input=["two words", "x"], dimensions=5)
    assert openai_thread.last.body["encoding_format"] == "base64"  # the SDK's default
    assert [array("f", d.embedding).tolist() for d in resp.data] == [
        embedding_vector("two words", 5), embedding_vector("x", 5)]
    assert resp.usage.prompt_tokens == 3
    floats = oa.embeddings.create(model="text-embedding-3-large", input=[5, 6], encoding_format="float")
    assert floats.data[0].embedding == embedding_vector([5, 6], 3072) and floats.usage.prompt_tokens == 2
    vector = embedding_vector("same", 64)
    assert vector == embedding_vector("same", 64) != embedding_vector("other", 64)
    assert abs(sum(v * v for v in vector) - 1) < 1e-6 and vector == array("f", vector).tolist()


def test_gemini_embed_routes() -> None:
    with UpstreamServer("gemini") as up:
        base = f"{up.base_url}/models/gemini-embedding-001"
        part = {"content": {"parts": [{"text": "hi"}]}}
        one = httpx.post(f"{base}:embedContent", json={**part, "outputDimensionality": 2}).json()
        assert one == {"embedding": {"values": embedding_vector("hi", 2)}}
        batch = httpx.post(f"{base}:batchEmbedContents", json={"requests": [part, part]}).json()
        assert batch == {"embeddings": [{"values": embedding_vector("hi", 3072)}] * 2}
        up.enqueue(Behaviour(malformed=True))
        assert httpx.post(f"{base}:embedContent", json=part).content == b'{"data": ['

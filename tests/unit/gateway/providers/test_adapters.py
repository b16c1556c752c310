"""Every adapter against a real loopback upstream of its format: replies, streams, faults."""

from __future__ import annotations

import asyncio
import logging
import socket

import orjson
import pytest
from tests.support.providers import KEY, assemble_calls, chat, collect, endpoint, text_of

from warden.gateway.errors import (
    AuthFailed,
    BadRequest,
    ConnectFailed,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    Timeout,
    UpstreamMalformed,
)
from warden.gateway.providers.adapters import get_adapter
from warden.gateway.types import (
    EmbeddingRequest,
    FinishEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    UsageEvent,
)
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, SimToolCall, UpstreamServer

PROMPT = ("one two three", "four five")  # 5 prompt words
CALLS = [SimToolCall("get_weather", {"city": "Paris"}), SimToolCall("get_time", {"tz": "CET"})]
TOOLS = [ToolSpec("get_weather", "Weather", {"type": "object"}), ToolSpec("get_time", "Time")]


async def test_complete_returns_text_and_exact_usage(up: UpstreamServer) -> None:
    resp = await get_adapter(up.format).complete(endpoint(up), chat(*PROMPT))
    assert resp.text == DEFAULT_TEXT
    assert resp.finish_reason == "stop"
    assert resp.tool_calls == []
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (5, len(DEFAULT_TEXT.split()))


async def test_stream_emits_deltas_then_one_usage_then_finish(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="alpha beta gamma"))
    events = await collect(up, chat(*PROMPT))
    assert text_of(events) == "alpha beta gamma"
    assert [type(e) for e in events[-2:]] == [UsageEvent, FinishEvent]
    usages = [e.usage for e in events if isinstance(e, UsageEvent)]
    # Anthropic reports the prompt first: an early UsageEvent with the input figures.
    assert len(usages) == (2 if up.format == "anthropic" else 1)
    if up.format == "anthropic":
        assert isinstance(events[0], UsageEvent) and (usages[0].input_tokens, usages[0].output_tokens) == (5, 1)
    assert sum(isinstance(e, FinishEvent) for e in events) == 1
    usage = events[-2].usage  # type: ignore[union-attr]
    assert (usage.input_tokens, usage.output_tokens) == (5, 3)
    assert events[-1] == FinishEvent("stop")


async def test_parallel_tool_calls_complete(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(tool_calls=CALLS))
    resp = await get_adapter(up.format).complete(endpoint(up), chat("weather?", tools=TOOLS))
    assert resp.finish_reason == "tool_calls"
    assert [(c.name, orjson.loads(c.arguments)) for c in resp.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert len({c.id for c in resp.tool_calls}) == 2
    assert resp.text is None


async def test_parallel_tool_calls_stream_by_index(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(tool_calls=CALLS))
    events = await collect(up, chat("weather?", tools=TOOLS))
    calls = assemble_calls(events)
    assert [(name, orjson.loads(args)) for _, name, args in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert all(call_id for call_id, _, _ in calls)
    # Only the first piece of each call carries id and name.
    for index in (0, 1):
        pieces = [e for e in events if isinstance(e, ToolCallDelta) and e.index == index]
        assert pieces[0].name is not None
        assert all(p.id is None and p.name is None for p in pieces[1:])
    assert events[-1] == FinishEvent("tool_calls")


async def test_reasoning_and_cache_tokens_follow_usage_conventions(up: UpstreamServer) -> None:
    b = Behaviour(text="ok", reasoning="think about it", cache_read_tokens=4, cache_write_tokens=2)
    up.enqueue(b, b)
    adapter = get_adapter(up.format)
    resp = await adapter.complete(endpoint(up), chat(*PROMPT))
    events = await collect(up, chat(*PROMPT))
    write = 2 if up.format == "anthropic" else 0  # only Anthropic reports cache writes
    reasoning = 0 if up.format == "anthropic" else 3  # Anthropic does not split thinking tokens out
    for usage in (resp.usage, events[-2].usage):  # type: ignore[union-attr]
        assert usage.input_tokens == 5 + 4 + write
        assert usage.cache_read_tokens == 4
        assert usage.cache_write_tokens == write
        assert usage.output_tokens == 1 + 3
        assert usage.reasoning_tokens == reasoning
    assert resp.reasoning == "think about it"
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "think about it"
    assert text_of(events) == "ok"


async def test_list_models(up: UpstreamServer) -> None:
    models = await get_adapter(up.format).list_models(endpoint(up))
    assert models and all("/" not in m for m in models)
    assert up.last.method == "GET"


@pytest.mark.parametrize("call", ["complete", "stream", "list_models"])
async def test_wrong_key_is_auth_failed(up: UpstreamServer, call: str) -> None:
    adapter = get_adapter(up.format)
    ep = endpoint(up, key="sk-wrong-key-99999999")
    with pytest.raises(AuthFailed) as info:
        if call == "complete":
            await adapter.complete(ep, chat("hi"))
        elif call == "stream":
            await collect(up, chat("hi"), key="sk-wrong-key-99999999")
        else:
            await adapter.list_models(ep)
    assert info.value.provider == f"{up.format}-test"
    assert info.value.upstream_status in (400, 401)
    assert "sk-wrong" not in info.value.message


ERROR_CASES = [
    ("openai", Behaviour(status=429, retry_after=3), RateLimited, 3.0),
    ("openai", Behaviour(status=429, error_type="insufficient_quota"), AuthFailed, None),
    ("openai", Behaviour(status=400, error_type="context_length_exceeded"), ContextTooLong, None),
    ("openai", Behaviour(status=400, error_type="content_filter"), ContentFiltered, None),
    ("openai", Behaviour(status=400), BadRequest, None),
    ("openai", Behaviour(status=500), Overloaded, None),
    ("openai", Behaviour(status=503, headers={"retry-after-ms": "1500"}), Overloaded, 1.5),
    ("openai", Behaviour(status=504), Timeout, None),
    ("openai", Behaviour(status=413), ContextTooLong, None),
    ("anthropic", Behaviour(status=529), Overloaded, None),
    ("anthropic", Behaviour(status=429, retry_after=7), RateLimited, 7.0),
    ("anthropic", Behaviour(status=400), BadRequest, None),
    ("anthropic", Behaviour(status=403), AuthFailed, None),
    ("anthropic", Behaviour(status=413), ContextTooLong, None),
    ("anthropic", Behaviour(status=500), Overloaded, None),
    ("anthropic", Behaviour(status=400, error_type="overloaded_error"), Overloaded, None),
    ("anthropic", Behaviour(status=504, error_type="timeout_error"), Timeout, None),
    ("gemini", Behaviour(status=429, retry_after=11), RateLimited, 11.0),
    ("gemini", Behaviour(status=400), BadRequest, None),
    ("gemini", Behaviour(status=403), AuthFailed, None),
    ("gemini", Behaviour(status=503), Overloaded, None),
    ("gemini", Behaviour(status=500), Overloaded, None),
    ("gemini", Behaviour(status=504), Timeout, None),
    ("gemini", Behaviour(status=400, error_type="RESOURCE_EXHAUSTED"), RateLimited, None),
]


@pytest.mark.parametrize("mode", ["complete", "stream"])
@pytest.mark.parametrize(("fmt", "behaviour", "expected", "retry_after"), ERROR_CASES)
async def test_error_classification(
    fmt: str,
    behaviour: Behaviour,
    expected: type[ProviderError],
    retry_after: float | None,
    mode: str,
) -> None:
    async with UpstreamServer(fmt, api_key=KEY) as up:  # type: ignore[arg-type]
        up.enqueue(behaviour)
        with pytest.raises(ProviderError) as info:
            if mode == "complete":
                await get_adapter(fmt).complete(endpoint(up), chat("hi"))
            else:
                await collect(up, chat("hi"))
    assert type(info.value) is expected
    assert info.value.upstream_status == behaviour.status
    assert info.value.retry_after == retry_after
    assert info.value.message.startswith(f"{fmt}-test: ")


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_connect_refused_is_connect_failed(mode: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = UpstreamServer("openai", port=port)  # never started: nothing listens on the port
    with pytest.raises(ConnectFailed):
        if mode == "complete":
            await get_adapter("openai").complete(endpoint(up), chat("hi"))
        else:
            await collect(up, chat("hi"))


async def test_malformed_body_is_upstream_malformed_and_logged_redacted(
    up: UpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    up.enqueue(
        Behaviour(raw=b'{"leak": "sk-abcdefghijklmnop1234" ', content_type="application/json")
    )
    with (
        caplog.at_level(logging.WARNING, "warden.gateway.providers"),
        pytest.raises(UpstreamMalformed) as info,
    ):
        await get_adapter(up.format).complete(endpoint(up), chat("hi"))
    assert info.value.provider == f"{up.format}-test"
    assert "invalid JSON" in caplog.text
    assert "[REDACTED]" in caplog.text
    assert "sk-abcdefghijklmnop1234" not in caplog.text


async def test_truncated_json_body_from_behaviour(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(malformed=True), Behaviour(malformed=True))
    with pytest.raises(UpstreamMalformed):
        await get_adapter(up.format).complete(endpoint(up), chat("hi"))
    with pytest.raises(UpstreamMalformed):
        await get_adapter(up.format).list_models(endpoint(up))


async def test_unexpected_shape_is_upstream_malformed(up: UpstreamServer) -> None:
    up.enqueue(
        Behaviour(raw=b'{"choices": 3, "content": 3, "candidates": [{"content": {"parts": 5}}]}')
    )
    with pytest.raises(UpstreamMalformed, match="unexpected shape"):
        await get_adapter(up.format).complete(endpoint(up), chat("hi"))
    up.enqueue(Behaviour(raw=b'{"data": [{"no_id": 1}], "models": [{"no_name": 1}]}'))
    with pytest.raises(UpstreamMalformed):
        await get_adapter(up.format).list_models(endpoint(up))


async def test_malformed_chunk_mid_stream(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="a b c d", malformed=True, fault_after=4))
    seen = []
    with pytest.raises(UpstreamMalformed):
        async for event in get_adapter(up.format).stream(endpoint(up), chat("hi")):
            seen.append(event)
    assert any(isinstance(e, TextDelta) for e in seen)


async def test_connection_dropped_mid_stream(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="a b c d e f", drop_after=4))
    seen = []
    with pytest.raises(ConnectFailed):
        async for event in get_adapter(up.format).stream(endpoint(up), chat("hi")):
            seen.append(event)
    assert text_of(seen)  # tokens were already emitted before the drop
    assert not any(isinstance(e, FinishEvent) for e in seen)


STREAM_ERRORS = {"openai": "server_error", "anthropic": "overloaded_error", "gemini": "UNAVAILABLE"}


async def test_error_event_mid_stream(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="a b c d", stream_error=STREAM_ERRORS[up.format], fault_after=4))
    seen = []
    with pytest.raises(Overloaded) as info:
        async for event in get_adapter(up.format).stream(endpoint(up), chat("hi")):
            seen.append(event)
    assert text_of(seen)
    assert info.value.provider == f"{up.format}-test"


async def test_rate_limit_event_mid_stream(up: UpstreamServer) -> None:
    kind = {
        "openai": "rate_limit_exceeded",
        "anthropic": "rate_limit_error",
        "gemini": "RESOURCE_EXHAUSTED",
    }
    up.enqueue(Behaviour(text="a b", stream_error=kind[up.format], fault_after=1))
    with pytest.raises(RateLimited):
        await collect(up, chat("hi"))


async def test_stream_that_ends_without_finishing_is_malformed(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="a b c", stream_error="x", fault_after=3))
    # An error event of an unknown type still raises a typed error, never a silent end.
    with pytest.raises(ProviderError):
        await collect(up, chat("hi"))
    raw = {
        "openai": b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n',
        "anthropic": b'event: ping\ndata: {"type": "ping"}\n\n',
        "gemini": b'data: {"candidates": [{"content": {"parts": [{"text": "hi"}]}}]}\n\n',
    }[up.format]
    up.enqueue(Behaviour(raw=raw))
    with pytest.raises(UpstreamMalformed, match="stream ended"):
        await collect(up, chat("hi"))


@pytest.mark.parametrize("mode", ["complete", "stream", "list_models"])
async def test_slow_first_byte_times_out(up: UpstreamServer, mode: str) -> None:
    up.enqueue(Behaviour(delay=2.0))
    adapter = get_adapter(up.format)
    ep = endpoint(up, first_byte=0.2)
    with pytest.raises(Timeout) as info:
        if mode == "complete":
            await adapter.complete(ep, chat("hi"))
        elif mode == "stream":
            await collect(up, chat("hi"), first_byte=0.2)
        else:
            await adapter.list_models(ep)
    assert info.value.retryable and info.value.failover


async def test_stalled_stream_hits_gap_timeout(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="a b c d", token_delay=2.0))
    seen = []
    with pytest.raises(Timeout):
        async for event in get_adapter(up.format).stream(endpoint(up, stream_gap=0.2), chat("hi")):
            seen.append(event)
    assert not any(isinstance(e, FinishEvent) for e in seen)


async def test_first_event_counts_against_first_byte(up: UpstreamServer) -> None:
    # Headers come at once, but the first event is late: still a first-byte timeout.
    up.enqueue(Behaviour(text="a b", first_event_delay=2.0))
    ep = endpoint(up, first_byte=0.3, stream_gap=10.0)
    seen = []
    with pytest.raises(Timeout):
        async for event in get_adapter(up.format).stream(ep, chat("hi")):
            seen.append(event)
    assert seen == []


async def _wait_no_connections(up: UpstreamServer) -> None:
    for _ in range(200):
        if not up._connections:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("upstream connection still open")


async def test_aclose_closes_upstream_connection(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="a b c d e f g", token_delay=0.5))
    stream = get_adapter(up.format).stream(endpoint(up), chat("hi"))
    first = await anext(stream)
    while isinstance(first, UsageEvent):  # Anthropic's early prompt usage
        first = await anext(stream)
    assert isinstance(first, (TextDelta, ToolCallDelta))
    assert up._connections  # the stream is live
    await stream.aclose()  # type: ignore[attr-defined]
    await _wait_no_connections(up)


async def test_cancelled_consumer_closes_upstream_connection(up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="a b c d e f g", token_delay=0.5))
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in get_adapter(up.format).stream(endpoint(up), chat("hi")):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait_no_connections(up)


async def test_a_format_without_embeddings_refuses_them(anthropic_up: UpstreamServer) -> None:
    with pytest.raises(BadRequest) as exc:
        await get_adapter("anthropic").embed(endpoint(anthropic_up), EmbeddingRequest("m", ["x"]))
    assert exc.value.code == "embeddings_unsupported" and exc.value.status == 400
    assert anthropic_up.requests == []

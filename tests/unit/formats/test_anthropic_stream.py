"""``message_start`` waits for the first event: the upstream's own prompt usage
when it came first, else the estimate; validated against the SDK's event types."""

from __future__ import annotations

from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from tests.support.gateway_fakes import FakeStream, make_info, sse_events
from warden.formats.anthropic_stream import EventRenderer
from warden.formats.common import render_stream
from warden.gateway.types import FinishEvent, TextDelta, Usage, UsageEvent

EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


async def events(stream: FakeStream, **kw) -> list[tuple[str, dict]]:  # noqa: ANN003
    raw = b"".join([f async for f in render_stream(stream, EventRenderer(stream.info, **kw))])
    out = sse_events(raw)
    for _, data in out:
        EVENTS.validate_python(data)
    return out


async def test_message_start_carries_the_upstreams_early_usage() -> None:
    early = Usage(input_tokens=1300, output_tokens=1, cache_read_tokens=1000, cache_write_tokens=250)
    final = Usage(input_tokens=1300, output_tokens=9, cache_read_tokens=1000, cache_write_tokens=250)
    out = await events(FakeStream([UsageEvent(early), TextDelta("hi"), UsageEvent(final), FinishEvent("stop")],
                                  make_info(provider="anthropic")), input_estimate=77)
    assert [n for n, _ in out][:2] == ["message_start", "content_block_start"]
    assert out[0][1]["message"]["usage"] == {"input_tokens": 50, "output_tokens": 1,
                                             "cache_creation_input_tokens": 250, "cache_read_input_tokens": 1000}
    assert next(d for n, d in out if n == "message_delta")["usage"]["output_tokens"] == 9


async def test_message_start_estimates_when_content_comes_first() -> None:
    out = await events(FakeStream([TextDelta("hi"), FinishEvent("stop")], make_info()), input_estimate=77)
    assert out[0][1]["message"]["usage"] == {"input_tokens": 77, "output_tokens": 0}


async def test_a_stream_with_only_a_finish_still_starts() -> None:
    out = await events(FakeStream([FinishEvent("stop")], make_info()))
    assert [n for n, _ in out] == ["message_start", "message_delta", "message_stop"]

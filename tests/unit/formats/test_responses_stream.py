"""Responses API streams: the semantic event sequence per case (golden files),
every event read back by the official ``openai`` SDK's types."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from typing import get_args

from openai.types.responses import ResponseStreamEvent
from tests.support.gateway_fakes import FakeStream, make_info
from tests.support.golden import check_golden, sse_events, stable

from warden.errors import WardenError
from warden.formats.common import parse_body, render_stream
from warden.formats.responses import ResponsesBody, to_responses_call
from warden.formats.responses_stream import ResponseEventRenderer
from warden.gateway.errors import Overloaded
from warden.gateway.types import (
    ErrorEvent,
    FinishEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

GOLDEN = Path(__file__).parent / "golden"
# The SDK's class for each event type (its union is not discriminated).
EVENTS = {get_args(cls.model_fields["type"].annotation)[0]: cls
          for cls in get_args(get_args(ResponseStreamEvent)[0])}
USAGE = Usage(input_tokens=12, output_tokens=7, cache_read_tokens=4, reasoning_tokens=2)
TOOLS = (b'{"model": "auto", "input": "weather?", "tools": [{"type": "function", "name": "weather",'
         b' "parameters": {"type": "object"}}, {"type": "namespace", "name": "ns", "tools": '
         b'[{"type": "function", "name": "clock"}]}]}')


async def run(events: list[StreamEvent], body: bytes = b'{"model": "auto", "input": "hi"}',
              final_cost: Decimal | None = Decimal("0.0042")) -> tuple[list, ResponseEventRenderer]:
    call = to_responses_call(parse_body(ResponsesBody, body))
    stream = FakeStream(events, make_info(cost=None), final_cost=final_cost)
    renderer = ResponseEventRenderer(call, stream.info)
    raw = b"".join([f async for f in render_stream(stream, renderer)])
    out = sse_events(raw)
    for name, data in out:
        assert name == data["type"]  # the event: line names the data's type, as OpenAI's do
        EVENTS[data["type"]].model_validate(data)
    assert [d["sequence_number"] for _, d in out] == list(range(len(out)))
    return out, renderer


def types(events: list) -> list[str]:
    return [name for name, _ in events]


async def test_text_stream_golden() -> None:
    events, renderer = await run([TextDelta("Hel"), TextDelta("lo"), UsageEvent(USAGE), FinishEvent("stop")])
    check_golden(GOLDEN / "responses_stream_text.json", stable([d for _, d in events]))
    assert types(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    done = events[-1][1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == "Hello"
    assert done["usage"]["input_tokens_details"]["cached_tokens"] == 4
    assert done["usage"]["output_tokens_details"]["reasoning_tokens"] == 2
    # The cost is known only when the stream ends: it rides in response.completed.
    assert done["usage"]["warden"]["cost_usd"] == "0.0042" and renderer.final == done


async def test_tool_call_stream_golden() -> None:
    events, _ = await run([
        ReasoningDelta("think"), ToolCallDelta(0, id="call_a", name="weather", arguments='{"ci'),
        ToolCallDelta(0, arguments='ty":"Oslo"}'), ToolCallDelta(1, id="call_b", name="ns__clock"),
        UsageEvent(USAGE), FinishEvent("tool_calls")], TOOLS)
    check_golden(GOLDEN / "responses_stream_tool_calls.json", stable([d for _, d in events]))
    output = events[-1][1]["response"]["output"]
    assert [i["type"] for i in output] == ["reasoning", "function_call", "function_call"]
    assert output[1]["arguments"] == '{"city":"Oslo"}' and output[1]["call_id"] == "call_a"
    # A namespaced function comes back under its own name, with its namespace.
    assert (output[2]["namespace"], output[2]["name"], output[2]["arguments"]) == ("ns", "clock", "{}")
    assert [d["output_index"] for n, d in events if n == "response.output_item.done"] == [0, 1, 2]


async def test_error_after_first_byte_golden() -> None:
    events, renderer = await run([TextDelta("Hel"), ErrorEvent(Overloaded("busy", provider="openai"))])
    check_golden(GOLDEN / "responses_stream_error.json", stable([d for _, d in events]))
    assert types(events)[-2:] == ["error", "response.failed"]
    error, failed = events[-2][1], events[-1][1]["response"]
    assert (error["code"], failed["error"]["code"]) == ("upstream_overloaded", "server_error")
    assert error["message"] == failed["error"]["message"] == "busy"
    assert failed["status"] == "failed" and renderer.final is None


async def test_incomplete_and_cut_streams() -> None:
    events, _ = await run([ReasoningDelta("a"), TextDelta("b"), UsageEvent(USAGE), FinishEvent("length")])
    assert types(events)[-1] == "response.incomplete"
    done = events[-1][1]["response"]
    assert done["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [i["type"] for i in done["output"]] == ["reasoning", "message"]
    cut, _ = await run([TextDelta("b")])  # no finish: never a silent, complete-looking end
    assert types(cut)[-2:] == ["error", "response.failed"] and cut[-2][1]["code"] == "stream_incomplete"


@pytest.mark.parametrize("error", [WardenError("boom"), RuntimeError("boom")])
async def test_exception_mid_stream_is_typed(error: Exception) -> None:
    class Broken(FakeStream):
        async def _iter(self):  # noqa: ANN202
            yield TextDelta("a")
            raise error

    call = to_responses_call(parse_body(ResponsesBody, b'{"model": "m", "input": "x"}'))
    stream = Broken([], make_info())
    raw = b"".join([f async for f in render_stream(stream, ResponseEventRenderer(call, stream.info))])
    events = sse_events(raw)
    assert types(events)[-2:] == ["error", "response.failed"]
    assert "boom" not in events[-2][1]["message"] or isinstance(error, WardenError)


async def test_a_late_piece_of_a_closed_call_is_kept() -> None:
    events, renderer = await run([
        ToolCallDelta(0, id="call_a", name="weather", arguments='{"a":'), ToolCallDelta(1, id="call_b", name="weather"),
        ToolCallDelta(0, arguments="1}"), FinishEvent("tool_calls")], TOOLS)
    assert [i["arguments"] for i in renderer.final["output"]] == ['{"a":1}', "{}"]
    # OpenAI's order: a call is done before the next one is added.
    assert types(events).index("response.function_call_arguments.done") < [
        i for i, (n, d) in enumerate(events) if n == "response.output_item.added"][1]

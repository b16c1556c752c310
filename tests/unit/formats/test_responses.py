"""Responses API requests converted to the internal request, and responses
rendered back, checked against the official ``openai`` SDK's types."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from openai.types.responses import Response
from tests.support.gateway_fakes import make_info

from warden.errors import InvalidRequest, ValidationFailed, WardenError
from warden.formats.common import parse_body
from warden.formats.responses import ResponsesBody, render_response, to_responses_call
from warden.gateway.types import ChatResponse, ImagePart, TextPart, ToolCall, Usage


def convert(history: list[dict[str, Any]] | None = None, **body: Any):  # noqa: ANN201
    return to_responses_call(parse_body(ResponsesBody, orjson.dumps({"model": "auto", **body})), history)


def refused(exc_type: type[WardenError] = ValidationFailed, **body: Any) -> WardenError:
    with pytest.raises(exc_type) as exc:
        convert(**body)
    return exc.value


def test_string_input_and_instructions() -> None:
    call = convert(input="hi there", instructions="Be brief.", max_output_tokens=50, temperature=0.2,
                   top_p=0.9, user="u1", reasoning={"effort": "xhigh"}, parallel_tool_calls=False)
    req = call.chat
    assert [(m.role, m.text_content) for m in req.messages] == [("system", "Be brief."), ("user", "hi there")]
    assert (req.max_tokens, req.temperature, req.top_p, req.user) == (50, 0.2, 0.9, "u1")
    assert req.reasoning_effort == "high" and req.parallel_tool_calls is False and not req.stream
    assert call.input_items[0]["content"] == [{"type": "input_text", "text": "hi there"}]
    assert call.input_items[0]["id"].startswith("msg_") and call.id.startswith("resp_")


def test_items_become_one_conversation() -> None:
    req = convert(input=[
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "plan"}],
         "encrypted_content": "opaque"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call", "call_id": "c2", "name": "clock", "namespace": "ns"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "noon"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        {"role": "system", "content": "late"},
    ]).chat
    roles = [m.role for m in req.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant", "system"]
    user, assistant = req.messages[1], req.messages[2]
    assert isinstance(user.content[1], ImagePart) and user.content[1].detail == "low"
    assert assistant.text_content == "Checking." and assistant.reasoning == "plan"
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [
        ("c1", "weather", '{"city":"Oslo"}'), ("c2", "ns__clock", "{}")]
    assert [(m.tool_call_id, m.name, m.text_content) for m in req.messages[3:5]] == [
        ("c1", "weather", "sunny"), ("c2", "ns__clock", "noon")]
    assert req.messages[5].content == [TextPart("no")]


def test_reasoning_text_rides_on_the_next_assistant_turn() -> None:
    req = convert(input=[
        {"role": "user", "content": "q"},
        {"type": "function_call", "call_id": "c1", "name": "f"},
        {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "more"}]},
        {"type": "function_call", "call_id": "c2", "name": "f"},
        {"role": "assistant", "content": "done"}]).chat
    first, second = req.messages[1], req.messages[2]
    assert [c.id for c in first.tool_calls] == ["c1", "c2"] and first.reasoning == "more"
    assert second.text_content == "done" and not second.tool_calls  # a new turn after the calls


def test_history_comes_before_the_input() -> None:
    history = [{"type": "message", "role": "user", "content": "first"},
               {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}]
    req = convert(history, input="second", instructions="now").chat
    assert [(m.role, m.text_content) for m in req.messages] == [
        ("system", "now"), ("user", "first"), ("assistant", "ok"), ("user", "second")]


def test_tools_tool_choice_and_formats() -> None:
    tools = [{"type": "function", "name": "weather", "description": "w", "parameters": {"type": "object"},
              "strict": True},
             {"type": "namespace", "name": "ns", "description": "d", "tools": [{"type": "function", "name": "t"}]}]
    call = convert(input="x", tools=tools, tool_choice={"type": "function", "name": "t", "namespace": "ns"},
                   text={"format": {"type": "json_schema", "name": "City", "schema": {"type": "object"},
                                    "strict": True}})
    req = call.chat
    assert [(t.name, t.description) for t in req.tools] == [("weather", "w"), ("ns__t", "")]
    assert req.tools[1].parameters == {"type": "object", "properties": {}}
    assert (req.tool_choice.mode, req.tool_choice.name) == ("tool", "ns__t")
    assert call.namespaced == {"ns__t": ("ns", "t")}
    fmt = req.response_format
    assert (fmt.type, fmt.name, fmt.schema, fmt.strict) == ("json_schema", "City", {"type": "object"}, True)
    for choice in ("auto", "none", "required"):
        assert convert(input="x", tool_choice=choice).chat.tool_choice.mode == choice
    assert convert(input="x", text={"format": {"type": "json_object"}}).chat.response_format.type == "json_object"
    assert convert(input="x", text={"verbosity": "low"}).chat.response_format is None


@pytest.mark.parametrize("tool", ["web_search", "file_search", "computer_use_preview", "code_interpreter",
                                  "mcp", "custom", "made_up"])
def test_hosted_tools_are_refused_by_name(tool: str) -> None:
    err = refused(InvalidRequest, input="x", tools=[{"type": "function", "name": "f"}, {"type": tool}])
    assert err.status == 400 and err.code == "unsupported_tool" and err.param == "tools.1.type"
    assert repr(tool) in err.message
    nested = refused(InvalidRequest, input="x", tools=[{"type": "namespace", "name": "n", "tools": [{"type": tool}]}])
    assert nested.param == "tools.0.tools.0.type"
    choice = refused(InvalidRequest, input="x", tool_choice={"type": tool})
    assert choice.param == "tool_choice.type" and repr(tool) in choice.message


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "x", "tool_choice": {"type": "function"}}, "tool_choice.name"),
    ({"input": "x", "tools": [{"type": "function"}]}, "tools.0.name"),
    ({"input": "x", "tools": [{"type": "namespace", "name": "n" * 40, "tools": [
        {"type": "function", "name": "f" * 30}]}]}, "tools.0.tools.0.name"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input.0.content.0.image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input.0.content.0.type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input.0.content.0.text"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "file:///etc/passwd"}]}]},
     "input.0.content.0.image_url"),
])
def test_what_cannot_be_served_is_named(body: dict[str, Any], param: str) -> None:
    assert refused(**body).param == param


@pytest.mark.parametrize("given", [[], [{"role": "system", "content": "only rules"}]])
def test_nothing_to_answer_is_a_400_not_a_malformed_body(given: list) -> None:
    """Whether there is enough to answer depends on the stored conversation too, so it is
    refused as a request this server cannot serve (400), not as a malformed one (422)."""
    err = refused(InvalidRequest, input=given)
    assert (err.code, err.param) == ("empty_input", "input")


def test_unsupported_items_and_parameters_are_named() -> None:
    err = refused(InvalidRequest, input=[{"type": "item_reference", "id": "msg_1"}])
    assert (err.code, err.param) == ("unsupported_input_item", "input.0.type") and "item_reference" in err.message
    for name, value in (("background", True), ("conversation", "conv_1"), ("prompt", {"id": "p"})):
        err = refused(InvalidRequest, input="x", **{name: value})
        assert (err.code, err.param) == ("unsupported_parameter", name)


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model": "m", "input": "x", "metadata": {"k": "' + b"v" * 513 + b'"}}', "metadata.k"),
    (b'{"model": "m", "input": "x", "stream": "yes"}', "stream"),
    (b'{"model": "m", "input": "x", "store": 1}', "store"),
    (b'{"model": "m", "input": [{"type": "function_call", "name": "f"}]}', "input.0.function_call.call_id"),
    (b'{"model": "m", "input": [{"role": "robot", "content": "x"}]}', "input.0.message.role"),
    (b'{"model": "m", "input": "x", "max_output_tokens": 0}', "max_output_tokens"),
])
def test_bad_shapes_are_422_naming_the_field(raw: bytes, param: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        parse_body(ResponsesBody, raw)
    assert exc.value.param == param


def test_rendered_response_reads_back_in_the_sdk() -> None:
    call = convert(input="x", metadata={"a": "b"}, instructions="i", max_output_tokens=9,
                   tools=[{"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "t"}]}],
                   text={"format": {"type": "json_schema", "name": "S", "schema": {"type": "object"}}})
    usage = Usage(input_tokens=10, output_tokens=5, cache_read_tokens=2, cache_write_tokens=1, reasoning_tokens=1)
    resp = ChatResponse(id="up", model="m", text="Hi", reasoning="why",
                        tool_calls=[ToolCall("call_1", "ns__t", '{"a":1}')], usage=usage)
    out = render_response(call, resp, make_info())
    parsed = Response.model_validate(out)
    assert parsed.output_text == "Hi" and parsed.status == "completed" and parsed.id == call.id
    assert [o.type for o in parsed.output] == ["reasoning", "message", "function_call"]
    fc = parsed.output[2]
    assert (fc.call_id, fc.name, fc.namespace, fc.arguments) == ("call_1", "t", "ns", '{"a":1}')
    assert parsed.usage.input_tokens_details.cached_tokens == 2 and parsed.usage.total_tokens == 15
    assert out["usage"]["warden"] == {"cost_usd": "0.000123"} and parsed.model == "openai/gpt-4o-mini"
    assert parsed.metadata == {"a": "b"} and parsed.text.format.type == "json_schema"
    assert json.loads(orjson.dumps(out))["tools"][0]["description"] == ""


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_cut_responses_are_incomplete(finish: str, reason: str) -> None:
    resp = ChatResponse(id="up", model="m", text="Hi", finish_reason=finish)  # type: ignore[arg-type]
    out = render_response(convert(input="x"), resp, make_info(cost=None))
    assert (out["status"], out["incomplete_details"]) == ("incomplete", {"reason": reason})
    assert out["usage"]["warden"]["cost_usd"] is None and Response.model_validate(out).status == "incomplete"

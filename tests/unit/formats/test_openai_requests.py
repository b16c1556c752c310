"""Requests built by the official ``openai`` SDK, parsed into the internal format."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest
from tests.support.gateway_fakes import Capture
from pydantic import BaseModel

from warden.formats.common import parse_body
from warden.formats.openai import ChatCompletionBody, to_chat_request
from warden.errors import InvalidRequest, ValidationFailed
from warden.gateway.types import ImagePart, ResponseFormat, TextPart, ToolCall, ToolChoice

REPLY = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}


@pytest.fixture
def sent() -> tuple[openai.OpenAI, Capture]:
    cap = Capture(REPLY)
    client = openai.OpenAI(base_url="http://warden.test/v1", api_key="wk-test",
                           http_client=httpx.Client(transport=httpx.MockTransport(cap)), max_retries=0)
    return client, cap


def parse(raw: bytes):
    return to_chat_request(parse_body(ChatCompletionBody, raw))


def test_plain_chat_with_every_sampling_parameter(sent) -> None:
    client, cap = sent
    client.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "developer", "content": [{"type": "text", "text": "dev note"}]},
                  {"role": "user", "content": "hi", "name": "ann"}],
        temperature=0.3, top_p=0.9, max_tokens=50, max_completion_tokens=70, stop="END", seed=7,
        reasoning_effort="low", user="u-1", parallel_tool_calls=False,
        extra_body={"warden": {"prefer": "cost"}, "future_field": 1},
    )
    req = parse(cap.last)
    assert req.model == "openai/gpt-4o-mini"
    assert [(m.role, m.text_content) for m in req.messages] == [
        ("system", "be brief"), ("system", "dev note"), ("user", "hi")]
    assert (req.temperature, req.top_p, req.seed, req.user) == (0.3, 0.9, 7, "u-1")
    assert req.max_tokens == 70  # max_completion_tokens wins
    assert req.stop == ["END"]
    assert req.reasoning_effort == "low"
    assert req.parallel_tool_calls is False
    assert req.stream is False and req.tools == [] and req.tool_choice is None
    assert parse_body(ChatCompletionBody, cap.last).warden == {"prefer": "cost"}


def test_stop_list_max_tokens_and_effort_aliases(sent) -> None:
    client, cap = sent
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                   max_tokens=12, stop=["a", "b"], reasoning_effort="none")
    req = parse(cap.last)
    assert (req.max_tokens, req.stop, req.reasoning_effort) == (12, ["a", "b"], None)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                   reasoning_effort="xhigh")
    assert parse(cap.last).reasoning_effort == "high"


def test_images_by_url_and_data_url(sent) -> None:
    client, cap = sent
    png = base64.b64encode(b"\x89PNG fake").decode()
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": [
        {"type": "text", "text": "compare"},
        {"type": "image_url", "image_url": {"url": "https://img.test/a.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
    ]}])
    req = parse(cap.last)
    assert req.has_images
    assert req.messages[0].content == [
        TextPart("compare"),
        ImagePart(url="https://img.test/a.jpg", detail="low"),
        ImagePart(data=png, media_type="image/png"),
    ]


def test_tools_parallel_calls_and_tool_results(sent) -> None:
    client, cap = sent
    weather = {"type": "function", "function": {
        "name": "weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    client.chat.completions.create(model="m", tools=[weather, {"type": "function", "function": {"name": "now"}}],
                                   tool_choice={"type": "function", "function": {"name": "weather"}}, messages=[
        {"role": "user", "content": "weather in Oslo and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "warm"}]},
    ])
    req = parse(cap.last)
    assert [t.name for t in req.tools] == ["weather", "now"]
    assert req.tools[0].description == "Weather by city"
    assert req.tools[0].parameters["required"] == ["city"]
    assert req.tools[1].parameters == {"type": "object", "properties": {}}
    assert req.tool_choice == ToolChoice("tool", "weather")
    assistant = req.messages[1]
    assert assistant.content == []
    assert assistant.tool_calls == [ToolCall("call_1", "weather", '{"city":"Oslo"}'),
                                    ToolCall("call_2", "weather", '{"city":"Rome"}')]
    results = req.messages[2:]
    assert [(m.role, m.tool_call_id, m.name, m.text_content) for m in results] == [
        ("tool", "call_1", "weather", "cold"), ("tool", "call_2", "weather", "warm")]


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_modes(sent, choice: str) -> None:
    client, cap = sent
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                   tools=[{"type": "function", "function": {"name": "f"}}], tool_choice=choice)
    assert parse(cap.last).tool_choice == ToolChoice(choice)


def test_json_schema_via_pydantic_parse_helper(sent) -> None:
    client, cap = sent

    class City(BaseModel):
        name: str
        population: int

    cap.reply = {**REPLY, "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": '{"name": "Oslo", "population": 700000}'}}]}
    parsed = client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "x"}],
                                           response_format=City)
    assert parsed.choices[0].message.parsed == City(name="Oslo", population=700000)
    req = parse(cap.last)
    fmt = req.response_format
    assert fmt is not None and fmt.type == "json_schema" and fmt.name == "City" and fmt.strict is True
    assert fmt.schema is not None and set(fmt.schema["properties"]) == {"name", "population"}


def test_json_object_and_text_formats(sent) -> None:
    client, cap = sent
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                   response_format={"type": "json_object"})
    assert parse(cap.last).response_format == ResponseFormat("json_object")
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                   response_format={"type": "text"})
    assert parse(cap.last).response_format == ResponseFormat("text")


def test_stream_options(sent) -> None:
    client, cap = sent
    list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                        stream=True, stream_options={"include_usage": True}))
    body = parse_body(ChatCompletionBody, cap.last)
    assert body.include_usage is True and to_chat_request(body).stream is True


def test_legacy_functions_become_tools(sent) -> None:
    client, cap = sent
    client.chat.completions.create(model="m", functions=[{"name": "lookup", "parameters": {"type": "object"}}],
                                   function_call={"name": "lookup"}, messages=[
        {"role": "user", "content": "find"},
        {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"q":1}'}},
        {"role": "function", "name": "lookup", "content": "found"},
    ])
    body = parse_body(ChatCompletionBody, cap.last)
    req = to_chat_request(body)
    assert body.legacy_functions
    assert [t.name for t in req.tools] == ["lookup"]
    assert req.tool_choice == ToolChoice("tool", "lookup")
    call = req.messages[1].tool_calls[0]
    assert (call.name, call.arguments) == ("lookup", '{"q":1}')
    result = req.messages[2]
    assert (result.role, result.tool_call_id, result.name, result.text_content) == (
        "tool", call.id, "lookup", "found")


def test_assistant_reasoning_and_refusal_parts_are_kept() -> None:
    req = parse(b'{"model":"m","messages":[{"role":"assistant","reasoning_content":"hmm",'
                b'"content":[{"type":"refusal","refusal":"no"}]}]}')
    assert (req.messages[0].reasoning, req.messages[0].text_content) == ("hmm", "no")


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"messages":[{"role":"user","content":"x"}]}', "model"),
    (b'{"model":"m"}', "messages"),
    (b'{"model":"m","messages":[]}', "messages"),
    (b'{"model":"m","messages":[{"role":"robot","content":"x"}]}', "messages.0.role"),
    (b'{"model":"m","messages":[{"role":"user","content":5}]}', "messages.0.content"),
    (b'{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}', "messages.0.content.0.type"),
    (b'{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}', "messages.0.content.0.text"),
    (b'{"model":"m","messages":[{"role":"tool","content":"x"}]}', "messages.0.tool_call_id"),
    (b'{"model":"m","messages":[{"role":"function","content":"x"}]}', "messages.0.name"),
    (b'{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}', "n"),
    (b'{"model":"m","reasoning_effort":"huge","messages":[{"role":"user","content":"x"}]}', "reasoning_effort"),
    (b'{"model":"m","tools":[{"type":"custom","function":{"name":"f"}}],"messages":[{"role":"user","content":"x"}]}',
     "tools.0.type"),
    (b'{"model":"m","tool_choice":"sometimes","messages":[{"role":"user","content":"x"}]}', "tool_choice"),
    (b'{"model":"m","tool_choice":{"type":"function"},"messages":[{"role":"user","content":"x"}]}',
     "tool_choice.function.name"),
    (b'{"model":"m","response_format":{"type":"json_schema"},"messages":[{"role":"user","content":"x"}]}',
     "response_format.json_schema.schema"),
    (b'{"model":"m","response_format":{"type":"yaml"},"messages":[{"role":"user","content":"x"}]}',
     "response_format.type"),
    (b'[1, 2]', "body"),
])
def test_validation_errors_name_the_field(raw: bytes, param: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        parse(raw)
    assert err.value.status == 422
    assert err.value.param == param
    assert err.value.message.startswith(f"{param}: ")


def test_bad_json_is_400() -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(b"{nope")
    assert (err.value.status, err.value.code) == (400, "invalid_json")

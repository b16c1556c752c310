"""The Messages edge's field policy and its version / beta headers: every
Messages API field of the installed ``anthropic`` SDK is in one class, unknown
fields are a 400 naming them, and what a cross-format target drops is named."""

from __future__ import annotations

import typing

import pytest
from anthropic.types import message_create_params
from anthropic.types.beta import message_create_params as beta_params

from warden.errors import InvalidRequest
from warden.formats.anthropic import MessagesBody, to_chat_request
from warden.formats.anthropic_native import HINTS, REFUSED, REQUIRED, betas, dropped_headers, native_of
from warden.formats.common import parse_body

PARSED = {name for name, f in MessagesBody.model_fields.items() if name != "warden"}


@pytest.mark.parametrize("params", [message_create_params.MessageCreateParamsBase,
                                    beta_params.MessageCreateParamsBase])
def test_every_sdk_field_has_a_class(params: type) -> None:
    fields = set(typing.get_type_hints(params)) - {"betas"}  # betas: the SDK sends them as a header
    unclassified = fields - PARSED - HINTS - REQUIRED - set(REFUSED)
    assert not unclassified, unclassified
    assert not (HINTS & REQUIRED) and not (set(REFUSED) & (HINTS | REQUIRED | PARSED))


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest) as err:
        native_of({"temperature_2": 1}, {})
    assert (err.value.param, err.value.code, err.value.status) == ("temperature_2", "unknown_field", 400)


@pytest.mark.parametrize(("field", "value"), [("workspace_id", "w"), ("billing_policy", {}),
                                              ("fallback_credit_token", "t"), ("fallbacks", []),
                                              ("user_profile_id", "u"), ("speed", "fast")])
def test_refused_fields_say_why(field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        native_of({field: value}, {})
    assert err.value.param == field and err.value.code == "unsupported_field" and "(" in err.value.message


def test_nothing_native_is_none_and_headers_alone_are_kept() -> None:
    assert native_of({}, {}) is None and native_of(None, {"anthropic-beta": ""}) is None
    native = native_of(None, {"anthropic-version": "2023-06-01", "anthropic-beta": "a-1, b-2", "x": "y"})
    assert native is not None and native.body == {} and native.required == ()
    assert native.headers == {"anthropic-version": "2023-06-01", "anthropic-beta": "a-1, b-2"}
    assert betas(native) == ["a-1", "b-2"] and betas(None) == []


def test_dropped_headers_name_only_what_was_lost() -> None:
    native = native_of({"top_k": 2, "container": "c"}, {"anthropic-beta": "structured-outputs-2025-11-13"})
    assert native is not None and native.required == ("container",)
    assert dropped_headers(native, "anthropic") == {}
    assert dropped_headers(native, "openai") == {"x-warden-dropped-fields": "top_k"}
    assert dropped_headers(None, "openai") == {}
    only_betas = native_of(None, {"anthropic-beta": "claude-code-20250219,fine-grained-tool-streaming-2025-05-14"})
    assert dropped_headers(only_betas, "gemini") == {"x-warden-dropped-betas": "claude-code-20250219"}


def test_claude_codes_request_shape_parses() -> None:
    raw = (b'{"model":"claude-opus-4-8","max_tokens":32000,"stream":true,'
           b'"system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],'
           b'"messages":[{"role":"system","content":"Extra rules."},'
           b'{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]},'
           b'{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Read","input":{},'
           b'"cache_control":{"type":"ephemeral"}}]},'
           b'{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"x",'
           b'"cache_control":{"type":"ephemeral"}}]}],'
           b'"tools":[{"name":"Read","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}],'
           b'"thinking":{"type":"adaptive"},"metadata":{"user_id":"user_abc_session_1"},'
           b'"context_management":{"edits":[]}}')
    req = to_chat_request(parse_body(MessagesBody, raw), {"anthropic-beta": "claude-code-20250219"})
    assert [m.role for m in req.messages] == ["system", "system", "user", "assistant", "tool"]
    assert req.system_text == "You are Claude Code.\n\nExtra rules."
    assert req.messages[0].content[0].cache_control == {"type": "ephemeral"}
    assert req.messages[2].content[0].cache_control == {"type": "ephemeral"}
    assert req.messages[3].cache_control == {"type": "ephemeral"} and req.messages[4].cache_control
    assert req.tools[0].cache_control == {"type": "ephemeral"} and req.user == "user_abc_session_1"
    assert req.reasoning_effort is None  # adaptive: no budget to carry across formats
    assert req.native is not None and req.native.body == {"context_management": {"edits": []},
                                                           "thinking": {"type": "adaptive"}}

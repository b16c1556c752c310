"""Anthropic Messages, client side: the request body, its conversion to the
internal ``ChatRequest``, and messages, usage and errors rendered back (stream
events: ``anthropic_stream.py``; fields only Anthropic honours, and the version
and beta headers: ``anthropic_native.py``). Pure functions, tested against the
official ``anthropic`` SDK types.

- ``system`` (string or text blocks) becomes system messages, followed in order
  by any ``role: "system"`` entries of ``messages`` (Claude Code sends them),
  folded into the system prompt. ``cache_control`` on text blocks, tool results
  and tools is kept on the internal parts and reaches Anthropic upstreams. ``tool_result``
  blocks become tool messages placed before the rest of their user turn;
  ``is_error`` results are prefixed ``"Tool error: "`` since the internal format
  (and OpenAI-format providers) have no error flag.
- ``thinking`` blocks on input are carried as the assistant message's reasoning;
  ``redacted_thinking`` is dropped. ``metadata.user_id`` becomes the request's user.
- ``output_config.format`` and the top-level ``output_format`` (structured
  outputs beta; not both) become a JSON-schema response format;
  ``output_config.effort`` (``xhigh``/``max`` served as ``high``) wins over
  ``thinking.budget_tokens``, which is read back through the Anthropic adapter's
  budgets (``thinking_effort``) so a request passed on keeps its size class.
- Usage: Anthropic's ``input_tokens`` *excludes* cache reads and writes; ours
  includes them, so they are subtracted here. Reasoning tokens are reported as
  ``output_tokens_details.thinking_tokens``; the cost as ``usage.warden.cost_usd``
  (decimal string, ``null`` if unknown) in the message and in ``message_delta``.
- Errors: Warden's envelope with Anthropic's ``error.type`` (``error_type``: the
  same before and after the first token) under a top-level ``"type": "error"``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from warden.errors import InvalidRequest, WardenError
from warden.formats.anthropic_native import native_of
from warden.formats.common import checked_base64, cost_text, image_part, invalid, inverse, served_model
from warden.gateway.errors import AuthFailed, BadRequest, Overloaded
from warden.gateway.providers.anthropic import ERROR_TYPES, FINISH, THINKING_BUDGET
from warden.gateway.types import (
    ChatRequest, ChatResponse, ContentPart, FinishReason, ImagePart, Message, ResponseFormat,
    TextPart, ToolCall, ToolChoice, ToolSpec, Usage,
)

if TYPE_CHECKING:
    from warden.gateway.metering import CallInfo

log = logging.getLogger("warden.formats.anthropic")

# --- request models (named _Anthropic*: the published schema has one namespace of models) ----


_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$"


def _when(kind: str, then: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"properties": {"type": {"const": kind}}, "required": ["type"]}, "then": then}


_ID = {"type": "string", "minLength": 1}
_IMAGE_SOURCE = {"oneOf": [
    {"type": "object", "required": ["type", "data"], "properties": {
        "type": {"const": "base64"}, "data": {"type": "string", "pattern": _BASE64}}},
    {"type": "object", "required": ["type", "url"], "properties": {
        "type": {"const": "url"}, "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}}}]}


class _AnthropicBlock(BaseModel):
    """Any content block; which fields must be present depends on ``type`` (the
    published schema says which, so a request it allows is well formed)."""

    model_config = ConfigDict(json_schema_extra={"allOf": [
        _when("tool_result", {"required": ["tool_use_id"], "properties": {"tool_use_id": _ID}}),
        _when("tool_use", {"required": ["id", "name"], "properties": {"id": _ID, "name": _ID}}),
        _when("image", {"required": ["source"], "properties": {"source": _IMAGE_SOURCE}}),
    ]})

    type: str
    text: str | None = None
    source: dict[str, Any] | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[_AnthropicBlock] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    cache_control: dict[str, Any] | None = None


class _AnthropicMessage(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: str | list[_AnthropicBlock]


class _AnthropicTool(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")  # Anthropic's rule for tool names
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None
    cache_control: dict[str, Any] | None = None


class _AnthropicToolChoice(BaseModel):
    # The published schema says it too: with type "tool", a name is required.
    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"type": {"const": "tool"}}, "required": ["type"]},
        "then": {"properties": {"name": {"type": "string", "minLength": 1}}, "required": ["name"]}})

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _AnthropicThinking(BaseModel):
    type: str
    budget_tokens: int | None = Field(default=None, ge=1024, le=2**31 - 1)  # Anthropic's minimum


class _AnthropicOutputFormat(BaseModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")  # "schema" shadows a BaseModel attribute


class _AnthropicOutputConfig(BaseModel):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: _AnthropicOutputFormat | None = None


class _AnthropicMetadata(BaseModel):
    user_id: str | None = Field(default=None, max_length=512)


class MessagesBody(BaseModel):
    """The Messages body; fields it does not name are checked by ``anthropic_native``."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int = Field(ge=1, le=2**31 - 1)
    messages: list[_AnthropicMessage] = Field(min_length=1)
    system: str | list[_AnthropicBlock] | None = None
    tools: list[_AnthropicTool] | None = None
    tool_choice: _AnthropicToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    thinking: _AnthropicThinking | None = None
    output_config: _AnthropicOutputConfig | None = None
    output_format: _AnthropicOutputFormat | None = None
    metadata: _AnthropicMetadata | None = None
    stream: StrictBool = False
    warden: dict[str, Any] | None = None


class CountTokensBody(MessagesBody):
    """``count_tokens`` takes a Messages body without ``max_tokens``."""

    max_tokens: int = Field(default=1, ge=1, le=2**31 - 1)


# --- wire -> internal -------------------------------------------------------------------


def _unsupported_block(path: str, kind: str) -> InvalidRequest:
    """A block Warden cannot serve in that place (a document, an image in an assistant turn)."""
    return InvalidRequest(f"{path}: content block type {kind!r} is not supported here", param=path,
                          code="unsupported_content")


def _image(block: _AnthropicBlock, path: str) -> ImagePart:
    src = block.source or {}
    kind = src.get("type")
    if kind == "base64" and isinstance(src.get("data"), str):
        return ImagePart(data=checked_base64(src["data"], f"{path}.source.data"),
                         media_type=src.get("media_type"))
    if kind == "url" and isinstance(src.get("url"), str):
        return image_part(src["url"], path=f"{path}.source.url")
    raise invalid(f"{path}.source", "an image source must be base64 (media_type, data) or url")


def _content(blocks: str | list[_AnthropicBlock] | None, path: str) -> list[ContentPart]:
    """Text and image blocks -> parts (the blocks a user turn or tool result holds)."""
    if blocks is None:
        return []
    if isinstance(blocks, str):
        return [TextPart(blocks)]
    parts: list[ContentPart] = []
    for j, block in enumerate(blocks):
        if block.type == "text":
            parts.append(TextPart(block.text or "", block.cache_control))
        elif block.type == "image":
            parts.append(_image(block, f"{path}.{j}"))
        else:
            raise _unsupported_block(f"{path}.{j}.type", block.type)
    return parts


def _user_turn(m: _AnthropicMessage, path: str, names: dict[str, str]) -> list[Message]:
    if isinstance(m.content, str):
        return [Message.text("user", m.content)]
    results: list[Message] = []
    rest: list[_AnthropicBlock] = []
    for j, block in enumerate(m.content):
        if block.type != "tool_result":
            rest.append(block)
            continue
        if not block.tool_use_id:
            raise invalid(f"{path}.{j}.tool_use_id", "required for tool_result")
        parts = _content(block.content, f"{path}.{j}.content")
        if block.is_error:
            parts.insert(0, TextPart("Tool error: "))
        results.append(Message(role="tool", content=parts, tool_call_id=block.tool_use_id,
                               name=names.get(block.tool_use_id), cache_control=block.cache_control))
    if rest:
        results.append(Message(role="user", content=_content(rest, path)))
    return results


def _assistant_turn(m: _AnthropicMessage, path: str, names: dict[str, str]) -> Message:
    if isinstance(m.content, str):
        return Message.text("assistant", m.content)
    msg = Message(role="assistant")
    thinking: list[str] = []
    for j, block in enumerate(m.content):
        if block.type == "text":
            msg.content.append(TextPart(block.text or "", block.cache_control))
        elif block.type == "tool_use":
            if not block.id or not block.name:
                raise invalid(f"{path}.{j}", "tool_use needs id and name")
            msg.tool_calls.append(ToolCall(block.id, block.name, orjson.dumps(
                block.input if block.input is not None else {}).decode()))
            names[block.id] = block.name
            msg.cache_control = block.cache_control or msg.cache_control
        elif block.type == "thinking":
            thinking.append(block.thinking or "")
        elif block.type != "redacted_thinking":  # opaque to every other provider: dropped
            raise _unsupported_block(f"{path}.{j}.type", block.type)
    msg.reasoning = "".join(thinking) or None
    return msg


def _system(system: str | list[_AnthropicBlock] | None, path: str = "system") -> list[Message]:
    if system is None:
        return []
    # One message per block: adapters join system messages with a blank line,
    # where parts of one message would run together.
    return [Message(role="system", content=[part]) for part in _content(system, path)]


def _tool_choice(raw: _AnthropicToolChoice | None) -> ToolChoice | None:
    if raw is None:
        return None
    if raw.type == "tool":
        if not raw.name:
            raise invalid("tool_choice.name", "required when type is 'tool'")
        return ToolChoice("tool", raw.name)
    return ToolChoice({"any": "required"}.get(raw.type, raw.type))  # type: ignore[arg-type]


_EFFORTS = ("low", "medium", "high")  # the efforts Anthropic names, smallest budget first


def thinking_effort(thinking: _AnthropicThinking | None) -> Literal["low", "medium", "high"] | None:
    """A thinking budget read back through the adapter's budgets: the effort whose
    budget is the smallest above half of it, so each effort survives the round trip."""
    if thinking is None or thinking.type != "enabled":
        return None
    budget = thinking.budget_tokens or 0
    return next((e for e in _EFFORTS if 2 * THINKING_BUDGET[e] > budget), "high")  # type: ignore[return-value]


def _effort(body: MessagesBody) -> Literal["low", "medium", "high"] | None:
    config = body.output_config
    if config is not None and config.effort is not None:
        return "high" if config.effort in ("xhigh", "max") else config.effort
    return thinking_effort(body.thinking)


def _response_format(body: MessagesBody) -> ResponseFormat | None:
    config = body.output_config
    fmt = config.format if config is not None else None
    if fmt is not None and body.output_format is not None:
        raise InvalidRequest("output_format: give output_config.format or output_format, not both",
                             param="output_format")
    fmt = fmt or body.output_format
    return None if fmt is None else ResponseFormat("json_schema", schema=fmt.schema_)


def to_chat_request(body: MessagesBody, headers: Mapping[str, str] | None = None) -> ChatRequest:
    """Convert a parsed Messages body (and its ``anthropic-*`` headers) into the internal request."""
    if body.max_tokens < 1:
        raise invalid("max_tokens", "must be at least 1")
    system = _system(body.system)
    messages: list[Message] = []
    names: dict[str, str] = {}
    for i, m in enumerate(body.messages):
        path = f"messages.{i}.content"
        if m.role == "system":  # folded into the system prompt, in order
            system.extend(_system(m.content, path))
        elif m.role == "user":
            messages.extend(_user_turn(m, path, names))
        else:
            messages.append(_assistant_turn(m, path, names))
    messages[:0] = system
    tools = []
    for i, t in enumerate(body.tools or []):
        if t.input_schema is None:
            raise InvalidRequest(f"tools.{i}: only client tools with an input_schema are supported "
                                 f"(not {t.type or 'this tool'!r})", param=f"tools.{i}.input_schema",
                                 code="unsupported_tool")
        tools.append(ToolSpec(t.name, t.description or "", t.input_schema, t.cache_control))
    parallel = None
    if body.tool_choice is not None and body.tool_choice.disable_parallel_tool_use is not None:
        parallel = not body.tool_choice.disable_parallel_tool_use
    return ChatRequest(
        model=body.model, messages=messages, tools=tools, tool_choice=_tool_choice(body.tool_choice),
        parallel_tool_calls=parallel, temperature=body.temperature, top_p=body.top_p,
        max_tokens=body.max_tokens, stop=list(body.stop_sequences or []),
        response_format=_response_format(body), reasoning_effort=_effort(body), stream=body.stream,
        user=body.metadata.user_id if body.metadata is not None else None,
        native=native_of(body.model_extra, headers or {}, _adaptive(body.thinking)),
    )


def _adaptive(thinking: _AnthropicThinking | None) -> dict[str, Any] | None:
    """Adaptive thinking has no budget to carry across formats: Anthropic gets it as sent."""
    return thinking.model_dump(exclude_none=True) if thinking is not None and thinking.type == "adaptive" else None


# --- internal -> wire ---------------------------------------------------------------------

# The inverse of the adapter's stop_reason table; "error" has no Anthropic spelling.
STOP_REASONS: dict[FinishReason, str] = {
    **inverse(FINISH, canonical={"stop": "end_turn", "length": "max_tokens"}), "error": "end_turn"}


def message_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("msg_") else f"msg_{uuid.uuid4().hex}"


def tool_input(arguments: str, tool_name: str) -> dict[str, Any]:
    """The model's argument text as the dict Anthropic clients expect ({} if it is not one)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        log.warning("tool call %s: arguments are not a JSON object; sent as {}", tool_name)
        return {}
    return value


def render_usage(usage: Usage, info: CallInfo) -> dict[str, Any]:
    uncached = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    out: dict[str, Any] = {
        "input_tokens": uncached,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    out["warden"] = {"cost_usd": cost_text(info.cost_usd)}
    return out


def render_message(resp: ChatResponse, info: CallInfo) -> dict[str, Any]:
    """An Anthropic ``message`` object for a finished internal response."""
    content: list[dict[str, Any]] = []
    if resp.reasoning:
        content.append({"type": "thinking", "thinking": resp.reasoning, "signature": ""})
    if resp.text:
        content.append({"type": "text", "text": resp.text})
    content.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(c.arguments, c.name)}
                   for c in resp.tool_calls)
    return {
        "id": message_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": served_model(info),
        "content": content,
        "stop_reason": STOP_REASONS[resp.finish_reason],
        "stop_sequence": None,
        "usage": render_usage(resp.usage, info),
    }


# error.type for an upstream error class: the inverse of the adapter's table, so a
# Warden behind Warden classifies it alike. AuthFailed is left out: the upstream
# refused Warden's credential, not the client's key (it goes by status: api_error).
_UPSTREAM_TYPES = inverse({name: cls for name, (_, cls) in ERROR_TYPES.items()}, skip={AuthFailed},
                          canonical={BadRequest: "invalid_request_error", Overloaded: "overloaded_error"})
_STATUS_TYPES = inverse({name: status for name, (status, _) in ERROR_TYPES.items()})


def error_type(error: WardenError) -> str:
    """Anthropic's ``error.type`` for a WardenError, the same in the error reply
    before a stream and in the error event after its first token: the upstream
    class's type, else the type Anthropic sends with that HTTP status."""
    for cls, name in _UPSTREAM_TYPES.items():
        if isinstance(error, cls):
            return name
    return _STATUS_TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")


def error_body(error: WardenError, request_id: str | None = None) -> dict[str, Any]:
    """Warden's error envelope in Anthropic's shape: Anthropic's type, and a
    top-level ``"type": "error"`` that Anthropic SDKs look for."""
    envelope = error.envelope(request_id or None)
    envelope["error"]["type"] = error_type(error)
    return {"type": "error", **envelope}


def render_model(model: dict[str, Any]) -> dict[str, Any]:
    """One ``GET /v1/models`` entry as Anthropic's ``ModelInfo`` (Claude Code's gateway
    model discovery sends ``anthropic-version``); Warden's own fields ride along."""
    return {"type": "model", "id": model["id"], "display_name": model["id"],
            "created_at": "1970-01-01T00:00:00Z", **{k: v for k, v in model.items() if k != "id"}}


def render_models(models: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /v1/models`` in Anthropic's page shape (one page: ``has_more`` false)."""
    data = [render_model(m) for m in models]
    return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}

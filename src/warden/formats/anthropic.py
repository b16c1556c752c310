"""Anthropic Messages, client side: the request body, its conversion to the
internal ``ChatRequest``, and messages, usage, stream events and errors rendered
back. Pure functions, tested against the official ``anthropic`` SDK types.

- ``system`` (string or text blocks) becomes system messages. ``tool_result``
  blocks become tool messages placed before the rest of their user turn;
  ``is_error`` results are prefixed ``"Tool error: "`` since the internal format
  (and OpenAI-format providers) have no error flag.
- ``thinking`` blocks on input are carried as the assistant message's reasoning;
  ``redacted_thinking`` is dropped. ``top_k`` and ``metadata`` are ignored.
- ``output_config.format`` becomes a JSON-schema response format;
  ``output_config.effort`` (``xhigh``/``max`` served as ``high``) wins over
  ``thinking.budget_tokens``, which is read back through the Anthropic adapter's
  budgets (``thinking_effort``) so a request passed on keeps its size class.
- Usage: Anthropic's ``input_tokens`` *excludes* cache reads and writes; ours
  includes them, so they are subtracted here. Reasoning tokens are reported as
  ``output_tokens_details.thinking_tokens``; the cost as ``usage.warden.cost_usd``
  (decimal string, ``null`` if unknown) in the message and in ``message_delta``.
- Errors: Warden's envelope with Anthropic's ``error.type`` (``error_type``: the
  same before and after the first token) under a top-level ``"type": "error"``;
  after the first token an ``event: error`` frame ends the stream (no ``message_stop``).
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, Field, StrictBool

from warden.errors import WardenError
from warden.formats import sse
from warden.formats.common import (
    checked_base64,
    cost_text,
    image_part,
    incomplete_stream,
    invalid,
    inverse,
    served_model,
)
from warden.gateway.errors import AuthFailed, BadRequest, Overloaded
from warden.gateway.providers.anthropic import ERROR_TYPES, FINISH, THINKING_BUDGET
from warden.gateway.types import (
    ChatRequest, ChatResponse, ContentPart, FinishEvent, FinishReason, ImagePart, Message,
    ReasoningDelta, ResponseFormat, StreamEvent, TextDelta, TextPart, ToolCall, ToolCallDelta,
    ToolChoice, ToolSpec, Usage, UsageEvent,
)

if TYPE_CHECKING:
    from warden.gateway.metering import CallInfo

log = logging.getLogger("warden.formats.anthropic")

# --- request models -------------------------------------------------------------------


class _Block(BaseModel):
    """Any content block; which fields must be present depends on ``type``."""

    type: str
    text: str | None = None
    source: dict[str, Any] | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[_Block] | None = None
    is_error: bool | None = None
    thinking: str | None = None


class _MessageIn(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[_Block]


class _ToolIn(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")  # Anthropic's rule for tool names
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class _ToolChoiceIn(BaseModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _Thinking(BaseModel):
    type: str
    budget_tokens: int | None = Field(default=None, ge=1024, le=2**31 - 1)  # Anthropic's minimum


class _OutputFormat(BaseModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")  # "schema" shadows a BaseModel attribute


class _OutputConfig(BaseModel):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: _OutputFormat | None = None


class MessagesBody(BaseModel):
    model: str
    max_tokens: int = Field(ge=1, le=2**31 - 1)
    messages: list[_MessageIn] = Field(min_length=1)
    system: str | list[_Block] | None = None
    tools: list[_ToolIn] | None = None
    tool_choice: _ToolChoiceIn | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    thinking: _Thinking | None = None
    output_config: _OutputConfig | None = None
    stream: StrictBool = False
    warden: dict[str, Any] | None = None


# --- wire -> internal -------------------------------------------------------------------


def _image(block: _Block, path: str) -> ImagePart:
    src = block.source or {}
    kind = src.get("type")
    if kind == "base64" and isinstance(src.get("data"), str):
        return ImagePart(data=checked_base64(src["data"], f"{path}.source.data"),
                         media_type=src.get("media_type"))
    if kind == "url" and isinstance(src.get("url"), str):
        return image_part(src["url"], path=f"{path}.source.url")
    raise invalid(f"{path}.source", "an image source must be base64 (media_type, data) or url")


def _content(blocks: str | list[_Block] | None, path: str) -> list[ContentPart]:
    """Text and image blocks -> parts (the blocks a user turn or tool result holds)."""
    if blocks is None:
        return []
    if isinstance(blocks, str):
        return [TextPart(blocks)]
    parts: list[ContentPart] = []
    for j, block in enumerate(blocks):
        if block.type == "text":
            parts.append(TextPart(block.text or ""))
        elif block.type == "image":
            parts.append(_image(block, f"{path}.{j}"))
        else:
            raise invalid(f"{path}.{j}.type", f"content block type {block.type!r} is not supported here")
    return parts


def _user_turn(m: _MessageIn, path: str, names: dict[str, str]) -> list[Message]:
    if isinstance(m.content, str):
        return [Message.text("user", m.content)]
    results: list[Message] = []
    rest: list[_Block] = []
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
                               name=names.get(block.tool_use_id)))
    if rest:
        results.append(Message(role="user", content=_content(rest, path)))
    return results


def _assistant_turn(m: _MessageIn, path: str, names: dict[str, str]) -> Message:
    if isinstance(m.content, str):
        return Message.text("assistant", m.content)
    msg = Message(role="assistant")
    thinking: list[str] = []
    for j, block in enumerate(m.content):
        if block.type == "text":
            msg.content.append(TextPart(block.text or ""))
        elif block.type == "tool_use":
            if not block.id or not block.name:
                raise invalid(f"{path}.{j}", "tool_use needs id and name")
            msg.tool_calls.append(ToolCall(block.id, block.name, orjson.dumps(
                block.input if block.input is not None else {}).decode()))
            names[block.id] = block.name
        elif block.type == "thinking":
            thinking.append(block.thinking or "")
        elif block.type != "redacted_thinking":  # opaque to every other provider: dropped
            raise invalid(f"{path}.{j}.type", f"content block type {block.type!r} is not supported here")
    msg.reasoning = "".join(thinking) or None
    return msg


def _system(system: str | list[_Block] | None) -> list[Message]:
    if system is None:
        return []
    # One message per block: adapters join system messages with a blank line,
    # where parts of one message would run together.
    return [Message(role="system", content=[part]) for part in _content(system, "system")]


def _tool_choice(raw: _ToolChoiceIn | None) -> ToolChoice | None:
    if raw is None:
        return None
    if raw.type == "tool":
        if not raw.name:
            raise invalid("tool_choice.name", "required when type is 'tool'")
        return ToolChoice("tool", raw.name)
    return ToolChoice({"any": "required"}.get(raw.type, raw.type))  # type: ignore[arg-type]


_EFFORTS = ("low", "medium", "high")  # the efforts Anthropic names, smallest budget first


def thinking_effort(thinking: _Thinking | None) -> Literal["low", "medium", "high"] | None:
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
    if config is None or config.format is None:
        return None
    return ResponseFormat("json_schema", schema=config.format.schema_)


def to_chat_request(body: MessagesBody) -> ChatRequest:
    """Convert a parsed Messages body into the internal request."""
    if body.max_tokens < 1:
        raise invalid("max_tokens", "must be at least 1")
    messages = _system(body.system)
    names: dict[str, str] = {}
    for i, m in enumerate(body.messages):
        path = f"messages.{i}.content"
        if m.role == "user":
            messages.extend(_user_turn(m, path, names))
        else:
            messages.append(_assistant_turn(m, path, names))
    tools = []
    for i, t in enumerate(body.tools or []):
        if t.input_schema is None:
            raise invalid(f"tools.{i}.input_schema", "only client tools with an input_schema are supported")
        tools.append(ToolSpec(t.name, t.description or "", t.input_schema))
    parallel = None
    if body.tool_choice is not None and body.tool_choice.disable_parallel_tool_use is not None:
        parallel = not body.tool_choice.disable_parallel_tool_use
    return ChatRequest(
        model=body.model, messages=messages, tools=tools, tool_choice=_tool_choice(body.tool_choice),
        parallel_tool_calls=parallel, temperature=body.temperature, top_p=body.top_p,
        max_tokens=body.max_tokens, stop=list(body.stop_sequences or []),
        response_format=_response_format(body), reasoning_effort=_effort(body), stream=body.stream,
    )


# --- internal -> wire ---------------------------------------------------------------------

# The inverse of the adapter's stop_reason table; "error" has no Anthropic spelling.
_STOP_REASONS: dict[FinishReason, str] = {
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
        "stop_reason": _STOP_REASONS[resp.finish_reason],
        "stop_sequence": None,
        "usage": render_usage(resp.usage, info),
    }


def frame(kind: str, payload: dict[str, Any]) -> bytes:
    return sse.frame({"type": kind, **payload}, event=kind)


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


class EventRenderer:
    """Turns stream events into Anthropic SSE frames, one event at a time.

    Blocks open lazily: the first text / thinking / tool piece after a different
    kind closes the open block and starts a new one. Usage arrives before the
    finish event; both go out together in ``message_delta`` from ``end()``.
    """

    def __init__(self, info: CallInfo, *, request_id: str | None = None) -> None:
        self.info = info
        self.request_id = request_id
        self.id = f"msg_{uuid.uuid4().hex}"
        self.next_index = 0
        self.open: tuple[str, int] | None = None  # (kind or "tool:<n>", block index)
        self.tool_blocks: dict[int, int] = {}  # internal tool index -> block index
        self.usage = Usage()
        self.finish: FinishReason | None = None
        self.failed = False

    def start(self) -> bytes:
        return frame("message_start", {"message": {
            "id": self.id, "type": "message", "role": "assistant", "model": served_model(self.info),
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},  # the real figures come in message_delta
        }})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        index = self.open[1]
        self.open = None
        return frame("content_block_stop", {"index": index})

    def _switch(self, kind: str, block: dict[str, Any]) -> tuple[bytes, int]:
        """Make ``kind`` the open block, starting it if needed; returns (frames, index)."""
        if self.open is not None and self.open[0] == kind:
            return b"", self.open[1]
        out = self._close()
        index = self.next_index
        self.next_index += 1
        self.open = (kind, index)
        return out + frame("content_block_start", {"index": index, "content_block": block}), index

    def event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            out, index = self._switch("text", {"type": "text", "text": ""})
            return out + frame("content_block_delta", {"index": index,
                                                       "delta": {"type": "text_delta", "text": ev.text}})
        if isinstance(ev, ReasoningDelta):
            out, index = self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            return out + frame("content_block_delta", {"index": index,
                                                       "delta": {"type": "thinking_delta", "thinking": ev.text}})
        if isinstance(ev, ToolCallDelta):
            return self._tool(ev)
        if isinstance(ev, UsageEvent):
            self.usage = ev.usage
            return b""
        if isinstance(ev, FinishEvent):
            self.finish = ev.reason
            return b""
        return self.error(ev.error)

    def _tool(self, ev: ToolCallDelta) -> bytes:
        out = b""
        index = self.tool_blocks.get(ev.index)
        if index is None:
            out, index = self._switch(f"tool:{ev.index}", {
                "type": "tool_use", "id": ev.id or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": ev.name or "", "input": {},
            })
            self.tool_blocks[ev.index] = index
        # A late piece of an earlier call goes to its own block index, which
        # Anthropic clients accumulate by index even after a later block opened.
        if ev.arguments:
            out += frame("content_block_delta", {"index": index, "delta": {
                "type": "input_json_delta", "partial_json": ev.arguments}})
        return out

    def error(self, error: WardenError) -> bytes:
        self.failed = True
        return frame("error", error_body(error, self.request_id))

    def end(self) -> bytes:
        """Frames after the last event: close the block, ``message_delta``, ``message_stop``."""
        if self.failed:
            return b""
        if self.finish is None:  # the stream stopped without saying why: say so
            return self.error(incomplete_stream())
        return self._close() + frame("message_delta", {
            "delta": {"stop_reason": _STOP_REASONS[self.finish], "stop_sequence": None},
            "usage": render_usage(self.usage, self.info),
        }) + frame("message_stop", {})

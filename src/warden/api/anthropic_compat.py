"""Anthropic Messages edge: ``POST /v1/messages``.

Parsing and rendering are pure functions below (tested against the official
``anthropic`` SDK types). Mapping notes:

- ``system`` (string or text blocks) becomes one system message. ``tool_result``
  blocks become tool messages placed before the rest of their user turn;
  ``is_error`` results are prefixed ``"Tool error: "`` since the internal format
  (and OpenAI-format providers) have no error flag.
- ``thinking`` blocks on input are carried as the assistant message's reasoning;
  ``redacted_thinking`` is dropped. ``top_k`` and ``metadata`` are ignored.
- ``output_config.format`` (structured outputs) becomes a JSON-schema response
  format; ``output_config.effort`` is the reasoning effort (``xhigh``/``max`` are
  served as ``high``) and wins over ``thinking``.
- ``thinking: {"type": "enabled", "budget_tokens": N}`` maps to a reasoning
  effort: N < 4096 -> ``low``, N < 16384 -> ``medium``, else ``high`` (the
  inverse of the Anthropic adapter's budgets 2048/8192/24576, so a request
  passed through to Anthropic keeps its size class).
- Usage: Anthropic's ``input_tokens`` *excludes* cache reads and writes; ours
  includes them, so they are subtracted here. Reasoning tokens are reported as
  ``output_tokens_details.thinking_tokens``.
- Cost: ``usage.warden.cost_usd`` (decimal string, ``null`` if unknown) in the
  message and in the stream's ``message_delta``; non-stream replies also carry
  the ``x-warden-cost-usd`` header.
- Errors before a stream starts are the usual envelope with a top-level
  ``"type": "error"`` so Anthropic SDKs recognise them; after the first token,
  an ``event: error`` frame ends the stream (no ``message_stop``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from warden.api.deps import authenticated
from warden.api.wire.common import (
    GatewayStreamResponse,
    call_context,
    cost_text,
    image_part,
    invalid,
    parse_body,
    render_stream,
    served_model,
    warden_headers,
)
from warden.errors import WardenError
from warden.formats import sse
from warden.gateway.errors import (
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    RateLimited,
    Timeout,
)
from warden.gateway.gateway import CallInfo
from warden.gateway.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    FinishEvent,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    ResponseFormat,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    Usage,
    UsageEvent,
)
from warden.logs import request_id_var

log = logging.getLogger("warden.api.anthropic")


# --- errors in Anthropic's shape ---------------------------------------------------


def anthropic_error_response(error: WardenError) -> Response:
    # The request context always has an id (the middleware sets it), so the envelope carries it.
    body = {"type": "error", **error.envelope(request_id_var.get())}
    return Response(orjson.dumps(body), status_code=error.status,
                    media_type="application/json", headers=error.headers or None)


router = APIRouter(prefix="/v1", tags=["anthropic"])

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
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class _ToolChoiceIn(BaseModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _Thinking(BaseModel):
    type: str
    budget_tokens: int | None = None


class _OutputFormat(BaseModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")  # "schema" shadows a BaseModel attribute


class _OutputConfig(BaseModel):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: _OutputFormat | None = None


class MessagesBody(BaseModel):
    model: str
    max_tokens: int
    messages: list[_MessageIn]
    system: str | list[_Block] | None = None
    tools: list[_ToolIn] | None = None
    tool_choice: _ToolChoiceIn | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    thinking: _Thinking | None = None
    output_config: _OutputConfig | None = None
    stream: bool = False
    warden: dict[str, Any] | None = None


# --- wire -> internal -------------------------------------------------------------------


def _image(block: _Block, path: str) -> ImagePart:
    src = block.source or {}
    kind = src.get("type")
    if kind == "base64" and isinstance(src.get("data"), str):
        return ImagePart(data=src["data"], media_type=src.get("media_type"))
    if kind == "url" and isinstance(src.get("url"), str):
        return image_part(src["url"])
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


def thinking_effort(thinking: _Thinking | None) -> Literal["low", "medium", "high"] | None:
    if thinking is None or thinking.type != "enabled":
        return None
    budget = thinking.budget_tokens or 0
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


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
        model=body.model,
        messages=messages,
        tools=tools,
        tool_choice=_tool_choice(body.tool_choice),
        parallel_tool_calls=parallel,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        stop=list(body.stop_sequences or []),
        response_format=_response_format(body),
        reasoning_effort=_effort(body),
        stream=body.stream,
    )


# --- internal -> wire ---------------------------------------------------------------------

_STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}


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


_ERROR_TYPES: tuple[tuple[type[WardenError], str], ...] = (
    (RateLimited, "rate_limit_error"),
    (Overloaded, "overloaded_error"),
    (Timeout, "timeout_error"),
    (ContextTooLong, "invalid_request_error"),
    (BadRequest, "invalid_request_error"),
    (ContentFiltered, "invalid_request_error"),
)


def stream_error_type(error: WardenError) -> str:
    for cls, name in _ERROR_TYPES:
        if isinstance(error, cls):
            return name
    return "api_error"


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
        body: dict[str, Any] = {"type": stream_error_type(error), "message": error.message,
                                "code": error.code}
        if self.request_id:
            body["request_id"] = self.request_id
        return frame("error", {"error": body})

    def end(self) -> bytes:
        """Frames after the last event: close the block, ``message_delta``, ``message_stop``."""
        if self.failed:
            return b""
        if self.finish is None:  # the stream stopped without saying why: say so
            return self.error(WardenError("the upstream stream ended before it finished",
                                          code="stream_incomplete", status=502))
        return self._close() + frame("message_delta", {
            "delta": {"stop_reason": _STOP_REASONS[self.finish], "stop_sequence": None},
            "usage": render_usage(self.usage, self.info),
        }) + frame("message_stop", {})


# --- route ---------------------------------------------------------------------------------


async def messages(request: Request) -> Response:
    """``POST /v1/messages``: a plain Starlette endpoint (the hot path; see
    ``openai_compat.chat_completions``). Every WardenError, auth and validation
    included, leaves in Anthropic's shape."""
    try:
        return await _messages(request)
    except WardenError as exc:
        return anthropic_error_response(exc)


async def _messages(request: Request) -> Response:
    services, principal = await authenticated(request)
    body = parse_body(MessagesBody, await request.body())
    req = to_chat_request(body)
    ctx = call_context(request, principal, body.warden)
    if req.stream:
        stream = await services.gateway.open_stream(req, ctx)
        renderer = EventRenderer(stream.info, request_id=ctx.request_id)
        return GatewayStreamResponse(render_stream(stream, renderer, log), stream,
                                     warden_headers(stream.info, with_cost=False))
    resp, info = await services.gateway.complete(req, ctx)
    return Response(orjson.dumps(render_message(resp, info)), media_type="application/json",
                    headers=warden_headers(info, with_cost=True))


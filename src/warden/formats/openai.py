"""OpenAI Chat Completions, client side: the request body, its conversion to the
internal ``ChatRequest``, and completions, usage, models and stream chunks
rendered back. Pure functions, tested against the official SDK's types without a
server. Mapping notes:

- ``developer`` messages are system messages; ``max_completion_tokens`` wins over
  ``max_tokens``; ``reasoning_effort`` ``none`` means no reasoning and
  ``xhigh``/``max`` are served as ``high``; ``n`` must be 1; unknown fields are ignored.
- Legacy ``functions``/``function_call`` become tools; the reply then uses the
  legacy ``message.function_call`` shape too.
- Warden options come from the body's ``warden`` object (``extra_body``).
- The ``usage`` object carries a Warden extension ``"warden": {"cost_usd": "0.00012"}``
  (``null`` when the price is unknown). Streams, whose headers leave before the
  cost is known, carry it only in the usage chunk (``stream_options.include_usage``).
- An error after the first streamed token is one ``data: {"error": {...}}`` event
  and the stream ends *without* ``[DONE]``, so no client mistakes it for a
  complete answer.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from warden.errors import WardenError
from warden.formats import sse
from warden.formats.common import (
    CHAT_TOOL_CHOICE, chat_part_schema, cost_text, image_part, incomplete_stream, invalid, inverse,
    served_model, when,
)
from warden.gateway.providers.openai import FINISH
from warden.gateway.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    FinishEvent,
    FinishReason,
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

if TYPE_CHECKING:
    from warden.gateway.metering import CallInfo

# --- request models (shape only; meaning is checked while converting) --------


_EFFORT_NAMES = ("minimal", "low", "medium", "high", "xhigh", "max", "none")  # the keys of EFFORTS


class _Function(BaseModel):
    name: str
    arguments: str = ""


class _ToolCallIn(BaseModel):
    id: str
    type: str = "function"
    function: _Function


class _ImageUrl(BaseModel):
    url: str
    detail: str | None = None


class _Part(BaseModel):
    model_config = ConfigDict(json_schema_extra=chat_part_schema)
    type: str
    text: str | None = None
    refusal: str | None = None
    image_url: _ImageUrl | None = None


class _MessageIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"allOf": [  # the rules _messages checks
        {"if": {"properties": {"role": {"const": role}}, "required": ["role"]},
         "then": {"required": [field], "properties": {field: {"type": "string", "minLength": 1}}}}
        for role, field in (("tool", "tool_call_id"), ("function", "name"))]})

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[_Part] | None = None
    name: str | None = None
    tool_calls: list[_ToolCallIn] | None = None
    tool_call_id: str | None = None
    function_call: _Function | None = None
    reasoning_content: str | None = None


# OpenAI's own rule for function names; it also keeps a 10,000-character name from
# reaching any provider.
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
_INT64 = 2**63 - 1


class _FunctionDef(BaseModel):
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _ToolIn(BaseModel):
    type: str = "function"
    function: _FunctionDef


class _JsonSchema(BaseModel):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # "schema" shadows BaseModel
    strict: bool | None = None


class _ResponseFormatIn(BaseModel):
    model_config = when("type", "json_schema", {"required": ["json_schema"], "properties": {"json_schema": {
        "type": "object", "required": ["schema"], "properties": {"schema": {"type": "object"}}}}})
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    model: str
    messages: list[_MessageIn] = Field(min_length=1)
    tools: list[_ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = Field(default=None, json_schema_extra=CHAT_TOOL_CHOICE)
    functions: list[_FunctionDef] | None = None
    function_call: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: _ResponseFormatIn | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=_INT64)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=_INT64)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-_INT64 - 1, le=_INT64)
    reasoning_effort: str | None = Field(default=None, json_schema_extra={"enum": [*_EFFORT_NAMES, None]})
    user: str | None = None
    n: int | None = Field(default=None, ge=1, le=128, json_schema_extra={"maximum": 1})  # only 1 served (see below)
    # Checked, not forwarded: token ids -> a bias OpenAI bounds to [-100, 100].
    logit_bias: dict[Annotated[str, Field(pattern=r"^\d{1,10}$")],
                     Annotated[float, Field(ge=-100, le=100)]] | None = None
    stream: StrictBool = False
    stream_options: _StreamOptions | None = None
    warden: dict[str, Any] | None = None

    @property
    def legacy_functions(self) -> bool:
        return bool(self.functions) and not self.tools

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


# --- wire -> internal ----------------------------------------------------------

EFFORTS = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high",
            "xhigh": "high", "max": "high", "none": None}
assert tuple(EFFORTS) == _EFFORT_NAMES


def _parts(content: str | list[_Part] | None, path: str) -> list[ContentPart]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[ContentPart] = []
    for j, part in enumerate(content):
        where = f"{path}.{j}"
        if part.type == "text" and part.text is not None:
            parts.append(TextPart(part.text))
        elif part.type == "refusal" and part.refusal is not None:
            parts.append(TextPart(part.refusal))
        elif part.type == "image_url" and part.image_url is not None:
            parts.append(image_part(part.image_url.url, part.image_url.detail, path=f"{where}.image_url.url"))
        elif part.type in ("text", "refusal", "image_url"):
            raise invalid(f"{where}.{part.type}", "field required for this part type")
        else:
            raise invalid(f"{where}.type", f"content part type {part.type!r} is not supported")
    return parts


def _messages(body: ChatCompletionBody) -> list[Message]:
    out: list[Message] = []
    names_by_id: dict[str, str] = {}  # tool results name their tool (Gemini needs it)
    legacy_ids: dict[str, str] = {}  # legacy function calls carry no id: make one per name
    for i, m in enumerate(body.messages):
        path = f"messages.{i}"
        content = _parts(m.content, f"{path}.content")
        if m.role in ("system", "developer"):
            out.append(Message(role="system", content=content))
        elif m.role == "user":
            out.append(Message(role="user", content=content))
        elif m.role == "assistant":
            calls = [ToolCall(c.id, c.function.name, c.function.arguments or "{}") for c in m.tool_calls or []]
            if m.function_call is not None:
                legacy_ids[m.function_call.name] = f"call_{len(out)}_{m.function_call.name}"
                calls.append(ToolCall(legacy_ids[m.function_call.name], m.function_call.name,
                                      m.function_call.arguments or "{}"))
            names_by_id.update((c.id, c.name) for c in calls)
            out.append(Message(role="assistant", content=content, tool_calls=calls,
                               reasoning=m.reasoning_content))
        elif m.role == "tool":
            if not m.tool_call_id:
                raise invalid(f"{path}.tool_call_id", "required for role 'tool'")
            out.append(Message(role="tool", content=content, tool_call_id=m.tool_call_id,
                               name=m.name or names_by_id.get(m.tool_call_id)))
        else:  # legacy role "function"
            if not m.name:
                raise invalid(f"{path}.name", "required for role 'function'")
            out.append(Message(role="tool", content=content, name=m.name,
                               tool_call_id=legacy_ids.get(m.name, f"call_{m.name}")))
    return out


def _tools(body: ChatCompletionBody) -> list[ToolSpec]:
    defs: list[_FunctionDef] = []
    for i, tool in enumerate(body.tools or []):
        if tool.type != "function":
            raise invalid(f"tools.{i}.type", f"tool type {tool.type!r} is not supported")
        defs.append(tool.function)
    if body.legacy_functions:
        defs = list(body.functions or [])
    return [ToolSpec(d.name, d.description or "", d.parameters or {"type": "object", "properties": {}})
            for d in defs]


def _tool_choice(raw: str | dict[str, Any] | None, path: str) -> ToolChoice | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise invalid(path, "must be 'auto', 'none', 'required' or a named function")
        return ToolChoice(raw)  # type: ignore[arg-type]
    # {"type": "function", "function": {"name"}}, or legacy {"name"}
    fn = raw.get("function") if isinstance(raw.get("function"), dict) else raw
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"{path}.function.name", "a named tool choice needs the function name")
    return ToolChoice("tool", name)


def _response_format(raw: _ResponseFormatIn | None) -> ResponseFormat | None:
    if raw is None:
        return None
    if raw.type != "json_schema":
        return ResponseFormat(raw.type)
    spec = raw.json_schema
    if spec is None or spec.schema_ is None:
        raise invalid("response_format.json_schema.schema", "json_schema needs a schema")
    return ResponseFormat("json_schema", schema=spec.schema_, name=spec.name, strict=spec.strict)


def to_chat_request(body: ChatCompletionBody) -> ChatRequest:
    """Convert a parsed Chat Completions body into the internal request."""
    if not body.messages:
        raise invalid("messages", "at least one message is required")
    if body.n not in (None, 1):
        raise invalid("n", "only n=1 is supported")
    if body.reasoning_effort is not None and body.reasoning_effort not in EFFORTS:
        raise invalid("reasoning_effort", f"must be one of {', '.join(EFFORTS)}")
    choice_raw, choice_path = body.tool_choice, "tool_choice"
    if body.legacy_functions and body.function_call is not None:
        choice_raw, choice_path = body.function_call, "function_call"
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return ChatRequest(
        model=body.model,
        messages=_messages(body),
        tools=_tools(body),
        tool_choice=_tool_choice(choice_raw, choice_path),
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=_response_format(body.response_format),
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens,
        stop=stop,
        seed=body.seed,
        reasoning_effort=EFFORTS.get(body.reasoning_effort or "none"),  # type: ignore[arg-type]
        user=body.user,
        stream=body.stream,
    )


# --- internal -> wire ----------------------------------------------------------


# The inverse of the adapter's finish_reason table; a reply in the legacy functions
# shape says "function_call". "error" has no OpenAI spelling.
_FINISH_REASONS: dict[FinishReason, str] = {
    **inverse(FINISH, canonical={"tool_calls": "tool_calls"}), "error": "stop"}
_LEGACY_FINISH_REASONS: dict[FinishReason, str] = {
    **inverse(FINISH, canonical={"tool_calls": "function_call"}), "error": "stop"}


def _finish(reason: FinishReason, legacy: bool) -> str:
    return (_LEGACY_FINISH_REASONS if legacy else _FINISH_REASONS)[reason]


def completion_id(upstream_id: str) -> str:
    """Keep an upstream ``chatcmpl-`` id (traceable at the provider), else mint one."""
    return upstream_id if upstream_id.startswith("chatcmpl-") else f"chatcmpl-{uuid.uuid4().hex}"


def render_usage(usage: Usage, info: CallInfo) -> dict[str, Any]:
    # Our convention is OpenAI's: prompt tokens include cached ones,
    # completion tokens include reasoning ones.
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "warden": {"cost_usd": cost_text(info.cost_usd), "cache_write_tokens": usage.cache_write_tokens},
    }


def render_completion(resp: ChatResponse, info: CallInfo, *, legacy_functions: bool = False,
                      created: int | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object for a finished internal response."""
    message: dict[str, Any] = {"role": "assistant", "content": resp.text, "refusal": None}
    if resp.tool_calls and legacy_functions:
        first = resp.tool_calls[0]
        message["function_call"] = {"name": first.name, "arguments": first.arguments}
    elif resp.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in resp.tool_calls
        ]
    if resp.reasoning:
        message["reasoning_content"] = resp.reasoning
    return {
        "id": completion_id(resp.id),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": served_model(info),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish(resp.finish_reason, legacy_functions)}],
        "usage": render_usage(resp.usage, info),
    }


def error_payload(error: WardenError, request_id: str | None = None) -> dict[str, Any]:
    """The error body, the same envelope every route answers with."""
    return error.envelope(request_id or None)


class ChunkRenderer:
    """Turns stream events into ``chat.completion.chunk`` SSE frames, one event at a time.

    Usage arrives before the finish event but OpenAI sends it last, in its own
    chunk with empty ``choices``: it is held and written by ``end()``.
    """

    def __init__(self, info: CallInfo, *, include_usage: bool, legacy_functions: bool = False,
                 request_id: str | None = None, created: int | None = None) -> None:
        self.info = info
        self.include_usage = include_usage
        self.legacy = legacy_functions
        self.request_id = request_id
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = created if created is not None else int(time.time())
        self.model = served_model(info)
        self.usage: Usage | None = None
        self.finished = False
        self.failed = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse.frame({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            return self._chunk({"content": ev.text})
        if isinstance(ev, ReasoningDelta):
            return self._chunk({"reasoning_content": ev.text})
        if isinstance(ev, ToolCallDelta):
            return self._chunk(self._tool_delta(ev))
        if isinstance(ev, UsageEvent):
            self.usage = ev.usage
            return b""
        if isinstance(ev, FinishEvent):
            self.finished = True
            return self._chunk({}, _finish(ev.reason, self.legacy))
        return self.error(ev.error)

    def _tool_delta(self, ev: ToolCallDelta) -> dict[str, Any]:
        if self.legacy:
            fn: dict[str, Any] = {"arguments": ev.arguments}
            if ev.name is not None:
                fn["name"] = ev.name
            return {"function_call": fn}
        call: dict[str, Any] = {"index": ev.index}
        if ev.id is not None:
            call["id"] = ev.id
            call["type"] = "function"
        fn = {"arguments": ev.arguments}
        if ev.name is not None:
            fn["name"] = ev.name
        call["function"] = fn
        return {"tool_calls": [call]}

    def error(self, error: WardenError) -> bytes:
        self.failed = True
        return sse.frame(error_payload(error, self.request_id))

    def end(self) -> bytes:
        """Frames after the last event: the usage chunk (if asked) and ``[DONE]``."""
        if self.failed:
            return b""
        if not self.finished:  # the stream stopped without saying why: say so
            return self.error(incomplete_stream())
        out = b""
        if self.include_usage and self.usage is not None:
            out += sse.frame({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [],
                        "usage": render_usage(self.usage, self.info)})
        return out + sse.DONE


def render_model(model: dict[str, Any]) -> dict[str, Any]:
    """One model as OpenAI's ``Model`` (id, object, created, owned_by; Warden's fields after)."""
    return {"id": model["id"], "object": "model", "created": 0, "owned_by": "warden", **model}


def render_models(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": [render_model(m) for m in models]}

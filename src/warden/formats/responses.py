"""OpenAI Responses API, client side: the ``POST /v1/responses`` body, its
conversion to the internal ``ChatRequest``, and ``response`` objects rendered
back (the stream's events are ``formats/responses_stream.py``). Pure functions,
tested against the official SDK's types without a server. Mapping notes:

- ``input`` is a string (one user message) or items: messages (``developer`` and
  ``system`` become system messages), ``function_call`` (joined to the assistant
  message before it, as Chat Completions has them), ``function_call_output``
  (tool results) and ``reasoning`` (its text rides on the next assistant turn;
  ``encrypted_content`` is OpenAI's alone and is dropped). ``instructions`` comes
  first, as a system message; a previous response's instructions do not carry
  over (OpenAI's rule). ``previous_response_id`` is resolved by the caller into
  ``history`` items before conversion.
- Function tools are served by every provider; a ``namespace`` tool's functions
  are flattened to ``<namespace>__<name>`` inside and rendered back with their
  ``namespace``. Hosted tools that only OpenAI runs (web_search, file_search,
  computer use, code_interpreter, image_generation, mcp, local_shell, custom…)
  get a 400 naming the tool, on every upstream: Warden speaks one internal format
  to providers, and a hosted tool has no meaning in it (see README, "Use with
  Codex / the Agents SDK").
- ``text.format`` is the response format, ``reasoning.effort`` the effort (as on
  Chat Completions), ``max_output_tokens`` the token cap. ``metadata`` is checked
  (16 keys of <= 64 characters, values <= 512) and echoed. ``background``,
  ``conversation`` and ``prompt`` are refused by name; other unknown fields are
  ignored, as on Chat Completions.
- ``usage`` carries the Warden extension ``"warden": {"cost_usd": …}``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, StrictBool, Tag, TypeAdapter

from warden.errors import InvalidRequest
from warden.formats.common import RESPONSES_TOOL_CHOICE, cost_text, image_part, invalid, served_model, when
from warden.formats.openai import EFFORTS, ToolName
from warden.gateway.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    FinishReason,
    Message,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from warden.gateway.metering import CallInfo

_INT64 = 2**63 - 1
HOSTED_TOOLS = frozenset({"web_search", "web_search_preview", "web_search_preview_2025_03_11",
                          "file_search", "computer", "computer_use", "computer_use_preview",
                          "code_interpreter", "image_generation", "mcp", "local_shell", "shell",
                          "apply_patch", "custom", "tool_search"})

# --- request models (shape only; meaning is checked while converting) --------


class _ResponsesPart(BaseModel):
    type: str
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class MessageItem(BaseModel):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[_ResponsesPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(BaseModel):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = "{}"
    namespace: str | None = None
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(BaseModel):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[_ResponsesPart]
    id: str | None = None
    status: str | None = None


class ReasoningItem(BaseModel):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[_ResponsesPart] = Field(default_factory=list)
    content: list[_ResponsesPart] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class OtherItem(BaseModel):
    type: str  # any other item type: refused by name


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "")
    return kind if kind in ("message", "function_call", "function_call_output", "reasoning") else "other"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")] | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]
ITEMS = TypeAdapter(list[InputItem])  # stored items, read back


class _ResponsesTool(BaseModel):
    type: str
    name: ToolName | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    tools: list[_ResponsesTool] | None = None  # a namespace's functions


class _Format(BaseModel):
    model_config = when("type", "json_schema", {"required": ["schema"], "properties": {"schema": {"type": "object"}}})
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class _Text(BaseModel):
    format: _Format | None = None
    verbosity: str | None = None


class _Reasoning(BaseModel):
    effort: str | None = Field(default=None, json_schema_extra={"enum": [*EFFORTS, None]})
    summary: str | None = None


class ResponsesBody(BaseModel):
    model: str
    input: Annotated[Annotated[str, Tag("str")] | Annotated[list[InputItem], Tag("list")],
                     Discriminator(lambda v: "str" if isinstance(v, str) else "list")] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[_ResponsesTool] | None = None
    tool_choice: str | dict[str, Any] | None = Field(default=None, json_schema_extra=RESPONSES_TOOL_CHOICE)
    parallel_tool_calls: bool | None = None
    text: _Text | None = None
    reasoning: _Reasoning | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=_INT64)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = (
        Field(default=None, max_length=16))
    store: StrictBool = True
    previous_response_id: str | None = None
    stream: StrictBool = False
    user: str | None = None
    safety_identifier: str | None = None
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    warden: dict[str, Any] | None = None


# --- wire -> internal ----------------------------------------------------------


@dataclass(slots=True)
class ResponsesCall:
    """A converted request: the internal request, and what rendering it back needs."""

    chat: ChatRequest
    body: ResponsesBody
    input_items: list[dict[str, Any]]  # this request's input, as items with ids (stored)
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    created_at: int = field(default_factory=lambda: int(time.time()))


def _parts(content: str | list[_ResponsesPart], path: str) -> list[ContentPart]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[ContentPart] = []
    for j, part in enumerate(content):
        where = f"{path}.{j}"
        if part.type in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            if part.text is None:
                raise invalid(f"{where}.text", "field required for this part type")
            parts.append(TextPart(part.text))
        elif part.type == "refusal" and part.refusal is not None:
            parts.append(TextPart(part.refusal))
        elif part.type == "input_image" and part.image_url is not None:
            parts.append(image_part(part.image_url, part.detail, path=f"{where}.image_url"))
        elif part.type == "input_image":
            raise invalid(f"{where}.image_url", "send the image as image_url (a URL or data: URL); "
                          "file ids are OpenAI's own")
        else:
            raise invalid(f"{where}.type", f"content part type {part.type!r} is not supported")
    return parts


def _flat(namespace: str | None, name: str) -> str:
    return f"{namespace}__{name}" if namespace else name

def _messages(items: list[Any], path: str, out: list[Message], names: dict[str, str]) -> None:
    """Append the internal messages of ``items`` to ``out``; ``names``: call id -> tool name."""
    reasoning: list[str] = []  # reasoning text waiting for its assistant turn

    def assistant(fresh: bool) -> Message:
        if fresh or not out or out[-1].role != "assistant":
            out.append(Message(role="assistant"))
        msg = out[-1]
        if reasoning:
            msg.reasoning = "".join(filter(None, [msg.reasoning, *reasoning]))
            reasoning.clear()
        return msg

    for i, item in enumerate(items):
        where = f"{path}.{i}"
        if isinstance(item, MessageItem):
            parts = _parts(item.content, f"{where}.content")
            if item.role == "assistant":
                assistant(fresh=bool(out and out[-1].role == "assistant" and out[-1].tool_calls)).content += parts
            else:
                out.append(Message(role="system" if item.role in ("system", "developer") else "user",
                                   content=parts))
        elif isinstance(item, FunctionCallItem):
            name = _flat(item.namespace, item.name)
            names[item.call_id] = name
            assistant(fresh=False).tool_calls.append(ToolCall(item.call_id, name, item.arguments or "{}"))
        elif isinstance(item, FunctionCallOutputItem):
            out.append(Message(role="tool", content=_parts(item.output, f"{where}.output"),
                               tool_call_id=item.call_id, name=names.get(item.call_id)))
        elif isinstance(item, ReasoningItem):
            reasoning.extend(p.text or "" for p in (item.content or item.summary))
        else:
            raise InvalidRequest(f"{where}.type: input item type {item.type!r} is not supported "
                                 "(Warden serves messages, function calls and their outputs, reasoning)",
                                 code="unsupported_input_item", param=f"{where}.type")


def _tools(body: ResponsesBody) -> tuple[list[ToolSpec], dict[str, tuple[str, str]]]:
    specs: list[ToolSpec] = []
    namespaced: dict[str, tuple[str, str]] = {}

    def function(tool: _ResponsesTool, path: str, namespace: str | None = None) -> None:
        if tool.name is None:
            raise invalid(f"{path}.name", "a function tool needs a name")
        name = _flat(namespace, tool.name)
        if len(name) > 64:
            raise invalid(f"{path}.name", "namespace and name together must be at most 62 characters")
        if namespace:
            namespaced[name] = (namespace, tool.name)
        specs.append(ToolSpec(name, tool.description or "",
                              tool.parameters or {"type": "object", "properties": {}}))

    for i, tool in enumerate(body.tools or []):
        path = f"tools.{i}"
        if tool.type == "function":
            function(tool, path)
        elif tool.type == "namespace":
            for j, inner in enumerate(tool.tools or []):
                if inner.type != "function":
                    raise hosted_tool(inner.type, f"{path}.tools.{j}.type")
                function(inner, f"{path}.tools.{j}", tool.name or "")
        else:
            raise hosted_tool(tool.type, f"{path}.type")
    return specs, namespaced


def hosted_tool(kind: str, path: str) -> InvalidRequest:
    what = "a hosted tool that only OpenAI runs" if kind in HOSTED_TOOLS else "not a tool type Warden serves"
    return InvalidRequest(f"{path}: tool {kind!r} is {what}; Warden serves function tools "
                          "(declare it as a function tool and run it in your client)",
                          code="unsupported_tool", param=path)


def _tool_choice(raw: str | dict[str, Any] | None, namespaced: dict[str, tuple[str, str]]) -> ToolChoice | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise invalid("tool_choice", "must be 'auto', 'none', 'required' or a named function")
        return ToolChoice(raw)  # type: ignore[arg-type]
    kind = raw.get("type")
    if kind != "function":
        raise hosted_tool(str(kind), "tool_choice.type")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("tool_choice.name", "a function tool choice needs the function name")
    namespace = raw.get("namespace")
    return ToolChoice("tool", _flat(namespace if isinstance(namespace, str) else None, name))


def _response_format(text: _Text | None) -> ResponseFormat | None:
    fmt = text.format if text else None
    if fmt is None:
        return None
    if fmt.type != "json_schema":
        return ResponseFormat(fmt.type)
    if fmt.schema_ is None:
        raise invalid("text.format.schema", "json_schema needs a schema")
    return ResponseFormat("json_schema", schema=fmt.schema_, name=fmt.name, strict=fmt.strict)


def normalized_items(body: ResponsesBody) -> list[dict[str, Any]]:
    """This request's input as items with ids, as ``input_items`` lists them."""
    if isinstance(body.input, str):
        return [{"type": "message", "id": f"msg_{uuid.uuid4().hex}", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": body.input}]}]
    out = []
    for item in body.input:
        raw = item.model_dump(exclude_none=True, by_alias=True)
        raw.setdefault("id", f"{_ID_PREFIX.get(raw['type'], 'item')}_{uuid.uuid4().hex}")
        out.append(raw)
    return out


_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def to_responses_call(body: ResponsesBody, history: list[dict[str, Any]] | None = None) -> ResponsesCall:
    """Convert a parsed body (and the items of the response it continues) into the internal request."""
    for name in ("background", "conversation", "prompt"):
        if getattr(body, name):
            raise InvalidRequest(f"{name}: not supported by Warden", code="unsupported_parameter", param=name)
    effort = body.reasoning.effort if body.reasoning else None
    if effort is not None and effort not in EFFORTS:
        raise invalid("reasoning.effort", f"must be one of {', '.join(EFFORTS)}")
    tools, namespaced = _tools(body)
    messages: list[Message] = []
    if body.instructions:
        messages.append(Message.text("system", body.instructions))
    names: dict[str, str] = {}
    if history:
        _messages(ITEMS.validate_python(history), "previous_response", messages, names)
    items = [MessageItem(role="user", content=body.input)] if isinstance(body.input, str) else body.input
    _messages(items, "input", messages, names)
    if not any(m.role != "system" for m in messages):
        raise InvalidRequest("input: nothing to answer (no input item, no stored conversation)", code="empty_input", param="input")
    chat = ChatRequest(
        model=body.model, messages=messages, tools=tools,
        tool_choice=_tool_choice(body.tool_choice, namespaced),
        parallel_tool_calls=body.parallel_tool_calls, response_format=_response_format(body.text),
        temperature=body.temperature, top_p=body.top_p, max_tokens=body.max_output_tokens,
        reasoning_effort=EFFORTS.get(effort or "none"),  # type: ignore[arg-type]
        user=body.user or body.safety_identifier, stream=body.stream)
    return ResponsesCall(chat=chat, body=body, input_items=normalized_items(body), namespaced=namespaced)


# --- internal -> wire ----------------------------------------------------------

# Why a response stopped short ("length" and "content_filter"); every other reason completes.
INCOMPLETE: dict[FinishReason, str] = {"length": "max_output_tokens", "content_filter": "content_filter"}


def render_usage(usage: Usage, info: CallInfo) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens,
                                 "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
        "warden": {"cost_usd": cost_text(info.cost_usd)},
    }


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def function_call_item(call: ResponsesCall, item_id: str, call_id: str, name: str, arguments: str,
                       status: str = "completed") -> dict[str, Any]:
    item = {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}
    if name in call.namespaced:
        item["namespace"], item["name"] = call.namespaced[name]
    return item


def new_item_id(kind: str) -> str:
    return f"{_ID_PREFIX[kind]}_{uuid.uuid4().hex}"

def response_object(call: ResponsesCall, *, status: str, output: list[dict[str, Any]],
                    info: CallInfo | None = None, usage: Usage | None = None,
                    finish: FinishReason | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``response`` object: the request's settings echoed, the output so far, and usage."""
    body = call.body
    reason = INCOMPLETE.get(finish) if finish else None  # type: ignore[call-overload]
    if status == "completed" and reason:
        status = "incomplete"
    fmt = body.text.format.model_dump(exclude_none=True, by_alias=True) if body.text and body.text.format else {
        "type": "text"}
    return {
        "id": call.id, "object": "response", "created_at": call.created_at, "status": status,
        "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
        "background": False, "error": error,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {}, "model": served_model(info) if info else body.model,
        "output": output, "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": body.reasoning.effort if body.reasoning else None,
                      "summary": body.reasoning.summary if body.reasoning else None},
        "store": body.store, "temperature": body.temperature, "text": {"format": fmt},
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "tools": [{**t.model_dump(exclude_none=True), **({"description": t.description or ""}
                   if t.type == "namespace" else {})} for t in body.tools or []],
        "top_p": body.top_p, "truncation": "disabled",
        "usage": render_usage(usage, info) if usage is not None and info is not None else None,
        "user": body.user,
    }


def render_response(call: ResponsesCall, resp: ChatResponse, info: CallInfo) -> dict[str, Any]:
    """A finished ``response`` object for a finished internal response."""
    output: list[dict[str, Any]] = []
    if resp.reasoning:
        output.append(reasoning_item(new_item_id("reasoning"), resp.reasoning))
    if resp.text:
        output.append(message_item(new_item_id("message"), resp.text))
    output.extend(function_call_item(call, new_item_id("function_call"), c.id, c.name, c.arguments)
                  for c in resp.tool_calls)
    return response_object(call, status="completed", output=output, info=info, usage=resp.usage,
                           finish=resp.finish_reason)

"""Anthropic Messages wire format.

Requests go to ``{base}/messages`` (default base ``https://api.anthropic.com/v1``)
with ``x-api-key`` and ``anthropic-version: 2023-06-01``.

Mapping notes:
- System messages are lifted into ``system``; tool results become
  ``tool_result`` blocks in a user turn (consecutive ones merged, as the API
  requires all results of one assistant turn in the next user turn).
- ``max_tokens`` is required by the API: 4096 when the request has none.
- ``reasoning_effort`` becomes a ``thinking`` budget (temperature/top_p are then
  dropped: the API refuses them with thinking on).
- JSON mode: Messages has no native JSON mode. Without user tools, a JSON
  request becomes a *forced tool* named ``json_response`` whose input schema is
  the requested schema; the tool's input is returned as the reply text (finish
  ``stop``), so callers see plain JSON text. With user tools present (a forced
  tool would hide them) a system instruction asks for JSON instead.
- Usage: ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``
  is our input; the cache parts are recorded separately. Output tokens include
  thinking (Anthropic does not report thinking tokens separately).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import orjson

from warden.gateway.errors import (
    AuthFailed,
    BadRequest,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
    Timeout,
)
from warden.gateway.providers import http
from warden.gateway.providers.base import ProviderAdapter, split_data_url
from warden.gateway.types import (
    ChatRequest,
    ChatResponse,
    Endpoint,
    FinishEvent,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com/v1"
DEFAULT_MAX_TOKENS = 4096
JSON_TOOL = "json_response"
_JSON_INSTRUCTION = "Reply with a single valid JSON value only: no prose, no code fences."
# The format's vocabulary, defined once: read here, and rendered by its inverse on
# the client side (the Anthropic Messages edge); the simulator takes ERROR_TYPES too.
THINKING_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}

FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Each error.type: the HTTP status Anthropic sends it with, and what it means to us.
ERROR_TYPES: dict[str, tuple[int, type[ProviderError]]] = {
    "invalid_request_error": (400, BadRequest),
    "authentication_error": (401, AuthFailed),
    "billing_error": (402, AuthFailed),
    "permission_error": (403, AuthFailed),
    "not_found_error": (404, BadRequest),
    "request_too_large": (413, ContextTooLong),
    "rate_limit_error": (429, RateLimited),
    "api_error": (500, Overloaded),
    "timeout_error": (504, Timeout),
    "overloaded_error": (529, Overloaded),
}


def classify(provider: str, status: int, headers: Mapping[str, str], raw: bytes) -> ProviderError:
    body = http.error_body(raw)
    error = body.get("error") if isinstance(body, dict) else None
    return _classify_error(provider, status, error, http.parse_retry_after(headers))


def _classify_error(
    provider: str, status: int | None, error: Any, retry_after: float | None
) -> ProviderError:
    cls: type[ProviderError] | None = None
    message = ""
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        known = ERROR_TYPES.get(str(error.get("type")))
        cls = known[1] if known else None
    if status == 529:  # Anthropic's "overloaded", whatever the body says
        cls = Overloaded
    if cls is None:
        cls = http.class_for_status(status) if status else Overloaded
    return http.build_error(cls, provider, status, message, retry_after)


# --- request ------------------------------------------------------------------


def _image_block(part: ImagePart) -> dict[str, Any]:
    inline = split_data_url(part.url) if part.url else None
    if inline is not None:
        media_type, data = inline
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif part.url:
        source = {"type": "url", "url": part.url}
    else:
        source = {
            "type": "base64",
            "media_type": part.media_type or "image/png",
            "data": part.data or "",
        }
    return {"type": "image", "source": source}


def _blocks(msg: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in msg.content:
        if isinstance(part, ImagePart):
            blocks.append(_image_block(part))
        elif part.text:
            block: dict[str, Any] = {"type": "text", "text": part.text}
            if part.cache_control is not None:
                block["cache_control"] = part.cache_control
            blocks.append(block)
    return blocks


def _system(req: ChatRequest) -> str | list[dict[str, Any]]:
    """The system prompt: a string, or text blocks when one carries a cache marker."""
    parts = [p for m in req.messages if m.role == "system" for p in m.content
             if isinstance(p, TextPart) and p.text]
    if not any(p.cache_control is not None for p in parts):
        return req.system_text
    return [{"type": "text", "text": p.text,
             **({"cache_control": p.cache_control} if p.cache_control is not None else {})}
            for p in parts]


def _tool_input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    # tool_use.input must be an object.
    return value if isinstance(value, dict) else {}


def _turn(msg: Message) -> tuple[str, list[dict[str, Any]]]:
    if msg.role == "tool":
        block = {
            "type": "tool_result",
            "tool_use_id": msg.tool_call_id,
            "content": msg.text_content,
        }
        if msg.cache_control is not None:
            block["cache_control"] = msg.cache_control
        return "user", [block]
    blocks = _blocks(msg)
    if msg.role == "assistant":
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
            for c in msg.tool_calls
        ]
    if msg.cache_control is not None and blocks:
        blocks[-1]["cache_control"] = msg.cache_control
    return msg.role, blocks


def _messages(req: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg.role == "system":
            continue
        role, blocks = _turn(msg)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)  # tool results + a following user turn share one turn
        else:
            out.append({"role": role, "content": blocks})
    return out


def _json_tool_mode(req: ChatRequest) -> bool:
    rf = req.response_format
    return rf is not None and rf.type != "text" and not req.tools


def build_body(ep: Endpoint, req: ChatRequest, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": ep.model,
        "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": _messages(req),
    }
    system = _system(req)
    rf = req.response_format
    if rf is not None and rf.type != "text" and req.tools:
        if isinstance(system, list):
            system = [*system, {"type": "text", "text": _JSON_INSTRUCTION}]
        else:
            system = f"{system}\n\n{_JSON_INSTRUCTION}" if system else _JSON_INSTRUCTION
    if system:
        body["system"] = system
    if stream:
        body["stream"] = True
    tools = [
        {"name": t.name, "description": t.description, "input_schema": t.parameters,
         **({"cache_control": t.cache_control} if t.cache_control is not None else {})}
        for t in req.tools
    ]
    tool_choice: dict[str, Any] | None = None
    if _json_tool_mode(req):
        assert rf is not None
        schema = rf.schema if rf.type == "json_schema" and rf.schema else {"type": "object"}
        tools = [
            {"name": JSON_TOOL, "description": "Return the reply as JSON.", "input_schema": schema}
        ]
        tool_choice = {"type": "tool", "name": JSON_TOOL}
    elif req.tool_choice is not None:
        mode = req.tool_choice.mode
        tool_choice = {"type": {"required": "any"}.get(mode, mode)}
        if mode == "tool":
            tool_choice["name"] = req.tool_choice.name
    if req.parallel_tool_calls is False and tools:
        tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if tools:
        body["tools"] = tools
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if req.stop:
        body["stop_sequences"] = req.stop
    if req.user:
        body["metadata"] = {"user_id": req.user}
    budget = THINKING_BUDGET.get(req.reasoning_effort or "")
    if budget is not None and not _json_tool_mode(
        req
    ):  # forced tool use and thinking exclude each other
        if req.max_tokens is None:
            body["max_tokens"] = budget + DEFAULT_MAX_TOKENS
        budget = min(budget, body["max_tokens"] - 1)
        if budget >= 1024:  # the API's minimum budget
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if "thinking" not in body:
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
    if req.native is not None and req.native.wire == "anthropic":
        body.update(req.native.body)  # an Anthropic client's own fields, verbatim
    return body


# --- response -----------------------------------------------------------------


def parse_usage(u: Mapping[str, Any]) -> Usage:
    cache_write = int(u.get("cache_creation_input_tokens") or 0)
    cache_read = int(u.get("cache_read_input_tokens") or 0)
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0) + cache_write + cache_read,
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def _finish(reason: Any, json_mode: bool) -> FinishReason:
    finish = FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "stop" if json_mode and finish == "tool_calls" else finish


def parse_response(ep: Endpoint, data: Any, json_mode: bool) -> ChatResponse:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for block in data["content"]:
        kind = block["type"]
        if kind == "text":
            texts.append(block["text"])
        elif kind == "thinking":
            thinking.append(block["thinking"])
        elif kind == "tool_use" and json_mode and block["name"] == JSON_TOOL:
            texts.append(orjson.dumps(block["input"]).decode())
        elif kind == "tool_use":
            calls.append(
                ToolCall(block["id"], block["name"], orjson.dumps(block["input"]).decode())
            )
    return ChatResponse(
        id=str(data.get("id") or ""),
        model=str(data.get("model") or ep.model),
        text="".join(texts) if texts else None,
        tool_calls=calls,
        reasoning="".join(thinking) if thinking else None,
        finish_reason=_finish(data.get("stop_reason"), json_mode),
        usage=parse_usage(data.get("usage") or {}),
    )


class _StreamState:
    """What a Messages stream has told us so far."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.stopped = False
        self.tool_index: dict[int, int] = {}  # content block index -> our tool-call index
        self.json_blocks: set[int] = set()  # blocks of the forced JSON tool

    def handle(self, provider: str, kind: str, event: dict[str, Any]) -> list[StreamEvent]:
        if kind == "message_start":
            self.usage.update(event["message"].get("usage") or {})
            # The prompt's figures now, so a client's message_start carries them too.
            return [UsageEvent(parse_usage(self.usage))] if self.usage else []
        elif kind == "content_block_start":
            return self._block_start(event["index"], event["content_block"])
        elif kind == "content_block_delta":
            return self._delta(event["index"], event["delta"])
        elif kind == "message_delta":
            self.stop_reason = event["delta"].get("stop_reason") or self.stop_reason
            # message_delta usage is cumulative: it overrides what message_start said.
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            raise _classify_error(provider, None, event.get("error"), None)
        return []  # ping, content_block_stop and unknown future events

    def _block_start(self, index: int, block: dict[str, Any]) -> list[StreamEvent]:
        kind = block["type"]
        if kind == "tool_use" and self.json_mode and block["name"] == JSON_TOOL:
            self.json_blocks.add(index)
        elif kind == "tool_use":
            ours = self.tool_index[index] = len(self.tool_index)
            return [ToolCallDelta(index=ours, id=block["id"], name=block["name"])]
        elif kind == "text" and block.get("text"):
            return [TextDelta(block["text"])]
        elif kind == "thinking" and block.get("thinking"):
            return [ReasoningDelta(block["thinking"])]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        kind = delta["type"]
        if kind == "text_delta":
            return [TextDelta(delta["text"])]
        if kind == "thinking_delta":
            return [ReasoningDelta(delta["thinking"])]
        if kind == "input_json_delta" and index in self.json_blocks:
            return [TextDelta(delta["partial_json"])] if delta["partial_json"] else []
        if kind == "input_json_delta" and delta["partial_json"]:
            return [ToolCallDelta(index=self.tool_index[index], arguments=delta["partial_json"])]
        return []  # signature_delta, citations_delta


class AnthropicAdapter(ProviderAdapter):
    wire: ClassVar[str] = "anthropic"

    def _url(self, ep: Endpoint, path: str) -> str:
        return http.join_url(ep.base_url or DEFAULT_BASE_URL, path)

    def _headers(self, ep: Endpoint, req: ChatRequest | None = None) -> dict[str, str]:
        # An Anthropic client's anthropic-version / anthropic-beta go on as it sent them.
        native = req.native.headers if req is not None and req.native is not None \
            and req.native.wire == "anthropic" else {}
        return {"anthropic-version": API_VERSION, **native, **http.auth_headers(ep)}

    async def complete(self, ep: Endpoint, req: ChatRequest) -> ChatResponse:
        body = orjson.dumps(build_body(ep, req, stream=False))
        data, raw = await http.request_json(
            ep, "POST", self._url(ep, "/messages"), self._headers(ep, req), classify, body
        )
        with http.expect_shape(ep.provider, raw):
            return parse_response(ep, data, _json_tool_mode(req))

    async def stream(self, ep: Endpoint, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        body = orjson.dumps(build_body(ep, req, stream=True))
        headers = {**self._headers(ep, req), "accept": "text/event-stream"}
        events = http.stream_sse(ep, self._url(ep, "/messages"), headers, classify, body)
        state = _StreamState(_json_tool_mode(req))
        try:
            async for event in events:
                data = http.loads(ep.provider, event.data)
                with http.expect_shape(ep.provider, event.data):
                    for out in state.handle(ep.provider, data["type"], data):
                        yield out
                if state.stopped:
                    break
        finally:
            await events.aclose()
        if not state.stopped and state.stop_reason is None:
            raise http.malformed(ep.provider, b"", "stream ended before message_stop")
        if state.usage:
            yield UsageEvent(parse_usage(state.usage))
        yield FinishEvent(_finish(state.stop_reason, state.json_mode))

    async def count_tokens(self, ep: Endpoint, req: ChatRequest) -> int:
        """The exact input tokens of ``req``, from ``POST /messages/count_tokens``."""
        body = build_body(ep, req, stream=False)
        body.pop("max_tokens", None)  # count_tokens takes no max_tokens
        data, raw = await http.request_json(
            ep, "POST", self._url(ep, "/messages/count_tokens"), self._headers(ep, req), classify,
            orjson.dumps(body))
        with http.expect_shape(ep.provider, raw):
            return int(data["input_tokens"])

    async def list_models(self, ep: Endpoint) -> list[str]:
        data, raw = await http.request_json(
            ep, "GET", self._url(ep, "/models"), self._headers(ep), classify
        )
        with http.expect_shape(ep.provider, raw):
            return [str(m["id"]) for m in data["data"]]

"""OpenAI Chat Completions wire format (OpenAI and every compatible server).

Requests go to ``{base}/chat/completions`` (embeddings: ``{base}/embeddings``, always
asked for as floats); keys are listed via ``{base}/models``.
Streams ask for ``stream_options.include_usage`` so usage is exact; tool-call
pieces are passed on by index as they come (the first piece of a call carries its
id and name); ``reasoning_content`` (DeepSeek, vLLM) and ``reasoning``
(OpenRouter, Groq) become reasoning deltas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import orjson

from warden.gateway.errors import (
    AuthFailed,
    ContentFiltered,
    ContextTooLong,
    Overloaded,
    ProviderError,
    RateLimited,
)
from warden.gateway.providers import http
from warden.gateway.providers.base import ProviderAdapter, data_url, vector
from warden.gateway.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Endpoint,
    FinishEvent,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

# finish_reason values; the client side (the Chat Completions edge) renders by its inverse.
FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}

# error.code -> class; anything else falls back to the status code.
_ERROR_CODES: dict[str, type[ProviderError]] = {
    "context_length_exceeded": ContextTooLong,
    "string_above_max_length": ContextTooLong,
    "content_filter": ContentFiltered,
    "content_policy_violation": ContentFiltered,
    "invalid_api_key": AuthFailed,
    "insufficient_quota": AuthFailed,  # billing: the key is unusable, another may work
    "rate_limit_exceeded": RateLimited,
    "server_error": Overloaded,
    "overloaded": Overloaded,
}
# error.type is mostly generic ("invalid_request_error" even on a 401): only these say more.
_ERROR_TYPES: dict[str, type[ProviderError]] = {"insufficient_quota": AuthFailed}


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
        cls = _ERROR_CODES.get(str(error.get("code"))) or _ERROR_TYPES.get(str(error.get("type")))
    if cls is None:
        cls = http.class_for_status(status) if status else Overloaded
    return http.build_error(cls, provider, status, message, retry_after)


# --- request ------------------------------------------------------------------


def _content(msg: Message) -> str | list[dict[str, Any]]:
    if not msg.has_images:
        return msg.text_content
    parts: list[dict[str, Any]] = []
    for part in msg.content:
        if isinstance(part, ImagePart):
            url = part.url or data_url(part.media_type, part.data or "")
            image: dict[str, Any] = {"url": url}
            if part.detail:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": part.text})
    return parts


def _message(msg: Message) -> dict[str, Any]:
    if msg.role == "tool":
        return {"role": "tool", "tool_call_id": msg.tool_call_id, "content": msg.text_content}
    out: dict[str, Any] = {"role": msg.role, "content": _content(msg)}
    if msg.role == "assistant" and msg.tool_calls:
        out["content"] = out["content"] or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    return out


def build_body(ep: Endpoint, req: ChatRequest, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": ep.model, "messages": [_message(m) for m in req.messages]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        if req.tool_choice.mode == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name}}
        else:
            body["tool_choice"] = req.tool_choice.mode
    if req.parallel_tool_calls is not None and req.tools:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    rf = req.response_format
    if rf is not None and rf.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif rf is not None and rf.type == "json_schema":
        schema: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {}}
        if rf.strict is not None:
            schema["strict"] = rf.strict
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    if req.max_tokens is not None:
        # OpenAI's reasoning models refuse max_tokens; compatible servers mostly know only it.
        key = "max_completion_tokens" if ep.provider == "openai" else "max_tokens"
        body[key] = req.max_tokens
    optional = {
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "reasoning_effort": req.reasoning_effort,
        "user": req.user,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if req.stop:
        body["stop"] = req.stop
    return body


# --- response -----------------------------------------------------------------


def parse_usage(u: Any) -> Usage:
    prompt_details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    cache_read = prompt_details.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0
    return Usage(
        input_tokens=int(u.get("prompt_tokens") or 0),
        output_tokens=int(u.get("completion_tokens") or 0),
        cache_read_tokens=int(cache_read),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def _finish(reason: Any, has_tool_calls: bool) -> FinishReason:
    finish = FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    # Some compatible servers say "stop" after emitting tool calls.
    return "tool_calls" if has_tool_calls and finish == "stop" else finish


def parse_response(ep: Endpoint, data: Any) -> ChatResponse:
    choice = data["choices"][0]
    message = choice["message"]
    tool_calls = [
        ToolCall(
            id=c["id"], name=c["function"]["name"], arguments=c["function"].get("arguments") or "{}"
        )
        for c in message.get("tool_calls") or []
    ]
    return ChatResponse(
        id=str(data.get("id") or ""),
        model=str(data.get("model") or ep.model),
        text=message.get("content"),
        tool_calls=tool_calls,
        reasoning=message.get("reasoning_content") or message.get("reasoning"),
        finish_reason=_finish(choice.get("finish_reason"), bool(tool_calls)),
        usage=parse_usage(data["usage"]) if data.get("usage") else Usage(),
    )


class OpenAIAdapter(ProviderAdapter):
    wire: ClassVar[str] = "openai"

    def _url(self, ep: Endpoint, path: str) -> str:
        return http.join_url(ep.base_url, path)

    async def complete(self, ep: Endpoint, req: ChatRequest) -> ChatResponse:
        body = orjson.dumps(build_body(ep, req, stream=False))
        data, raw = await http.request_json(
            ep, "POST", self._url(ep, "/chat/completions"), http.auth_headers(ep), classify, body
        )
        with http.expect_shape(ep.provider, raw):
            return parse_response(ep, data)

    async def stream(self, ep: Endpoint, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        body = orjson.dumps(build_body(ep, req, stream=True))
        headers = {**http.auth_headers(ep), "accept": "text/event-stream"}
        events = http.stream_sse(ep, self._url(ep, "/chat/completions"), headers, classify, body)
        usage: Usage | None = None
        finish: str | None = None
        done = False
        started_calls: set[int] = set()
        try:
            async for event in events:
                if event.data == "[DONE]":
                    done = True
                    break
                chunk = http.loads(ep.provider, event.data)
                with http.expect_shape(ep.provider, event.data):
                    if chunk.get("error") is not None:
                        raise _classify_error(ep.provider, None, chunk["error"], None)
                    if chunk.get("usage"):
                        usage = parse_usage(chunk["usage"])
                    for choice in chunk.get("choices") or ():
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                        for out in _deltas(choice.get("delta") or {}, started_calls):
                            yield out
        finally:
            await events.aclose()
        if not done and finish is None:
            raise http.malformed(ep.provider, b"", "stream ended before it finished")
        if usage is not None:
            yield UsageEvent(usage)
        yield FinishEvent(_finish(finish, bool(started_calls)))

    async def list_models(self, ep: Endpoint) -> list[str]:
        data, raw = await http.request_json(
            ep, "GET", self._url(ep, "/models"), http.auth_headers(ep), classify
        )
        with http.expect_shape(ep.provider, raw):
            return [str(m["id"]) for m in data["data"]]

    async def embed(self, ep: Endpoint, req: EmbeddingRequest) -> EmbeddingResponse:
        body: dict[str, Any] = {"model": ep.model, "input": req.inputs, "encoding_format": "float"}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if req.user is not None:
            body["user"] = req.user
        data, raw = await http.request_json(ep, "POST", self._url(ep, "/embeddings"),
                                            http.auth_headers(ep), classify, orjson.dumps(body))
        with http.expect_shape(ep.provider, raw):
            items = sorted(data["data"], key=lambda item: int(item.get("index", 0)))
            if len(items) != len(req.inputs):
                raise ValueError("one embedding per input")
            usage = data.get("usage") or {}
            return EmbeddingResponse(str(data.get("model") or ep.model),
                                     [vector(item["embedding"]) for item in items],
                                     Usage(input_tokens=int(usage.get("prompt_tokens") or 0)))


def _deltas(delta: dict[str, Any], started_calls: set[int]) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if reasoning:
        out.append(ReasoningDelta(reasoning))
    if delta.get("content"):
        out.append(TextDelta(delta["content"]))
    for position, piece in enumerate(delta.get("tool_calls") or ()):
        index = int(piece.get("index", position))
        fn = piece.get("function") or {}
        first = index not in started_calls
        started_calls.add(index)
        out.append(
            ToolCallDelta(
                index=index,
                id=piece.get("id") if first else None,
                name=fn.get("name") if first else None,
                arguments=fn.get("arguments") or "",
            )
        )
    return out

"""Google Gemini ``generateContent`` wire format.

Requests go to ``{base}/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``; keys are listed via ``{base}/models``.
Embeddings: ``:embedContent`` for one input, ``:batchEmbedContents`` for several;
Gemini reports no token count for them, so their usage is Warden's estimate
(``complexity.estimate_input_tokens``), and token-id inputs are refused (400).

Mapping notes:
- Roles: ``assistant`` -> ``model``; tool results -> ``user`` turns holding
  ``functionResponse`` parts. Gemini wants the tool *name* on a response: taken
  from ``Message.name``, else looked up by call id in earlier assistant turns.
- System messages -> ``systemInstruction``. Images -> ``inlineData`` (base64 or
  data URLs) or ``fileData`` (other URLs).
- Schemas are sent as JSON Schema through ``parametersJsonSchema`` (tools) and
  ``responseJsonSchema`` (JSON mode), which take JSON Schema as-is; the older
  ``parameters`` / ``responseSchema`` fields accept only an OpenAPI subset and
  would need a lossy conversion.
- ``reasoning_effort`` -> ``thinkingConfig.thinkingBudget`` with thoughts
  included, which come back as parts flagged ``thought``.
- Usage: ``promptTokenCount`` (already includes ``cachedContentTokenCount``) is
  our input; output is ``candidatesTokenCount + thoughtsTokenCount``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import orjson

from warden.gateway.errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    Overloaded,
    ProviderError,
    RateLimited,
    Timeout,
)
from warden.gateway.providers import http
from warden.gateway.complexity import estimate_input_tokens
from warden.gateway.providers.base import ProviderAdapter, split_data_url, vector
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

_THINKING_BUDGET = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
}

# Each error.status (google.rpc code): the HTTP status it comes with, and what it
# means to us. The upstream simulator takes its statuses from here too.
ERROR_STATUS: dict[str, tuple[int, type[ProviderError]]] = {
    "INVALID_ARGUMENT": (400, BadRequest),
    "FAILED_PRECONDITION": (400, BadRequest),
    "OUT_OF_RANGE": (400, BadRequest),
    "UNAUTHENTICATED": (401, AuthFailed),
    "PERMISSION_DENIED": (403, AuthFailed),
    "NOT_FOUND": (404, BadRequest),
    "RESOURCE_EXHAUSTED": (429, RateLimited),
    "INTERNAL": (500, Overloaded),
    "UNAVAILABLE": (503, Overloaded),
    "DEADLINE_EXCEEDED": (504, Timeout),
}
# google.rpc.ErrorInfo reasons that say more than the status (a bad key is INVALID_ARGUMENT).
_ERROR_REASONS: dict[str, type[ProviderError]] = {
    "API_KEY_INVALID": AuthFailed,
    "API_KEY_SERVICE_BLOCKED": AuthFailed,
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def classify(provider: str, status: int, headers: Mapping[str, str], raw: bytes) -> ProviderError:
    body = http.error_body(raw)
    if isinstance(body, list) and body:  # the non-SSE stream wraps errors in an array
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return _classify_error(provider, status, error, http.parse_retry_after(headers))


def _classify_error(
    provider: str, status: int | None, error: Any, retry_after: float | None
) -> ProviderError:
    cls: type[ProviderError] | None = None
    message = ""
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        known = ERROR_STATUS.get(str(error.get("status")))
        cls = known[1] if known else None
        for detail in error.get("details") or ():
            if not isinstance(detail, dict):
                continue
            cls = _ERROR_REASONS.get(str(detail.get("reason")), cls)
            delay = _DURATION.match(str(detail.get("retryDelay", "")))
            if delay and retry_after is None:
                retry_after = float(delay.group(1))
        status = status or (error.get("code") if isinstance(error.get("code"), int) else None)
    if cls is None:
        cls = http.class_for_status(status) if status else Overloaded
    return http.build_error(cls, provider, status, message, retry_after)


# --- request ------------------------------------------------------------------


def _image_part(part: ImagePart) -> dict[str, Any]:
    inline = split_data_url(part.url) if part.url else None
    if inline is not None:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    if part.url:
        return {"fileData": {"mimeType": part.media_type or "image/jpeg", "fileUri": part.url}}
    return {"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data or ""}}


def _function_response(msg: Message, names: Mapping[str, str]) -> dict[str, Any]:
    name = msg.name or names.get(msg.tool_call_id or "") or "tool"
    try:
        result = orjson.loads(msg.text_content)
    except orjson.JSONDecodeError:
        result = msg.text_content
    # functionResponse.response must be an object.
    response = result if isinstance(result, dict) else {"result": result}
    return {"functionResponse": {"name": name, "response": response}}


def _args(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _contents(req: ChatRequest) -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg.role == "system":
            continue
        parts: list[dict[str, Any]]
        if msg.role == "tool":
            role, parts = "user", [_function_response(msg, names)]
        else:
            role = "model" if msg.role == "assistant" else "user"
            parts = [
                _image_part(p) if isinstance(p, ImagePart) else {"text": p.text}
                for p in msg.content
                if isinstance(p, ImagePart) or p.text
            ]
            for call in msg.tool_calls:
                names[call.id] = call.name
                parts.append({"functionCall": {"name": call.name, "args": _args(call.arguments)}})
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)  # all responses to one turn's calls go together
        else:
            out.append({"role": role, "parts": parts})
    return out


def build_body(req: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": _contents(req)}
    system = req.system_text
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if req.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t.name,
                        "description": t.description,
                        "parametersJsonSchema": t.parameters,
                    }
                    for t in req.tools
                ]
            }
        ]
    if req.tool_choice is not None:
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}[
            req.tool_choice.mode
        ]
        config: dict[str, Any] = {"mode": mode}
        if req.tool_choice.mode == "tool" and req.tool_choice.name:
            config["allowedFunctionNames"] = [req.tool_choice.name]
        body["toolConfig"] = {"functionCallingConfig": config}
    generation: dict[str, Any] = {}
    optional = {
        "temperature": req.temperature,
        "topP": req.top_p,
        "maxOutputTokens": req.max_tokens,
        "seed": req.seed,
    }
    generation.update({k: v for k, v in optional.items() if v is not None})
    if req.stop:
        generation["stopSequences"] = req.stop
    rf = req.response_format
    if rf is not None and rf.type != "text":
        generation["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.schema:
            generation["responseJsonSchema"] = rf.schema
    if req.reasoning_effort is not None:
        budget = _THINKING_BUDGET[req.reasoning_effort]
        generation["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}
    if generation:
        body["generationConfig"] = generation
    return body


# --- response -----------------------------------------------------------------


def parse_usage(u: Mapping[str, Any]) -> Usage:
    thoughts = int(u.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(u.get("promptTokenCount") or 0),
        output_tokens=int(u.get("candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=int(u.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _finish(reason: Any, has_tool_calls: bool) -> FinishReason:
    finish = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "tool_calls" if has_tool_calls and finish == "stop" else finish


def _candidate(provider: str, data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first candidate; a blocked prompt (no candidates, a blockReason) is ContentFiltered."""
    candidates = data.get("candidates") or []
    if candidates:
        return candidates[0]
    block = (data.get("promptFeedback") or {}).get("blockReason")
    if block:
        raise ContentFiltered(f"{provider}: prompt blocked ({block})", provider=provider)
    return None


def parse_response(ep: Endpoint, data: Any) -> ChatResponse:
    candidate = _candidate(ep.provider, data)
    if candidate is None:
        raise http.malformed(ep.provider, orjson.dumps(data), "no candidates")
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            fc = part["functionCall"]
            call_id = fc.get("id") or f"call_{len(calls)}"
            calls.append(ToolCall(call_id, fc["name"], orjson.dumps(fc.get("args") or {}).decode()))
        elif "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
    return ChatResponse(
        id=str(data.get("responseId") or ""),
        model=str(data.get("modelVersion") or ep.model),
        text="".join(texts) if texts else None,
        tool_calls=calls,
        reasoning="".join(thoughts) if thoughts else None,
        finish_reason=_finish(candidate.get("finishReason"), bool(calls)),
        usage=parse_usage(data.get("usageMetadata") or {}),
    )


def _stream_parts(parts: Any, calls_so_far: int) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    for part in parts or ():
        if "functionCall" in part:
            fc = part["functionCall"]
            index = calls_so_far + sum(isinstance(e, ToolCallDelta) for e in out)
            out.append(
                ToolCallDelta(
                    index=index,
                    id=fc.get("id") or f"call_{index}",
                    name=fc["name"],
                    arguments=orjson.dumps(fc.get("args") or {}).decode(),
                )
            )
        elif part.get("text"):
            out.append(
                ReasoningDelta(part["text"]) if part.get("thought") else TextDelta(part["text"])
            )
    return out


class GeminiAdapter(ProviderAdapter):
    wire: ClassVar[str] = "gemini"

    def _url(self, ep: Endpoint, suffix: str) -> str:
        return http.join_url(ep.base_url, f"/models/{ep.model}{suffix}")

    async def complete(self, ep: Endpoint, req: ChatRequest) -> ChatResponse:
        body = orjson.dumps(build_body(req))
        data, raw = await http.request_json(
            ep, "POST", self._url(ep, ":generateContent"), http.auth_headers(ep), classify, body
        )
        with http.expect_shape(ep.provider, raw):
            return parse_response(ep, data)

    async def stream(self, ep: Endpoint, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        body = orjson.dumps(build_body(req))
        headers = {**http.auth_headers(ep), "accept": "text/event-stream"}
        url = self._url(ep, ":streamGenerateContent?alt=sse")
        events = http.stream_sse(ep, url, headers, classify, body)
        usage: Usage | None = None
        finish: str | None = None
        calls = 0
        try:
            async for event in events:
                chunk = http.loads(ep.provider, event.data)
                with http.expect_shape(ep.provider, event.data):
                    if chunk.get("error") is not None:
                        raise _classify_error(ep.provider, None, chunk["error"], None)
                    if chunk.get("usageMetadata"):
                        usage = parse_usage(chunk["usageMetadata"])  # cumulative: the last one wins
                    candidate = _candidate(ep.provider, chunk)
                    if candidate is None:
                        continue
                    finish = candidate.get("finishReason") or finish
                    for out in _stream_parts((candidate.get("content") or {}).get("parts"), calls):
                        calls += isinstance(out, ToolCallDelta)
                        yield out
        finally:
            await events.aclose()
        if finish is None:
            raise http.malformed(ep.provider, b"", "stream ended without a finishReason")
        if usage is not None:
            yield UsageEvent(usage)
        yield FinishEvent(_finish(finish, calls > 0))

    async def list_models(self, ep: Endpoint) -> list[str]:
        url = http.join_url(ep.base_url, "/models")
        data, raw = await http.request_json(ep, "GET", url, http.auth_headers(ep), classify)
        with http.expect_shape(ep.provider, raw):
            return [str(m["name"]).removeprefix("models/") for m in data.get("models") or []]

    async def embed(self, ep: Endpoint, req: EmbeddingRequest) -> EmbeddingResponse:
        if req.has_token_arrays:
            raise BadRequest("input: Gemini embeds text only, not token ids", provider=ep.provider,
                             code="token_input_unsupported")
        one = len(req.inputs) == 1
        items = [_embed_item(ep.model, text, req.dimensions) for text in req.inputs]
        body = items[0] if one else {"requests": items}
        url = self._url(ep, ":embedContent" if one else ":batchEmbedContents")
        data, raw = await http.request_json(ep, "POST", url, http.auth_headers(ep), classify,
                                            orjson.dumps(body))
        with http.expect_shape(ep.provider, raw):
            found = [data["embedding"]] if one else data["embeddings"]
            if len(found) != len(req.inputs):
                raise ValueError("one embedding per input")
            vectors = [vector(e["values"]) for e in found]
        tokens = sum(estimate_input_tokens(req.inputs))
        return EmbeddingResponse(ep.model, vectors, Usage(input_tokens=tokens))


def _embed_item(model: str, text: Any, dimensions: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
    if dimensions is not None:
        item["outputDimensionality"] = dimensions
    return item

"""Loopback fake LLM providers: real HTTP servers speaking each wire format.

``UpstreamServer(fmt)`` serves one of three formats on 127.0.0.1, byte for byte
as the providers document them:

===========  ===============================================  ==================
format       routes (under ``base_url``)                      auth
===========  ===============================================  ==================
openai       POST /chat/completions, POST /embeddings,        Bearer
             GET /models
             (base ``/v1``; ``chat.completion`` and
             ``chat.completion.chunk`` + ``data: [DONE]``,
             a usage chunk with empty ``choices`` when
             ``stream_options.include_usage``)
anthropic    POST /messages, POST /messages/count_tokens,     x-api-key (or Bearer)
             GET /models (base ``/v1``; ``message`` + the     + anthropic-version
             full ``event:`` SSE sequence)
gemini       POST /models/{m}:generateContent,                x-goog-api-key
             POST /models/{m}:streamGenerateContent[?alt=sse] or ?key=
             POST /models/{m}:embedContent|batchEmbedContents,
             GET /models (base ``/v1beta``)
===========  ===============================================  ==================

Auth: with ``api_key`` set, a missing or wrong key gets that provider's own
error (OpenAI 401 ``invalid_api_key``; Anthropic 401 ``authentication_error``,
400 when ``anthropic-version`` is missing; Gemini 400 ``INVALID_ARGUMENT`` with
reason ``API_KEY_INVALID`` for a wrong key and 403 ``PERMISSION_DENIED`` for
none, as Gemini does).

Deterministic usage, so tests can compute expected cost:

- *prompt words* = whitespace-separated words in every string under a ``text``,
  ``content`` or ``system`` key of the prompt (the messages / contents and the
  system prompt; so OpenAI and Anthropic tool results count, Gemini's structured
  ``functionResponse`` does not; images, tool schemas and tool-call arguments
  never count), at least 1.
- The reply text is split into pieces: one per word (with its trailing space),
  or ``Behaviour.chunks`` pieces of near-equal length. Reasoning text likewise
  by words. Each piece is one stream delta and one output token; each tool call
  is one output token; ``Behaviour.reasoning_tokens`` adds hidden reasoning.
- output tokens = text pieces + reasoning pieces + reasoning_tokens + tool calls.
- OpenAI: ``prompt_tokens = words + cache_read`` (``cached_tokens = cache_read``);
  ``completion_tokens = output`` (``reasoning_tokens`` = reasoning part).
- Anthropic: ``input_tokens = words``, ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens`` as configured (separate, as Anthropic does).
- Gemini: ``promptTokenCount = words + cache_read`` (``cachedContentTokenCount``
  = cache_read), ``candidatesTokenCount`` = output minus reasoning,
  ``thoughtsTokenCount`` = reasoning.

Hence after normalisation input = words + cache_read (+ cache_write on Anthropic).

Embeddings: each input's vector is :func:`embedding_vector` (unit length, float32
values, a hash of the input: the same input always gets the same vector) with
``dimensions`` / ``outputDimensionality`` entries, else ``EMBEDDING_DIMENSIONS``
of the model (1536 by default); OpenAI's ``encoding_format: base64`` is
honoured. OpenAI's usage ``prompt_tokens`` = the words of each text input (at
least 1) plus the length of each token-id input; Gemini reports no usage, as
Gemini does.

Scripted behaviour: each request (any route) takes the next queued
:class:`Behaviour` (FIFO), or the server's default when the queue is empty.
Every request is recorded in ``requests`` (method, path, query, headers, JSON).

In-process use::

    with UpstreamServer("openai", api_key="sk-test") as up:      # own thread + loop
        up.enqueue(Behaviour(status=429, retry_after=2))
        ...  # point any client at up.base_url
    async with UpstreamServer("anthropic") as up:                # current loop
        ...

Stand-alone (benchmarks)::

    python -m warden.testing.upstream --format openai --port 9001 [--api-key K]

The HTTP layer is a bare asyncio protocol over ``httptools`` (the parser
uvicorn uses): it gives exact control of the bytes for faults (abort mid-chunk,
malformed chunks), starts and stops instantly and is faster than a framework.

Long on purpose: three providers' wire formats, their faults and a bare HTTP
server stand in one file so a benchmark can start it as one process from one
import; it is a test tool, outside the layers of the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http
import itertools
import re
import socket
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, cast
from urllib.parse import parse_qsl

import httptools
import orjson

from warden.formats.common import inverse
from warden.gateway.providers import anthropic as _anthropic_vocabulary
from warden.gateway.providers import gemini as _gemini_vocabulary

Format = Literal["openai", "anthropic", "gemini"]
FORMATS: tuple[Format, ...] = ("openai", "anthropic", "gemini")
DEFAULT_TEXT = "Hello from the Warden upstream simulator."
DEFAULT_MODELS: dict[str, list[str]] = {
    "openai": ["gpt-4o-mini", "gpt-4o"],
    "anthropic": ["claude-sonnet-4-5", "claude-haiku-4-5"],
    "gemini": ["gemini-2.5-flash", "gemini-2.5-pro"],
}
_PREFIX = {"openai": "/v1", "anthropic": "/v1", "gemini": "/v1beta"}


@dataclass(slots=True)
class SimToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Behaviour:
    """What the server does for one request. Defaults: a normal, instant reply."""

    status: int = 200  # >= 400: reply with this status and the format's error body
    error_type: str | None = None  # OpenAI error.code / Anthropic error.type / Gemini error.status
    error_message: str = "simulated upstream error"
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    retry_after: float | None = None  # `retry-after` header (and Gemini RetryInfo)
    delay: float = 0.0  # seconds before the response headers
    token_delay: float = 0.0  # seconds between stream events
    first_event_delay: float = 0.0  # stream: seconds between the headers and the first event
    text: str | None = None  # reply text; DEFAULT_TEXT unless tool calls are scripted
    chunks: int | None = None  # split the text into this many pieces (default: per word)
    reasoning: str | None = None  # visible reasoning / thinking text
    reasoning_tokens: int = 0  # hidden reasoning tokens added to usage
    tool_calls: list[SimToolCall] = field(default_factory=list)
    finish_reason: str | None = (
        None  # the format's own value, e.g. "length", "max_tokens", "SAFETY"
    )
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0  # reported by Anthropic only
    drop_after: int | None = None  # stream: abort the connection after N events
    malformed: bool = False  # invalid JSON body; in a stream: a broken event at `fault_after`
    stream_error: str | None = None  # stream: an error event of this type at `fault_after`
    fault_after: int = 1  # events sent before the malformed event / error event
    raw: bytes | None = None  # replay these bytes verbatim as the body, with `status`
    content_type: str | None = None  # for `raw` (default: JSON, or SSE for stream requests)


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    raw: bytes


# --- the reply plan: what to say, and its exact usage -----------------------


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def split_pieces(text: str, chunks: int | None) -> list[str]:
    """The stream pieces of a text: per word, or ``chunks`` near-equal slices."""
    if not text:
        return []
    if chunks is None:
        return _words(text)
    n = max(1, min(chunks, len(text)))
    size, extra = divmod(len(text), n)
    pieces, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


_TEXT_KEYS = frozenset({"text", "content", "system"})
# Structured parts that are not prompt text: tool arguments, images, thinking.
_SKIP_KEYS = frozenset(
    {
        "tool_calls",
        "input",
        "functionCall",
        "functionResponse",
        "image_url",
        "source",
        "inlineData",
        "fileData",
        "thinking",
        "signature",
    }
)


def _collect_text(node: Any, out: list[str]) -> None:
    if isinstance(node, str):
        out.append(node)
    elif isinstance(node, list):
        for item in node:
            _collect_text(item, out)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _SKIP_KEYS:
                continue
            if not isinstance(value, str):
                _collect_text(value, out)
            elif key in _TEXT_KEYS:
                out.append(value)


EMBEDDING_DIMENSIONS: dict[str, int] = {"text-embedding-3-large": 3072, "gemini-embedding-001": 3072}


def embedding_vector(value: str | list[int], dimensions: int) -> list[float]:
    """The simulator's vector of one input: deterministic, unit length, float32 values."""
    seed = orjson.dumps(value)
    raw = b"".join(hashlib.sha256(seed + i.to_bytes(4, "little")).digest()
                   for i in range((dimensions * 4 + 31) // 32))
    ints = array("I", raw[: dimensions * 4])
    values = [n / 2**31 - 1.0 for n in ints]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return array("f", [v / norm for v in values]).tolist()


def _embedding_tokens(value: Any) -> int:
    return max(1, len(_words(value))) if isinstance(value, str) else len(value)


def prompt_words(fmt: Format, body: Any) -> int:
    """The deterministic input-token count of a request body (see module docstring)."""
    if not isinstance(body, dict):
        return 1
    keys = {"openai": ("messages",), "anthropic": ("system", "messages")}.get(
        fmt, ("systemInstruction", "contents")
    )
    texts: list[str] = []
    for key in keys:
        _collect_text(body.get(key), texts)
    return max(1, sum(len(t.split()) for t in texts))


@dataclass(slots=True)
class _Plan:
    model: str
    text: list[str]
    reasoning: list[str]
    calls: list[SimToolCall]
    input_words: int
    output_tokens: int
    reasoning_total: int
    b: Behaviour

    @classmethod
    def make(cls, fmt: Format, model: str, body: Any, b: Behaviour) -> _Plan:
        text = b.text if b.text is not None else ("" if b.tool_calls else DEFAULT_TEXT)
        pieces = split_pieces(text, b.chunks)
        reasoning = _words(b.reasoning or "")
        reasoning_total = len(reasoning) + b.reasoning_tokens
        return cls(
            model=model,
            text=pieces,
            reasoning=reasoning,
            calls=list(b.tool_calls),
            input_words=prompt_words(fmt, body),
            output_tokens=len(pieces) + reasoning_total + len(b.tool_calls),
            reasoning_total=reasoning_total,
            b=b,
        )

    @property
    def full_text(self) -> str:
        return "".join(self.text)


def _halves(s: str) -> list[str]:
    mid = len(s) // 2
    return [p for p in (s[:mid], s[mid:]) if p]


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _sse(data: Any, event: str | None = None, eol: bytes = b"\n") -> bytes:
    payload = data if isinstance(data, bytes) else _dumps(data)
    head = b"event: " + event.encode() + eol if event else b""
    return head + b"data: " + payload + eol + eol


# --- the three formats -------------------------------------------------------


class _Wire:
    """One provider's shapes: routes, errors, replies, stream events."""

    fmt: Format
    json_type = b"application/json"

    def __init__(self, models: list[str]) -> None:
        self.models = models
        self._ids = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    # Returns (kind, model): kind is "complete" | "stream" | "models" | None.
    def route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[str | None, str]:
        raise NotImplementedError

    def auth_error(
        self, headers: dict[str, str], query: dict[str, str], key: str | None
    ) -> tuple[int, bytes] | None:
        raise NotImplementedError

    def error(
        self, status: int, error_type: str | None, message: str, retry_after: float | None
    ) -> bytes:
        raise NotImplementedError

    def models_body(self) -> bytes:
        raise NotImplementedError

    def completion(self, plan: _Plan) -> bytes:
        raise NotImplementedError

    def embeddings(self, model: str, body: Any) -> bytes:
        raise NotImplementedError

    def stream_events(self, plan: _Plan, body: Any) -> list[bytes]:
        raise NotImplementedError

    def stream_error_event(self, error_type: str, message: str) -> bytes:
        raise NotImplementedError

    def malformed_event(self) -> bytes:
        return b'data: {"broken": \n\n'

    def stream_tail(self, body: Any) -> bytes:
        """What ends a well-formed stream after its events (OpenAI: [DONE])."""
        return b""


class _OpenAI(_Wire):
    fmt: Format = "openai"
    _TYPES: ClassVar[dict[int, str]] = {
        429: "requests",
        500: "server_error",
        502: "server_error",
        503: "server_error",
    }
    _CODES: ClassVar[dict[int, str]] = {401: "invalid_api_key", 429: "rate_limit_exceeded"}

    def route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[str | None, str]:
        if method == "GET" and path == "/v1/models":
            return "models", ""
        if method == "POST" and path == "/v1/chat/completions" and isinstance(body, dict):
            return ("stream" if body.get("stream") else "complete"), str(body.get("model", ""))
        if method == "POST" and path == "/v1/embeddings" and isinstance(body, dict):
            return "embed", str(body.get("model", ""))
        return None, ""

    def embeddings(self, model: str, body: Any) -> bytes:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and isinstance(inputs[0], int):
            inputs = [inputs]
        dims = body.get("dimensions") or EMBEDDING_DIMENSIONS.get(model, 1536)
        as_b64 = body.get("encoding_format") == "base64"  # float32 little-endian, as OpenAI
        data = [{"object": "embedding", "index": i, "embedding": embedding_vector(v, dims)}
                for i, v in enumerate(inputs)]
        for item in data if as_b64 else ():
            item["embedding"] = base64.b64encode(array("f", item["embedding"]).tobytes()).decode()
        tokens = sum(_embedding_tokens(v) for v in inputs)
        return _dumps({"object": "list", "data": data, "model": model,
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def auth_error(
        self, headers: dict[str, str], query: dict[str, str], key: str | None
    ) -> tuple[int, bytes] | None:
        if key is None:
            return None
        given = headers.get("authorization", "")
        if not given:
            return 401, self._error_body(
                "You didn't provide an API key.", "invalid_request_error", None
            )
        if given != f"Bearer {key}":
            return 401, self._error_body(
                "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        return None

    def _error_body(self, message: str, type_: str, code: str | None) -> bytes:
        return _dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})

    def error(
        self, status: int, error_type: str | None, message: str, retry_after: float | None
    ) -> bytes:
        type_ = self._TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        return self._error_body(message, type_, error_type or self._CODES.get(status))

    def models_body(self) -> bytes:
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"}
            for m in self.models
        ]
        return _dumps({"object": "list", "data": data})

    def _usage(self, plan: _Plan) -> dict[str, Any]:
        prompt = plan.input_words + plan.b.cache_read_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": plan.output_tokens,
            "total_tokens": prompt + plan.output_tokens,
            "prompt_tokens_details": {"cached_tokens": plan.b.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": plan.reasoning_total,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _finish(self, plan: _Plan) -> str:
        return plan.b.finish_reason or ("tool_calls" if plan.calls else "stop")

    def _call_id(self, i: int) -> str:
        # unique across responses, as a real provider's are: clients (Claude Code) drop a repeated id
        return self.new_id("call_sim")

    def completion(self, plan: _Plan) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": plan.full_text or None,
            "refusal": None,
        }
        if plan.reasoning:
            message["reasoning_content"] = "".join(plan.reasoning)
        if plan.calls:
            message["tool_calls"] = [
                {
                    "id": self._call_id(i),
                    "type": "function",
                    "function": {"name": c.name, "arguments": _dumps(c.arguments).decode()},
                }
                for i, c in enumerate(plan.calls)
            ]
        return _dumps(
            {
                "id": self.new_id("chatcmpl-sim"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": plan.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": self._finish(plan),
                    }
                ],
                "usage": self._usage(plan),
                "system_fingerprint": "fp_sim",
                "service_tier": "default",
            }
        )

    def stream_events(self, plan: _Plan, body: Any) -> list[bytes]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": self.new_id("chatcmpl-sim"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": plan.model,
            "system_fingerprint": "fp_sim",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            c = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                c["usage"] = None
            return _sse(c)

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"reasoning_content": p}) for p in plan.reasoning]
        events += [chunk({"content": p}) for p in plan.text]
        for i, call in enumerate(plan.calls):
            head = {
                "index": i,
                "id": self._call_id(i),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(chunk({"tool_calls": [head]}))
            for piece in _halves(_dumps(call.arguments).decode()):
                events.append(
                    chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                )
        events.append(chunk({}, self._finish(plan)))
        if include_usage:
            events.append(_sse({**base, "choices": [], "usage": self._usage(plan)}))
        return events

    def stream_tail(self, body: Any) -> bytes:
        return b"data: [DONE]\n\n"

    def stream_error_event(self, error_type: str, message: str) -> bytes:
        return _sse(
            {
                "error": {
                    "message": message,
                    "type": "server_error",
                    "param": None,
                    "code": error_type,
                }
            }
        )


class _Anthropic(_Wire):
    fmt: Format = "anthropic"
    # Anthropic's error type for each status, from the adapter's table of them.
    _TYPES: ClassVar[dict[int, str]] = inverse(
        {name: status for name, (status, _) in _anthropic_vocabulary.ERROR_TYPES.items()}
    )

    def route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[str | None, str]:
        if method == "GET" and path == "/v1/models":
            return "models", ""
        if method == "POST" and path == "/v1/messages" and isinstance(body, dict):
            return ("stream" if body.get("stream") else "complete"), str(body.get("model", ""))
        if method == "POST" and path == "/v1/messages/count_tokens" and isinstance(body, dict):
            return "count_tokens", str(body.get("model", ""))
        return None, ""

    def auth_error(
        self, headers: dict[str, str], query: dict[str, str], key: str | None
    ) -> tuple[int, bytes] | None:
        if "anthropic-version" not in headers:
            return 400, self._error_body(
                "invalid_request_error", "anthropic-version: header is required"
            )
        if key is None:
            return None
        # Newer SDKs may send the key as a bearer token instead.
        given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        if not given:
            return 401, self._error_body("authentication_error", "x-api-key header is required")
        if given != key:
            return 401, self._error_body("authentication_error", "invalid x-api-key")
        return None

    def _error_body(self, type_: str, message: str) -> bytes:
        return _dumps(
            {
                "type": "error",
                "error": {"type": type_, "message": message},
                "request_id": self.new_id("req_sim"),
            }
        )

    def error(
        self, status: int, error_type: str | None, message: str, retry_after: float | None
    ) -> bytes:
        default = self._TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return self._error_body(error_type or default, message)

    def models_body(self) -> bytes:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in self.models
        ]
        first, last = (self.models[0], self.models[-1]) if self.models else (None, None)
        return _dumps({"data": data, "has_more": False, "first_id": first, "last_id": last})

    def _usage(self, plan: _Plan, output: int) -> dict[str, Any]:
        return {
            "input_tokens": plan.input_words,
            "output_tokens": output,
            "cache_creation_input_tokens": plan.b.cache_write_tokens,
            "cache_read_input_tokens": plan.b.cache_read_tokens,
            "service_tier": "standard",
        }

    def _stop(self, plan: _Plan) -> str:
        return plan.b.finish_reason or ("tool_use" if plan.calls else "end_turn")

    def _tool_id(self, i: int) -> str:
        return self.new_id("toolu_sim")  # unique across responses, see _call_id

    def _message(
        self, plan: _Plan, content: list[dict[str, Any]], stop: str | None, output: int
    ) -> dict[str, Any]:
        return {
            "id": self.new_id("msg_sim"),
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": self._usage(plan, output),
        }

    def completion(self, plan: _Plan) -> bytes:
        content: list[dict[str, Any]] = []
        if plan.reasoning:
            content.append(
                {
                    "type": "thinking",
                    "thinking": "".join(plan.reasoning),
                    "signature": "sim-signature",
                }
            )
        if plan.text:
            content.append({"type": "text", "text": plan.full_text})
        content += [
            {"type": "tool_use", "id": self._tool_id(i), "name": c.name, "input": c.arguments}
            for i, c in enumerate(plan.calls)
        ]
        return _dumps(self._message(plan, content, self._stop(plan), plan.output_tokens))

    def stream_events(self, plan: _Plan, body: Any) -> list[bytes]:
        def ev(data: dict[str, Any]) -> bytes:
            return _sse(data, data["type"])

        events = [
            ev({"type": "message_start", "message": self._message(plan, [], None, 1)}),
            ev({"type": "ping"}),
        ]
        index = 0

        def block(start: dict[str, Any], deltas: Iterable[dict[str, Any]]) -> None:
            nonlocal index
            events.append(
                ev({"type": "content_block_start", "index": index, "content_block": start})
            )
            events.extend(
                ev({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
            )
            events.append(ev({"type": "content_block_stop", "index": index}))
            index += 1

        if plan.reasoning:
            deltas = [{"type": "thinking_delta", "thinking": p} for p in plan.reasoning]
            block(
                {"type": "thinking", "thinking": "", "signature": ""},
                deltas + [{"type": "signature_delta", "signature": "sim-signature"}],
            )
        if plan.text:
            block(
                {"type": "text", "text": ""}, ({"type": "text_delta", "text": p} for p in plan.text)
            )
        for i, call in enumerate(plan.calls):
            pieces = [""] + _halves(_dumps(call.arguments).decode())
            block(
                {"type": "tool_use", "id": self._tool_id(i), "name": call.name, "input": {}},
                ({"type": "input_json_delta", "partial_json": p} for p in pieces),
            )
        events.append(
            ev(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop(plan), "stop_sequence": None},
                    "usage": {"output_tokens": plan.output_tokens},
                }
            )
        )
        events.append(ev({"type": "message_stop"}))
        return events

    def stream_error_event(self, error_type: str, message: str) -> bytes:
        return _sse({"type": "error", "error": {"type": error_type, "message": message}}, "error")


class _Gemini(_Wire):
    fmt: Format = "gemini"
    # The google.rpc status for each HTTP status, from the adapter's table of them.
    _CODES: ClassVar[dict[str, int]] = {
        name: code for name, (code, _) in _gemini_vocabulary.ERROR_STATUS.items()
    }
    _STATUS: ClassVar[dict[int, str]] = inverse(_CODES, canonical={400: "INVALID_ARGUMENT"})
    _ROUTE = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent"
                        r"|embedContent|batchEmbedContents)$")
    _KINDS: ClassVar[dict[str, str]] = {"generateContent": "complete", "embedContent": "embed",
                                        "batchEmbedContents": "embed"}

    def route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[str | None, str]:
        if method == "GET" and path == "/v1beta/models":
            return "models", ""
        match = self._ROUTE.match(path)
        if method == "POST" and match and isinstance(body, dict):
            return self._KINDS.get(match.group(2), "stream"), match.group(1)
        return None, ""

    def embeddings(self, model: str, body: Any) -> bytes:
        def one(request: Any) -> dict[str, Any]:
            text = "".join(p.get("text", "") for p in request["content"]["parts"])
            dims = request.get("outputDimensionality") or EMBEDDING_DIMENSIONS.get(model, 1536)
            return {"values": embedding_vector(text, dims)}

        if "requests" in body:
            return _dumps({"embeddings": [one(r) for r in body["requests"]]})
        return _dumps({"embedding": one(body)})

    def auth_error(
        self, headers: dict[str, str], query: dict[str, str], key: str | None
    ) -> tuple[int, bytes] | None:
        if key is None:
            return None
        given = headers.get("x-goog-api-key") or query.get("key")
        if not given:
            message = "Method doesn't allow unregistered callers. Please use an API key."
            return 403, self._error_body(403, "PERMISSION_DENIED", message, [])
        if given != key:
            detail = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            return 400, self._error_body(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [detail]
            )
        return None

    def _error_body(
        self, code: int, status: str, message: str, details: list[dict[str, Any]]
    ) -> bytes:
        error: dict[str, Any] = {"code": code, "message": message, "status": status}
        if details:
            error["details"] = details
        return _dumps({"error": error})

    def error(
        self, status: int, error_type: str | None, message: str, retry_after: float | None
    ) -> bytes:
        default = self._STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
        details = []
        if retry_after is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after:g}s",
                }
            )
        return self._error_body(status, error_type or default, message, details)

    def models_body(self) -> bytes:
        models = [
            {
                "name": f"models/{m}",
                "version": "001",
                "displayName": m,
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            }
            for m in self.models
        ]
        return _dumps({"models": models})

    def _usage(self, plan: _Plan) -> dict[str, Any]:
        prompt = plan.input_words + plan.b.cache_read_tokens
        candidates = plan.output_tokens - plan.reasoning_total
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + plan.output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        }
        if plan.b.cache_read_tokens:
            usage["cachedContentTokenCount"] = plan.b.cache_read_tokens
        if plan.reasoning_total:
            usage["thoughtsTokenCount"] = plan.reasoning_total
        return usage

    def _response(
        self, plan: _Plan, parts: list[dict[str, Any]], rid: str, last: bool
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        out: dict[str, Any] = {"candidates": [candidate]}
        if last:
            candidate["finishReason"] = plan.b.finish_reason or "STOP"
            out["usageMetadata"] = self._usage(plan)
        out["modelVersion"] = plan.model
        out["responseId"] = rid
        return out

    def _calls(self, plan: _Plan) -> list[dict[str, Any]]:
        return [{"functionCall": {"name": c.name, "args": c.arguments}} for c in plan.calls]

    def completion(self, plan: _Plan) -> bytes:
        parts: list[dict[str, Any]] = []
        if plan.reasoning:
            parts.append({"text": "".join(plan.reasoning), "thought": True})
        if plan.text:
            parts.append({"text": plan.full_text})
        parts += self._calls(plan)
        return _dumps(self._response(plan, parts, self.new_id("sim-"), last=True))

    def stream_events(self, plan: _Plan, body: Any) -> list[bytes]:
        rid = self.new_id("sim-")
        groups = [[{"text": p, "thought": True}] for p in plan.reasoning] + [
            [{"text": p}] for p in plan.text
        ]
        if plan.calls:
            groups.append(self._calls(plan))
        groups = groups or [[{"text": ""}]]
        return [
            _sse(self._response(plan, parts, rid, last=i == len(groups) - 1), eol=b"\r\n")
            for i, parts in enumerate(groups)
        ]

    def stream_error_event(self, error_type: str, message: str) -> bytes:
        code = self._CODES.get(error_type, 500)
        return _sse(orjson.loads(self._error_body(code, error_type, message, [])), eol=b"\r\n")

    def malformed_event(self) -> bytes:
        return b'data: {"candidates": [\r\n\r\n'


_WIRES: dict[str, type[_Wire]] = {"openai": _OpenAI, "anthropic": _Anthropic, "gemini": _Gemini}


# --- HTTP/1.1 over asyncio + httptools ---------------------------------------


class _Writer:
    """Writes one response to a transport: whole, or chunked for streams."""

    def __init__(self, transport: asyncio.Transport, keep_alive: bool) -> None:
        self.transport = transport
        self.keep_alive = keep_alive
        self.aborted = False

    def _head(self, status: int, headers: dict[str, str], extra: str) -> bytes:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Overloaded" if status == 529 else "Unknown"
        lines = (
            [f"HTTP/1.1 {status} {phrase}"] + [f"{k}: {v}" for k, v in headers.items()] + [extra]
        )
        if not self.keep_alive:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def respond(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.transport.write(self._head(status, headers, f"content-length: {len(body)}") + body)

    def start_chunked(self, status: int, headers: dict[str, str]) -> None:
        self.transport.write(self._head(status, headers, "transfer-encoding: chunked"))

    def chunk(self, data: bytes) -> None:
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.transport.write(b"0\r\n\r\n")

    def abort(self) -> None:
        self.aborted = True
        self.transport.abort()


class _Connection(asyncio.Protocol):
    def __init__(self, server: UpstreamServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[tuple[str, bytes, list[tuple[str, str]], bytes, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._method = "GET"
        self._keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        if self._worker is not None:
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._method = self._parser.get_method().decode()
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._pending.append(
            (self._method, self._url, self._headers, b"".join(self._body), self._keep_alive)
        )
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        # Requests on one connection are answered in order (pipelining-safe).
        while self._pending and self._transport is not None and not self._transport.is_closing():
            method, url, headers, body, keep_alive = self._pending.popleft()
            writer = _Writer(self._transport, keep_alive)
            await self._server._handle(method, url.decode("latin-1"), dict(headers), body, writer)
            if writer.aborted:
                return
            if not keep_alive:
                self._transport.close()
                return


class UpstreamServer:
    """A fake provider on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        fmt: Format,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: list[str] | None = None,
        default: Behaviour | None = None,
        record: bool = True,
    ) -> None:
        if fmt not in _WIRES:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.format: Format = fmt
        self.api_key = api_key
        self.host = host
        self.port = port
        self.default = default or Behaviour()
        self.record = record  # off for long benchmark runs: `requests` would grow without bound
        self.requests: list[RecordedRequest] = []
        self._wire = _WIRES[fmt](list(models) if models is not None else list(DEFAULT_MODELS[fmt]))
        self._queue: deque[Behaviour] = deque()
        self._connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- scripting ---------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no API prefix)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The URL to configure as the provider base (with ``/v1`` or ``/v1beta``)."""
        return self.url + _PREFIX[self.format]

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in order."""
        self._queue.extend(behaviours)

    def reset(self) -> None:
        """Forget queued behaviours and recorded requests."""
        self._queue.clear()
        self.requests.clear()

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # --- lifecycle ---------------------------------------------------------

    async def _open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), sock=sock, backlog=1024
        )

    async def _close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            conn.abort()
        await self._server.wait_closed()
        self._server = None

    async def go_down(self) -> None:
        """An outage: stop listening (connections are refused) until :meth:`come_back`."""
        await self._close()

    async def come_back(self) -> None:
        """Listen again on the same port after :meth:`go_down`."""
        await self._open()

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    def start(self) -> Self:
        """Serve from a background thread with its own event loop (usable from sync code)."""
        ready = threading.Event()
        failure: list[OSError] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except OSError as exc:  # e.g. port taken: reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"upstream-{self.format}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request handling ----------------------------------------------------

    def _next(self) -> Behaviour:
        try:
            return self._queue.popleft()
        except IndexError:
            return self.default

    async def _handle(
        self, method: str, url: str, headers: dict[str, str], raw: bytes, w: _Writer
    ) -> None:
        path, _, qs = url.partition("?")
        query = dict(parse_qsl(qs))
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if self.record:
            self.requests.append(RecordedRequest(method, path, query, headers, body, raw))
        b = self._next()
        if b.delay:
            await asyncio.sleep(b.delay)
        wire = self._wire
        json_headers = {"content-type": "application/json", **b.headers}
        kind, model = wire.route(method, path, query, body)
        if kind is None:
            return w.respond(
                404, json_headers, wire.error(404, None, f"no route for {method} {path}", None)
            )
        denied = wire.auth_error(headers, query, self.api_key)
        if denied is not None:
            return w.respond(denied[0], json_headers, denied[1])
        sse = kind == "stream" and (wire.fmt != "gemini" or query.get("alt") == "sse")
        if b.raw is not None:
            content_type = b.content_type or (
                "text/event-stream" if sse and b.status < 400 else "application/json"
            )
            return w.respond(b.status, {**b.headers, "content-type": content_type}, b.raw)
        if b.status >= 400:
            extra = {"retry-after": f"{b.retry_after:g}"} if b.retry_after is not None else {}
            body_bytes = wire.error(b.status, b.error_type, b.error_message, b.retry_after)
            return w.respond(b.status, {**json_headers, **extra}, body_bytes)
        if kind == "models":
            return w.respond(200, json_headers, b"{not json" if b.malformed else wire.models_body())
        if kind == "embed":
            return w.respond(200, json_headers, b'{"data": [' if b.malformed
                             else wire.embeddings(model, body))
        if kind == "count_tokens":  # Anthropic's: the prompt words, as the usage of a reply counts them
            return w.respond(200, json_headers, _dumps({"input_tokens": prompt_words(wire.fmt, body)}))
        plan = _Plan.make(wire.fmt, model, body, b)
        if kind == "complete":
            return w.respond(
                200, json_headers, b'{"id": "trunc' if b.malformed else wire.completion(plan)
            )
        events = wire.stream_events(plan, body)
        if not sse:  # Gemini's streamGenerateContent without alt=sse: one JSON array
            chunks = [e.removeprefix(b"data: ").strip() for e in events]
            return w.respond(200, json_headers, b"[" + b",".join(chunks) + b"]")
        await self._stream(w, wire, b, events, body)

    async def _stream(
        self, w: _Writer, wire: _Wire, b: Behaviour, events: list[bytes], body: Any
    ) -> None:
        w.start_chunked(
            200, {"content-type": "text/event-stream", "cache-control": "no-cache", **b.headers}
        )
        if b.malformed:
            events = events[: b.fault_after] + [wire.malformed_event()] + events[b.fault_after :]
        elif b.stream_error:
            events = events[: b.fault_after] + [
                wire.stream_error_event(b.stream_error, b.error_message)
            ]
        else:
            tail = wire.stream_tail(body)
            events = events + [tail] if tail else events
        for i, event in enumerate(events):
            if b.drop_after is not None and i >= b.drop_after:
                return w.abort()
            delay = b.token_delay if i else b.first_event_delay
            if delay:
                await asyncio.sleep(delay)
            w.chunk(event)
        w.end_chunked()


def main(argv: list[str] | None = None) -> None:
    """``python -m warden.testing.upstream --format openai --port 9001``."""
    parser = argparse.ArgumentParser(
        prog="python -m warden.testing.upstream", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this key (default: accept any)")
    parser.add_argument("--text", default=None, help="reply text (default: a fixed sentence)")
    args = parser.parse_args(argv)
    server = UpstreamServer(
        args.format,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        default=Behaviour(text=args.text),
        record=False,
    )

    async def serve() -> None:
        async with server:
            print(f"upstream {args.format} listening on {server.base_url}", flush=True)
            await asyncio.Event().wait()

    try:
        import uvloop  # faster loop when installed (it is, with uvicorn[standard])

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve())


if __name__ == "__main__":
    main()

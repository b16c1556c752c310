"""The one internal message format. Wire formats exist only at the edges.

Conventions (every adapter normalises to these):
- ``Usage.input_tokens`` counts *all* prompt tokens, including cache reads and
  cache writes; ``cache_read_tokens`` / ``cache_write_tokens`` are subsets of it.
- ``Usage.output_tokens`` counts all generated tokens, including reasoning;
  ``reasoning_tokens`` is a subset of it.
- Tool-call ``arguments`` are the raw JSON text the model produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

from warden.gateway.errors import ProviderError
from warden.netpolicy import AddressPolicy

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
WireFormat = Literal["openai", "anthropic", "gemini"]


@dataclass(slots=True)
class TextPart:
    text: str
    # Anthropic's prompt-cache marker on this block ({"type": "ephemeral", ...}):
    # sent on to Anthropic upstreams; other formats cache on their own.
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ImagePart:
    """An image by URL, or inline as base64 ``data`` with its ``media_type``."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None


ContentPart = Union[TextPart, ImagePart]


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str = "{}"


@dataclass(slots=True)
class Message:
    role: Role
    content: list[ContentPart] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # role == "tool": the call this answers
    name: str | None = None  # role == "tool": the tool's name (Gemini needs it)
    reasoning: str | None = None
    cache_control: dict[str, Any] | None = None  # on the turn's last block (see TextPart)

    @classmethod
    def text(cls, role: Role, text: str) -> Message:
        return cls(role=role, content=[TextPart(text)])

    @property
    def text_content(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def has_images(self) -> bool:
        return any(isinstance(p, ImagePart) for p in self.content)


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    cache_control: dict[str, Any] | None = None  # see TextPart


@dataclass(slots=True)
class ToolChoice:
    """``auto`` | ``none`` | ``required`` | ``tool`` (then ``name`` is set)."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(slots=True)
class Native:
    """What only an upstream of the client's own wire format can honour, passed on
    verbatim to one: top-level body fields and headers (Anthropic's ``anthropic-beta``,
    ``top_k``, ``container`` ...). ``required`` names the fields no other format can
    serve: deployments of other formats are then not tried."""

    wire: WireFormat
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    user: str | None = None
    stream: bool = False
    native: Native | None = None

    @property
    def has_images(self) -> bool:
        return any(m.has_images for m in self.messages)

    @property
    def system_text(self) -> str:
        return "\n\n".join(m.text_content for m in self.messages if m.role == "system")


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)


# --- embeddings --------------------------------------------------------------

# One input: a text, or token ids in the model's own tokenizer (OpenAI-format upstreams only).
EmbeddingInput = Union[str, list[int]]


@dataclass(slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[EmbeddingInput]
    dimensions: int | None = None  # shorten the vectors (models that support it)
    user: str | None = None
    native: ClassVar[None] = None  # no field of it needs one wire format (cf. ChatRequest)

    @property
    def has_token_arrays(self) -> bool:
        return any(not isinstance(i, str) for i in self.inputs)


@dataclass(slots=True)
class EmbeddingResponse:
    """One vector per input, in input order; ``usage.input_tokens`` is all there is."""

    model: str
    vectors: list[list[float]]
    usage: Usage = field(default_factory=Usage)


# --- stream events ---------------------------------------------------------


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of tool call ``index``; ``id`` and ``name`` come with its first piece."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class UsageEvent:
    usage: Usage


@dataclass(slots=True)
class FinishEvent:
    reason: FinishReason


@dataclass(slots=True)
class ErrorEvent:
    error: ProviderError


StreamEvent = Union[TextDelta, ReasoningDelta, ToolCallDelta, UsageEvent, FinishEvent, ErrorEvent]


# --- where a call goes -----------------------------------------------------


DEFAULT_MAX_REPLY_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024


@dataclass(slots=True, frozen=True)
class Timeouts:
    """The time and size bounds of one upstream call."""

    connect: float = 5.0
    first_byte: float = 60.0  # until response headers (and, for streams, the first event)
    stream_gap: float = 30.0  # longest silence allowed between stream chunks
    total: float = 600.0
    # Memory all tenants share: a whole (non-stream) reply, and one stream line or event.
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES


@dataclass(slots=True)
class Endpoint:
    """Everything an adapter needs to call one model at one provider."""

    provider: str
    wire: WireFormat
    base_url: str
    model: str  # the model id as the provider knows it
    api_key: str | None = None
    auth: Literal["bearer", "x-api-key", "x-goog-api-key", "none"] = "bearer"
    headers: dict[str, str] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    # None: the operator's own endpoint, connect anywhere. A policy: every address
    # the connection may use is checked by it (tenants' credentials).
    egress: AddressPolicy | None = None

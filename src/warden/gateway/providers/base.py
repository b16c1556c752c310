"""The adapter interface: one implementation per wire format.

An adapter turns the internal format (``gateway/types.py``) into one provider
wire format and back. It holds no state of its own: the endpoint carries the
URL, key and timeouts, and the pooled client lives in ``providers/http.py``.
Every failure surfaces as a ``ProviderError`` subclass, also from inside a
stream iterator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from array import array
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from warden.gateway.errors import BadRequest
from warden.gateway.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Endpoint,
    StreamEvent,
)


class ProviderAdapter(ABC):
    wire: ClassVar[str]

    @abstractmethod
    async def complete(self, ep: Endpoint, req: ChatRequest) -> ChatResponse:
        """One non-streaming call."""

    @abstractmethod
    def stream(self, ep: Endpoint, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """A streaming call: deltas, then one UsageEvent (if usage was sent) and one FinishEvent.
        A format that reports the prompt's usage first (Anthropic) also sends an early
        UsageEvent with it; the last UsageEvent holds the totals."""

    async def count_tokens(self, ep: Endpoint, req: ChatRequest) -> int | None:
        """The exact input tokens of ``req``, if the format has a way to count them."""
        return None

    @abstractmethod
    async def list_models(self, ep: Endpoint) -> list[str]:
        """Model ids at this endpoint: the cheapest authenticated call, used to test a key."""

    async def embed(self, ep: Endpoint, req: EmbeddingRequest) -> EmbeddingResponse:
        """One vector per input; a format without an embeddings API refuses (400)."""
        raise BadRequest(f"{ep.provider} has no embeddings API; use an embedding model",
                         provider=ep.provider, code="embeddings_unsupported")


# --- small helpers shared by the adapters ------------------------------------


def split_data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` -> (``image/png``, ``AAAA``); None for other URLs."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return header[: -len(";base64")] or "application/octet-stream", data


def vector(values: Any) -> list[float]:
    """One embedding from a reply: a JSON list of numbers, checked (TypeError if not)."""
    if not isinstance(values, list) or not values:
        raise TypeError("an embedding must be a non-empty list of numbers")
    array("d", values)  # a C-speed check that every item is a number
    return values


def data_url(media_type: str | None, data: str) -> str:
    return f"data:{media_type or 'image/png'};base64,{data}"

"""The adapter interface: one implementation per wire format.

An adapter turns the internal format (``gateway/types.py``) into one provider
wire format and back. It holds no state of its own: the endpoint carries the
URL, key and timeouts, and the pooled client lives in ``providers/http.py``.
Every failure surfaces as a ``ProviderError`` subclass, also from inside a
stream iterator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import ClassVar

from warden.gateway.types import ChatRequest, ChatResponse, Endpoint, StreamEvent


class ProviderAdapter(ABC):
    wire: ClassVar[str]

    @abstractmethod
    async def complete(self, ep: Endpoint, req: ChatRequest) -> ChatResponse:
        """One non-streaming call."""

    @abstractmethod
    def stream(self, ep: Endpoint, req: ChatRequest) -> AsyncIterator[StreamEvent]:
        """A streaming call: deltas, then one UsageEvent (if usage was sent) and one FinishEvent."""

    @abstractmethod
    async def list_models(self, ep: Endpoint) -> list[str]:
        """Model ids at this endpoint: the cheapest authenticated call, used to test a key."""


# --- small helpers shared by the adapters ------------------------------------


def split_data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` -> (``image/png``, ``AAAA``); None for other URLs."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return header[: -len(";base64")] or "application/octet-stream", data


def data_url(media_type: str | None, data: str) -> str:
    return f"data:{media_type or 'image/png'};base64,{data}"

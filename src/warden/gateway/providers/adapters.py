"""The registry of upstream adapters, one per wire format.

A new wire format joins by adding its adapter module and one line here;
``base.py`` (the interface the adapters implement) does not change.
"""

from __future__ import annotations

from warden.gateway.providers.anthropic import AnthropicAdapter
from warden.gateway.providers.base import ProviderAdapter
from warden.gateway.providers.gemini import GeminiAdapter
from warden.gateway.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, ProviderAdapter] = {
    adapter.wire: adapter for adapter in (OpenAIAdapter(), AnthropicAdapter(), GeminiAdapter())
}


def get_adapter(wire: str) -> ProviderAdapter:
    """The stateless, shared adapter for ``openai``, ``anthropic`` or ``gemini``."""
    try:
        return ADAPTERS[wire]
    except KeyError:
        raise ValueError(f"unknown wire format {wire!r}") from None

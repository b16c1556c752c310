"""Known provider ids -> how to reach them.

Three wire formats cover the field; this table says which one each provider
speaks, where it lives, how it wants its key and which environment variable may
hold that key for the ``default`` workspace. ``prices_id`` is the provider's id
in ``genai-prices`` (None where prices are not published there, e.g. local).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from warden.gateway.types import WireFormat

AuthStyle = Literal["bearer", "x-api-key", "x-goog-api-key", "none"]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    id: str
    name: str
    wire: WireFormat
    base_url: str | None  # None: the credential must carry one
    auth: AuthStyle
    env: tuple[str, ...] = ()
    prices_id: str | None = None
    key_required: bool = True
    local: bool = False


def _openai_like(
    pid: str, name: str, base_url: str | None, env: str | None, prices_id: str | None
) -> ProviderInfo:
    return ProviderInfo(pid, name, "openai", base_url, "bearer", (env,) if env else (), prices_id)


PROVIDERS: dict[str, ProviderInfo] = {
    p.id: p
    for p in (
        _openai_like("openai", "OpenAI", "https://api.openai.com/v1", "OPENAI_API_KEY", "openai"),
        ProviderInfo(
            "anthropic", "Anthropic", "anthropic", "https://api.anthropic.com/v1", "x-api-key",
            ("ANTHROPIC_API_KEY",), "anthropic",
        ),
        ProviderInfo(
            "gemini", "Google Gemini", "gemini",
            "https://generativelanguage.googleapis.com/v1beta", "x-goog-api-key",
            ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "google",
        ),
        _openai_like("deepseek", "DeepSeek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "deepseek"),
        _openai_like("groq", "Groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "groq"),
        _openai_like("mistral", "Mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", "mistral"),
        _openai_like("moonshot", "Moonshot", "https://api.moonshot.ai/v1", "MOONSHOT_API_KEY", "moonshotai"),
        _openai_like("xai", "xAI", "https://api.x.ai/v1", "XAI_API_KEY", "x-ai"),
        _openai_like("together", "Together", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "together"),
        _openai_like(
            "fireworks", "Fireworks", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY",
            "fireworks",
        ),
        _openai_like(
            "openrouter", "OpenRouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "openrouter"
        ),
        _openai_like("cerebras", "Cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", "cerebras"),
        ProviderInfo(
            "ollama", "Ollama (local)", "openai", "http://127.0.0.1:11434/v1", "none",
            key_required=False, local=True,
        ),
        ProviderInfo(
            "openai-compatible", "OpenAI-compatible server (vLLM, LM Studio, llama.cpp, ...)",
            "openai", None, "bearer", key_required=False, local=True,
        ),
    )
}

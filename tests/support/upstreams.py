"""Loopback providers for tests against a live Warden: their keys, and adding one
as a workspace credential over the real API."""

from __future__ import annotations

import httpx

from warden.testing.upstream import UpstreamServer

UPSTREAM_KEYS = {"openai": "sk-up-openai-0123456789", "anthropic": "sk-ant-up-0123456789",
                 "gemini": "AIzaUpstreamGemini0123456789abcdef"}


def add_credential(admin: httpx.Client, provider: str, up: UpstreamServer | None, *,
                   label: str = "main", models: list | None = None, base_url: str | None = None,
                   key: str | None = None) -> dict:
    wire = up.format if up is not None else provider
    body = {"provider": provider, "label": label,
            "api_key": key or UPSTREAM_KEYS.get(wire, "sk-none-0123456789"),
            "base_url": base_url or up.base_url}
    if models is not None:
        body["models"] = models
    r = admin.post("/api/byok", json=body)
    assert r.status_code == 201, r.text
    return r.json()

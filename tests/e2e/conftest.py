"""A live Warden on loopback in front of loopback provider simulators."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import ADMIN_KEY, LiveWarden
from warden.config import load_settings
from warden.testing.upstream import UpstreamServer

UPSTREAM_KEYS = {"openai": "sk-up-openai-0123456789", "anthropic": "sk-ant-up-0123456789",
                 "gemini": "AIzaUpstreamGemini0123456789abcdef"}


@pytest.fixture
def live_settings(tmp_path: Path):
    return load_settings(
        data_dir=tmp_path / "data", admin_key=ADMIN_KEY, access_log=False,
        upstream_connect_timeout=1.0, upstream_first_byte_timeout=1.0,
        upstream_stream_gap_timeout=1.0, request_deadline=20.0, max_retries=1,
        breaker_failures=3, breaker_window=30.0, breaker_cooldown=0.5,
    )


@pytest.fixture
def live(live_settings) -> Iterator[LiveWarden]:
    server = LiveWarden(live_settings).start()
    yield server
    server.stop()


@pytest.fixture
def admin(live: LiveWarden) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"},
                      timeout=30) as c:
        yield c


@pytest.fixture
def openai_up() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as up:
        yield up


@pytest.fixture
def anthropic_up() -> Iterator[UpstreamServer]:
    with UpstreamServer("anthropic", api_key=UPSTREAM_KEYS["anthropic"]) as up:
        yield up


@pytest.fixture
def gemini_up() -> Iterator[UpstreamServer]:
    with UpstreamServer("gemini", api_key=UPSTREAM_KEYS["gemini"]) as up:
        yield up


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

"""A live Warden on loopback in front of loopback provider simulators."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.upstreams import UPSTREAM_KEYS
from warden.config import load_settings
from warden.testing.upstream import UpstreamServer

@pytest.fixture
def live_settings(tmp_path: Path):
    return load_settings(
        data_dir=tmp_path / "data", admin_key=ADMIN_KEY, access_log=False,
        upstream_connect_timeout=1.0, upstream_first_byte_timeout=1.0,
        upstream_stream_gap_timeout=1.0, request_deadline=20.0, max_retries=1,
        breaker_failures=3, breaker_window=30.0, breaker_cooldown=3.0,  # outlasts a loaded machine's calls
        approval_hold=1.0,  # a fuzzed decide that needs approval answers 'pending' soon
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

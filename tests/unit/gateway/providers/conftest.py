from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.support.providers import KEY

from warden.testing.upstream import UpstreamServer


@pytest.fixture(params=["openai", "anthropic", "gemini"])
async def up(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamServer]:
    """A loopback upstream of each wire format, requiring KEY."""
    async with UpstreamServer(request.param, api_key=KEY) as server:
        yield server


@pytest.fixture
async def openai_up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai", api_key=KEY) as server:
        yield server


@pytest.fixture
async def anthropic_up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("anthropic", api_key=KEY) as server:
        yield server


@pytest.fixture
async def gemini_up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("gemini", api_key=KEY) as server:
        yield server

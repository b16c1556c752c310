"""Fixtures for the shared-state contract: each backend under one fake clock.

The contract tests run against the memory backend and against real Redis at
``WARDEN_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/15), each test under
its own key prefix, removed afterwards.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_sync
from tests.support.state import (
    BREAKER,
    DEFAULT_REDIS_URL,
    FakeClock,
    RedisFactory,
    ThrowawayRedis,
    free_port,
)

from warden.state import MemoryState, StateStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_url() -> str:
    configured = os.environ.get("WARDEN_TEST_REDIS_URL")
    url = configured or DEFAULT_REDIS_URL
    try:
        redis_sync.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis_sync.RedisError as exc:
        if configured:
            pytest.fail(f"WARDEN_TEST_REDIS_URL is set but Redis does not answer: {exc}")
        pytest.skip(f"WARDEN_TEST_REDIS_URL is unset and no Redis answers at {DEFAULT_REDIS_URL}")
    return url


@pytest.fixture
async def redis_factory(redis_url: str, clock: FakeClock) -> AsyncIterator[RedisFactory]:
    factory = RedisFactory(redis_url, clock)
    yield factory
    await factory.cleanup()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        memory = MemoryState(clock=clock, breaker=BREAKER)
        yield memory
        await memory.close()
        return
    factory = RedisFactory(request.getfixturevalue("redis_url"), clock)
    yield factory()
    await factory.cleanup()


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    try:
        subprocess.run(["redis-server", "--version"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("redis-server binary not installed")
    server = ThrowawayRedis(free_port())
    server.start()
    yield server
    server.stop()

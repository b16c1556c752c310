"""Helpers shared by the shared-state tests (imported by conftest and tests)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis as redis_sync
from redis.asyncio import Redis

from warden.state import BreakerConfig
from warden.state.redis import RedisState

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
BREAKER = BreakerConfig(failures=3, window_s=10, cooldown_s=5)


class FakeClock:
    """Seconds that only move when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RedisFactory:
    """Builds RedisState instances that share one test-unique key prefix."""

    def __init__(self, url: str, clock: FakeClock | None) -> None:
        self.url = url
        self.clock = clock
        self.prefix = f"wt:{uuid.uuid4().hex[:12]}:"
        self._made: list[RedisState] = []

    def __call__(self, **options: Any) -> RedisState:
        options.setdefault("clock", self.clock)
        options.setdefault("breaker", BREAKER)
        store = RedisState.from_url(self.url, prefix=self.prefix, **options)
        self._made.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self._made:
            await store.close()
        client = Redis.from_url(self.url)
        keys = [k async for k in client.scan_iter(match=f"{self.prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], *, within_s: float = 5.0) -> None:
    """Wait for something another connection causes (pub/sub, a restart).

    Only bounds the wait so a broken test fails instead of hanging; nothing
    here asserts how fast it happened.
    """
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayRedis:
    """A private redis-server on loopback that tests may stop and start."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis_sync.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis_sync.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

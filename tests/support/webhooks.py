"""A loopback webhook receiver (an aiohttp server on 127.0.0.1) that records what it
gets and answers with scripted statuses, and services whose webhooks may reach it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tests.support.app import ADMIN_KEY
from warden.config import load_settings
from warden.services import Services


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)  # answered in order; then 200
    received: list[Received] = field(default_factory=list)
    port: int = 0
    delay_s: float = 0.0  # answer this late (a receiver that times out)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200, text="ok")

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.headers.get("x-warden-event") == event_type]


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield rec
    finally:
        await runner.cleanup()


async def hooked_services(data_dir: Path, **overrides: Any) -> Services:
    """Services whose webhooks may reach loopback, polled and retried quickly."""
    settings = dict(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False, egress_allow="127.0.0.1",
                    webhook_poll_interval=0.05, webhook_backoff=0.05, webhook_max_attempts=3, webhook_timeout=2)
    return await Services.start(load_settings(**{**settings, **overrides}))


async def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll an async or plain ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)

"""The approvals inbox's live stream over a real server (uvicorn on loopback): a new
held action is announced without a reload, and a browser that reconnects with the
last event's id hears at once of what changed while it was away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.agents import EchoTool, connect_provider, stream_chat, types_of
from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.console import sign_in

from warden.config import load_settings
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveWarden]:
    server = LiveWarden(load_settings(data_dir=tmp_path / "data", admin_key=ADMIN_KEY, access_log=False)).start()
    yield server
    server.stop()


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def _next_event(lines: AsyncIterator[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    async for line in lines:
        if not line:
            if "event" in fields:
                return fields
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    raise AssertionError("the stream ended")


async def test_a_new_approval_is_announced_and_a_reconnect_catches_up(live: LiveWarden,
                                                                      up: UpstreamServer) -> None:
    services = live.services
    assert services is not None
    live.call(connect_provider(services, up))
    services.tools.register(EchoTool())
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as browser, \
            httpx.AsyncClient(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"},
                              timeout=30) as api:
        await sign_in(browser, ADMIN_KEY)
        agent = (await api.post("/api/agents", json={"name": "mailer", "instructions": "x", "tools": ["echo"],
                                                     "tool_levels": {"echo": 2}})).json()
        async with browser.stream("GET", "/ui/approvals/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            hello = await _next_event(lines)
            assert (hello["event"], hello["data"]) == ("hello", "0")
            up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "mail"})]), Behaviour(text="sent"))
            events = await stream_chat(api, {"agent_id": agent["id"], "message": "send it"})
            assert types_of(events)[-1] == "run.paused"
            changed = await asyncio.wait_for(_next_event(lines), 10)
        assert (changed["event"], changed["data"]) == ("changed", "1")
        async with browser.stream("GET", "/ui/approvals/events", headers={"last-event-id": hello["id"]}) as again:
            caught_up = await asyncio.wait_for(_next_event(again.aiter_lines()), 10)
        async with browser.stream("GET", "/ui/approvals/events", headers={"last-event-id": changed["id"]}) as same:
            quiet = await asyncio.wait_for(_next_event(same.aiter_lines()), 10)
    assert (caught_up["event"], caught_up["id"]) == ("changed", changed["id"])
    assert quiet["event"] == "hello"

"""The spend writer's group commit: a row is in the database before the gateway hands
back the completed call (or ends its stream), on SQLite and PostgreSQL; a database
that is down bounds the wait and keeps the rows queued; ``commit_wait`` 0 is the old
batched writer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from warden.gateway.context import CallContext, RouteOptions
from warden.gateway.types import ChatRequest, Message
from warden.services import Services
from warden.store.db import Database
from warden.store.models import SpendRow
from warden.store.spend import SpendWriter
from warden.testing.upstream import UpstreamServer


def row(request_id: str) -> dict:
    return {"request_id": request_id, "workspace_id": "ws_durable", "api_key_id": None,
            "agent_id": None, "provider": "openai", "model": "gpt-4o-mini", "credential_id": None,
            "input_tokens": 3, "output_tokens": 4, "cache_read_tokens": 0, "cache_write_tokens": 0,
            "reasoning_tokens": 0, "cost_usd": Decimal("0.000001"), "latency_ms": 1.0,
            "ttft_ms": None, "attempts": 1, "status": "ok", "ts": datetime.now(UTC)}


async def in_ledger(db: Database, request_id: str) -> int:
    async with db.session() as s:
        q = select(func.count()).select_from(SpendRow).where(SpendRow.request_id == request_id)
        return (await s.execute(q)).scalar_one()


async def test_record_returns_what_resolves_once_the_row_is_committed(any_services: Services) -> None:
    db = any_services.db
    writer = SpendWriter(db, interval=60, commit_wait=5)  # the interval alone would wait a minute
    writer.start()
    try:
        first, second = writer.record(row("gc-1")), writer.record(row("gc-2"))
        assert first is not None and await first is True
        assert await in_ledger(db, "gc-1") == 1 and await in_ledger(db, "gc-2") == 1
        assert (await second) is True  # the same batch: one transaction
        many = [writer.record(row(f"gc-many-{i}")) for i in range(50)]
        assert all(await asyncio.gather(*many))  # type: ignore[arg-type]
    finally:
        await writer.close()


async def test_a_database_that_is_down_bounds_the_wait_and_keeps_the_rows(services: Services) -> None:
    broken = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    writer = SpendWriter(broken, interval=0.05, commit_wait=5)
    writer.start()
    try:
        committed = writer.record(row("down-1"))
        assert committed is not None and await committed is False  # tried, refused: not committed
        assert writer.dropped == 0
        writer.db = services.db  # the database is back: the queued row gets in
        again = writer.record(row("down-2"))
        assert again is not None and await again is True
    finally:
        await writer.close()
        await broken.close()
    assert await in_ledger(services.db, "down-1") == 1 and await in_ledger(services.db, "down-2") == 1


async def test_the_wait_never_outlasts_commit_wait_and_zero_is_batched(services: Services) -> None:
    writer = SpendWriter(services.db, commit_wait=0.05)  # not started: nothing writes
    committed = writer.record(row("late"))
    assert committed is not None and await committed is False
    assert await writer.flush() == 1 and await in_ledger(services.db, "late") == 1
    writer = SpendWriter(services.db, batch_size=2, interval=60, commit_wait=0)
    assert writer.record(row("batched-1")) is None
    assert await in_ledger(services.db, "batched-1") == 0  # queued until a batch fills
    await writer.close()
    assert await in_ledger(services.db, "batched-1") == 1


@pytest.fixture
async def gateway_ws(any_services: Services) -> AsyncIterator[str]:
    async with UpstreamServer("openai") as up:
        ws_id = (await any_services.accounts.workspace_by_name("default")).id
        await any_services.byok.create(ws_id, {"provider": "openai", "label": "a",
                                               "api_key": "sk-up-a-0123456789", "base_url": up.base_url,
                                               "models": [{"id": "gpt-4o-mini"}]}, actor="test")
        yield ws_id


def request(stream: bool = False) -> ChatRequest:
    return ChatRequest(model="openai/gpt-4o-mini", messages=[Message.text("user", "hello")],
                       stream=stream)


async def test_a_completed_call_is_in_the_ledger_when_it_returns(any_services: Services,
                                                                 gateway_ws: str) -> None:
    # The services' writer flushes on its own only once a second: no flush() here.
    await any_services.gateway.complete(request(), CallContext(gateway_ws, None, "done-call",
                                                              RouteOptions()))
    assert await in_ledger(any_services.db, "done-call") == 1


async def test_a_finished_stream_is_in_the_ledger_before_its_last_event(any_services: Services,
                                                                        gateway_ws: str) -> None:
    stream = await any_services.gateway.open_stream(
        request(stream=True), CallContext(gateway_ws, None, "done-stream", RouteOptions()))
    async for _ in stream:
        pass  # the generator's end: the renderer writes its closing frame after this
    assert await in_ledger(any_services.db, "done-stream") == 1

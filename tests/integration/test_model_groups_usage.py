"""Model groups API and usage summaries (SQLite and PostgreSQL), spend writer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from tests.support.app import client_for
from tests.support.envelope import assert_envelope
from warden.services import Services
from warden.store.spend import SpendWriter
from warden.tenancy.usage import summarize


async def test_model_group_crud_and_validation(client: httpx.AsyncClient, services: Services) -> None:
    r = await client.post("/api/model-groups", json={"name": "smart", "members": ["openai/gpt-4o"]})
    assert r.status_code == 201 and r.json()["members"] == ["openai/gpt-4o"]
    r = await client.put("/api/model-groups/smart",
                         json={"members": ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"]})
    assert r.json()["members"] == ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"]
    assert [g["name"] for g in (await client.get("/api/model-groups")).json()] == ["smart"]
    assert (await client.get("/api/model-groups/smart")).json()["name"] == "smart"
    ws = (await services.accounts.workspace_by_name("default")).id
    assert await services.model_groups.for_workspace(ws) == {
        "smart": ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"]}
    for body, param in (
        ({"name": "auto", "members": ["openai/gpt-4o"]}, "name"),
        ({"name": "a/b", "members": ["openai/gpt-4o"]}, "name"),
        ({"name": "x", "members": ["gpt-4o"]}, "members.0"),
        ({"name": "x", "members": ["nowhere/gpt-4o"]}, "members.0"),
        ({"name": "x", "members": ["openai/a", "openai/a"]}, "members"),
        ({"name": "x", "members": []}, "members"),
    ):
        assert_envelope(await client.post("/api/model-groups", json=body), 422,
                        "validation_error")["param"] == param
    assert (await client.delete("/api/model-groups/smart")).status_code == 204
    assert_envelope(await client.get("/api/model-groups/smart"), 404, "model_group_not_found")
    assert_envelope(await client.delete("/api/model-groups/smart"), 404, "model_group_not_found")
    assert await services.model_groups.for_workspace(ws) == {}


async def test_model_groups_need_admin_to_change(client: httpx.AsyncClient, services: Services) -> None:
    ws = (await services.accounts.workspace_by_name("default")).id
    member = await services.accounts.create_key(ws, "m")
    async with client_for(services, member.key) as c:
        assert (await c.get("/api/model-groups")).json() == []
        r = await c.post("/api/model-groups", json={"name": "g", "members": ["openai/gpt-4o"]})
        assert_envelope(r, 403, "admin_required")


def _row(ws: str, provider: str, model: str, cost: str | None, ts: datetime, status: str = "ok",
         key: str = "key_a") -> dict:
    return {"request_id": "r", "workspace_id": ws, "api_key_id": key, "agent_id": None,
            "provider": provider, "model": model, "credential_id": None, "input_tokens": 10,
            "output_tokens": 5, "cache_read_tokens": 1, "cache_write_tokens": 0,
            "reasoning_tokens": 2, "cost_usd": None if cost is None else Decimal(cost),
            "latency_ms": 1.5, "ttft_ms": None, "attempts": 1, "status": status, "ts": ts}


async def test_usage_grouping_and_time_filters(any_services: Services) -> None:
    svc = any_services
    ws = (await svc.accounts.workspace_by_name("default")).id
    day1 = datetime(2026, 11, 1, 23, 30, tzinfo=UTC)
    day2 = day1 + timedelta(hours=1)
    writer = SpendWriter(svc.db)
    for row in (
        _row(ws, "openai", "gpt-4o", "0.000000150000", day1),
        _row(ws, "openai", "gpt-4o", "0.000000250000", day2, key="key_b"),
        _row(ws, "local", "llm", None, day2),
        _row(ws, "openai", "gpt-4o", "0", day2, status="error:upstream_timeout"),
        _row("ws_other", "openai", "gpt-4o", "9", day2),
    ):
        writer.record(row)
    assert await writer.flush() == 5
    by_model = {r.group: r for r in await summarize(svc.db, ws, "model")}
    assert set(by_model) == {"openai/gpt-4o", "local/llm"}
    gpt = by_model["openai/gpt-4o"]
    assert (gpt.requests, gpt.errors, gpt.cost_usd, gpt.input_tokens) == (3, 1, Decimal("4E-7"), 30)
    assert by_model["local/llm"].unpriced_requests == 1 and by_model["local/llm"].cost_usd == 0
    days = {r.group: r.requests for r in await summarize(svc.db, ws, "day")}
    assert days == {"2026-11-01": 1, "2026-11-02": 3}
    keys = {r.group: r.requests for r in await summarize(svc.db, ws, "key")}
    assert keys == {"key_a": 3, "key_b": 1}
    later = await summarize(svc.db, ws, "provider", start=day2)
    assert sum(r.requests for r in later) == 3
    earlier = await summarize(svc.db, ws, "provider", end=day2)
    assert [(r.group, r.requests) for r in earlier] == [("openai", 1)]


async def test_usage_api_shape(client: httpx.AsyncClient, services: Services) -> None:
    ws = (await services.accounts.workspace_by_name("default")).id
    committed = services.spend.record(_row(ws, "openai", "gpt-4o", "0.5", datetime.now(UTC)))
    assert committed is not None and await committed  # as the gateway does before a reply ends
    body = (await client.get("/api/usage", params={"group_by": "provider"})).json()
    assert body["total_requests"] == 1 and Decimal(body["total_cost_usd"]) == Decimal("0.5")
    r = await client.get("/api/usage", params={"group_by": "week"})
    assert assert_envelope(r, 422, "validation_error")["param"] == "group_by"


async def test_spend_writer_keeps_rows_when_the_database_refuses(services: Services) -> None:
    from warden.store.db import Database

    broken = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    writer = SpendWriter(broken, max_pending=2, interval=0.01)
    writer.record(_row("w", "p", "m", "1", datetime.now(UTC)))
    writer.record(_row("w", "p", "m", "1", datetime.now(UTC)))
    writer.record(_row("w", "p", "m", "1", datetime.now(UTC)))  # over the bound: dropped, counted
    assert await writer.flush() == 0 and writer.dropped == 1
    writer.db = services.db  # the database is back
    writer.start()
    await writer.close()
    rows = await summarize(services.db, "w", "provider")
    assert rows[0].requests == 2
    await broken.close()


async def test_spend_writer_flushes_when_a_batch_fills(services: Services) -> None:
    import asyncio

    writer = SpendWriter(services.db, batch_size=3, interval=60)
    writer.start()
    for _ in range(3):
        writer.record(_row("w2", "p", "m", "1", datetime.now(UTC)))
    for _ in range(100):
        if (await summarize(services.db, "w2", "provider")):
            break
        await asyncio.sleep(0.02)
    assert (await summarize(services.db, "w2", "provider"))[0].requests == 3
    await writer.close()

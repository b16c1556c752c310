"""The fault suite, ledger part: a real ``warden serve`` is SIGKILLed in the middle of
a burst of non-stream and stream requests, started again on the same data, and then

- every request whose client received a complete response (a 200 with its JSON
  body; a stream up to ``[DONE]``) has exactly one spend row: none lost;
- no request has more than one row: none doubled;
- the budget counters (rebuilt from the ledger at start) equal the ledger's sum,
  before and after one more request.

On SQLite (the default) and on PostgreSQL (``WARDEN_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.app import ADMIN_KEY, PG_URL, requires_pg, reset_pg
from tests.support.serve import WardenProcess
from warden.store.db import Database
from warden.store.models import SpendRow
from warden.testing.upstream import Behaviour, UpstreamServer

UPSTREAM_KEY = "sk-up-openai-0123456789"
WORKERS = 16
KILL_AFTER_COMPLETED = 80  # and at least KILL_AFTER_S into the burst: the old writer
KILL_AFTER_S = 1.3  # flushed once a second, so rows of the last second were still queued
BURST_LIMIT_S = 40.0


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    # A little time between stream events, so streams are open when the kill comes.
    with UpstreamServer("openai", api_key=UPSTREAM_KEY, record=False,
                        default=Behaviour(token_delay=0.002)) as up:
        yield up


def body(n: int) -> dict:
    stream = n % 2 == 1
    out: dict = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": f"burst {n}"}]}
    if stream:
        out |= {"stream": True, "stream_options": {"include_usage": True}}
    return out


async def one(client: httpx.AsyncClient, n: int) -> bool:
    """Send request ``n``; True when its client received the complete response."""
    payload = body(n)
    headers = {"x-request-id": f"burst-{n}"}
    if not payload.get("stream"):
        r = await client.post("/v1/chat/completions", json=payload, headers=headers)
        return r.status_code == 200 and bool(r.json()["choices"][0]["message"]["content"])
    async with client.stream("POST", "/v1/chat/completions", json=payload, headers=headers) as r:
        if r.status_code != 200:
            return False
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                return True
    return False


async def burst(server: WardenProcess) -> tuple[set[str], int]:
    """Requests from WORKERS clients until the server is killed mid-way; returns the ids
    of the complete responses and how many requests were sent."""
    completed: set[str] = set()
    sent = 0
    killed = asyncio.Event()
    started = time.monotonic()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while not killed.is_set() and time.monotonic() - started < BURST_LIMIT_S:
            n = sent
            sent += 1
            try:
                if await one(client, n):
                    completed.add(f"burst-{n}")
            except (httpx.HTTPError, ValueError):
                if killed.is_set():
                    return
                raise

    async def killer() -> None:
        while len(completed) < KILL_AFTER_COMPLETED or time.monotonic() - started < KILL_AFTER_S:
            await asyncio.sleep(0.01)
        server.kill()
        killed.set()

    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits,
                                 headers={"authorization": f"Bearer {ADMIN_KEY}"}) as client:
        kill = asyncio.create_task(killer())
        await asyncio.gather(*(worker(client) for _ in range(WORKERS)))
        assert kill.done(), "the burst ended before the server was killed"
        await kill
    return completed, sent


async def ledger(url: str) -> dict[str, int]:
    """Spend rows per request id, read straight from the database."""
    db = Database(url)
    try:
        async with db.session() as s:
            q = select(SpendRow.request_id, func.count()).group_by(SpendRow.request_id)
            return {rid: count for rid, count in (await s.execute(q)).all()}
    finally:
        await db.close()


def budget_and_usage(server: WardenProcess) -> tuple[Decimal, Decimal, int]:
    with server.client() as admin:
        (budget,) = admin.get("/api/budgets").json()["budgets"]
        usage = admin.get("/api/usage").json()
    assert Decimal(budget["reserved_usd"]) == 0
    return Decimal(budget["spent_usd"]), Decimal(usage["total_cost_usd"]), usage["total_requests"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'warden.db'}"
    assert PG_URL
    await reset_pg(PG_URL)
    return PG_URL


async def test_kill9_mid_burst_loses_and_doubles_no_completed_request(
        tmp_path: Path, upstream: UpstreamServer, database: str) -> None:
    server = WardenProcess(tmp_path / "data", {"WARDEN_DATABASE_URL": database})
    server.start()
    try:
        with server.client() as admin:
            r = admin.post("/api/byok", json={"provider": "openai", "label": "main",
                                              "api_key": UPSTREAM_KEY, "base_url": upstream.base_url,
                                              "models": [{"id": "gpt-4o-mini"}]})
            assert r.status_code == 201, r.text
            r = admin.put("/api/budgets", json={"scope": "workspace", "period": "month",
                                                "limit_usd": "100"})
            assert r.status_code == 200, r.text

        completed, sent = await burst(server)
        assert server.proc is not None and server.proc.returncode == -9
        assert len(completed) >= KILL_AFTER_COMPLETED and sent > len(completed)
        kinds = {int(rid.removeprefix("burst-")) % 2 for rid in completed}
        assert kinds == {0, 1}  # both non-stream and stream requests completed

        server.start()  # same data dir and database: budgets are rebuilt from the ledger
        rows = await ledger(database)
        burst_rows = {rid: n for rid, n in rows.items() if rid.startswith("burst-")}
        lost = sorted(completed - burst_rows.keys())
        doubled = sorted(rid for rid, n in burst_rows.items() if n > 1)
        assert (lost, doubled) == ([], []), f"{len(lost)} of {len(completed)} lost"

        spent, cost, requests = budget_and_usage(server)
        assert requests == len(burst_rows) and cost > 0
        assert spent == cost  # the budget counter is the ledger's sum, nothing twice
        with server.client() as admin:
            r = admin.post("/v1/chat/completions", json=body(0), headers={"x-request-id": "after"})
            assert r.status_code == 200
        spent_after, cost_after, _ = budget_and_usage(server)
        assert spent_after == cost_after > cost
    finally:
        server.stop()

"""Budgets survive a restart of the embedded state (issue 13, item 3).

The in-process state store starts empty; at start every budget's counter of the
current period is rebuilt from the spend ledger, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from tests.support.app import ADMIN_KEY, PG_URL, client_for, requires_pg, reset_pg
from warden.config import Settings, load_settings
from warden.gateway.limits import Budget
from warden.services import Services
from warden.tenancy.budgets import BudgetSpec
from warden.state.base import to_pico
from warden.state.memory import MemoryState
from warden.store.models import SpendRow
from warden.testing.upstream import DEFAULT_TEXT, UpstreamServer

OUTPUT_TOKENS = len(DEFAULT_TEXT.split())
COST = Decimal("0.001") * OUTPUT_TOKENS  # prompt free, max_tokens = the real output
BODY = {"model": "openai/gpt-4o-mini", "max_tokens": OUTPUT_TOKENS,
        "messages": [{"role": "user", "content": "count me"}]}
ADMITTED = 7


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def config(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = None
    if request.param == "postgresql":
        await reset_pg(PG_URL)
        url = PG_URL
    return load_settings(data_dir=tmp_path / "data", admin_key=ADMIN_KEY, database_url=url,
                         access_log=False)


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai") as up:
        yield up


class Restartable:
    """The services of one data dir, stopped and started like a process."""

    def __init__(self, config: Settings) -> None:
        self.config = config
        self.svc: Services | None = None

    async def start(self) -> Services:
        self.svc = await Services.start(self.config)
        return self.svc

    async def restart(self) -> Services:
        await self.svc.close()  # graceful: the spend writer flushes what it holds
        return await self.start()


@pytest.fixture
async def process(config: Settings) -> AsyncIterator[Restartable]:
    proc = Restartable(config)
    await proc.start()
    yield proc
    await proc.svc.close()


async def chat(svc: Services, key: str = ADMIN_KEY) -> httpx.Response:
    async with client_for(svc, key=key) as c:
        return await c.post("/v1/chat/completions", json=BODY)


async def test_a_total_budget_still_refuses_after_a_restart(process: Restartable,
                                                            upstream: UpstreamServer) -> None:
    async with client_for(process.svc) as c:
        r = await c.post("/api/byok", json={"provider": "openai", "api_key": "sk-up-0123456789",
                                            "base_url": upstream.base_url, "models": [
                                                {"id": "gpt-4o-mini", "input_price": 0, "output_price": 1000}]})
        assert r.status_code == 201, r.text
        r = await c.put("/api/budgets", json={"scope": "workspace", "period": "total",
                                              "limit_usd": str(COST * ADMITTED)})
        assert r.status_code == 200, r.text
    for _ in range(ADMITTED):
        assert (await chat(process.svc)).status_code == 200
    refused = await chat(process.svc)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "budget_exceeded")

    # A request that held a reservation when its process died: it wrote no ledger row.
    ws = (await process.svc.accounts.workspace_by_name("default")).id
    scope = Budget("workspace", ws, "total", COST * ADMITTED).counter(ws, datetime.now(UTC))
    await process.svc.state.reserve([scope], to_pico(COST), "died-mid-request")

    svc = await process.restart()
    r = await chat(svc)
    assert r.status_code == 429, "the restart gave the spent budget back"
    assert r.json()["error"]["code"] == "budget_exceeded"
    assert len(upstream.requests) == ADMITTED  # nothing more reached the provider
    async with client_for(svc) as c:
        [status] = (await c.get("/api/budgets")).json()["budgets"]
    assert Decimal(status["spent_usd"]) == COST * ADMITTED
    assert Decimal(status["reserved_usd"]) == 0 and Decimal(status["remaining_usd"]) == 0


async def test_each_scope_counts_its_own_rows_of_the_current_period(process: Restartable) -> None:
    svc = process.svc
    ws = (await svc.accounts.workspace_by_name("default")).id
    now = datetime.now(UTC)
    async with client_for(svc) as c:
        key = (await c.post("/api/keys", json={"name": "bot"})).json()["id"]
        agent = (await c.post("/api/agents", json={"name": "helper", "instructions": "Help."})).json()["id"]
        for body in ({"scope": "workspace", "period": "day"}, {"scope": "workspace", "period": "total"},
                     {"scope": "key", "scope_id": key, "period": "month"},
                     {"scope": "agent", "scope_id": agent, "period": "total"}):
            assert (await c.put("/api/budgets", json={**body, "limit_usd": "100"})).status_code == 200
    yesterday = now - timedelta(days=1, hours=1)
    rows = [  # (when, api key, agent, cost)
        (now, key, None, "1.000000000001"), (now, None, agent, "0.25"), (now, None, None, "2"),
        (yesterday, key, agent, "10"), (now, None, None, None),  # unknown cost: adds nothing
    ]
    async with svc.db.transaction() as s:
        await s.execute(insert(SpendRow), [
            {"ts": ts, "request_id": f"r{i}", "workspace_id": ws, "api_key_id": k, "agent_id": a,
             "cost_usd": None if cost is None else Decimal(cost), "status": "ok"}
            for i, (ts, k, a, cost) in enumerate(rows)])
    svc = await process.restart()
    async with client_for(svc) as c:
        listed = (await c.get("/api/budgets")).json()["budgets"]
    got = {(b["scope"], b["period"]): Decimal(b["spent_usd"]) for b in listed}
    month_is_new = yesterday.month != now.month
    assert got == {
        ("workspace", "day"): Decimal("3.250000000001"),
        ("workspace", "total"): Decimal("13.250000000001"),
        ("key", "month"): Decimal("1.000000000001") + (0 if month_is_new else 10),
        ("agent", "total"): Decimal("10.25"),
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(costs=st.lists(st.decimals(min_value=0, max_value=1000, places=12), max_size=12))
async def test_the_rebuilt_counter_is_what_the_live_one_charged(process: Restartable,
                                                                costs: list[Decimal]) -> None:
    """The money invariant: whatever was settled, the counter rebuilt from the ledger
    is exactly (to the pico-dollar) the one the live process held; so a restart never
    gives back money that was spent."""
    svc = process.svc
    ws = (await svc.accounts.workspace_by_name("default")).id
    key = (await svc.accounts.create_key(ws, f"k{uuid.uuid4().hex[:8]}", "member")).id
    await svc.budgets.put(ws, BudgetSpec(scope="key", scope_id=key, period="total", limit_usd=10**9))
    live = MemoryState()
    counter = Budget("key", key, "total", Decimal(10**9)).counter(ws, datetime.now(UTC))
    for i, cost in enumerate(costs):
        rid = f"{key}:{i}"
        assert (await live.reserve([counter], to_pico(cost), rid)).ok
        await live.settle(rid, to_pico(cost))
        svc.spend.record({"request_id": rid, "workspace_id": ws, "api_key_id": key,
                          "cost_usd": cost, "status": "ok"})
    await svc.spend.flush()
    [(scope, spent)] = [(c, v) for c, v in await svc.budgets.ledger_counters() if c.key == counter.key]
    assert scope == counter and spent == (await live.usage(counter.key)).spent_pico
    restored = MemoryState()
    restored.restore_spent(scope, spent)
    assert await restored.usage(counter.key) == await live.usage(counter.key)

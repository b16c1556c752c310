"""Several usage groupings from one query (``summarize_each``), as the console's
overview reads them, on SQLite and PostgreSQL: the same rows as ``summarize`` per
grouping, and the overview's day and month totals from them."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.support.console import console_client
from warden.services import Services
from warden.store.spend import SpendWriter
from warden.tenancy.usage import summarize, summarize_each


def _row(ws: str, provider: str, model: str | None, cost: str | None, ts: datetime, *, status: str = "ok",
         key: str = "key_a", agent: str | None = None) -> dict:
    return {"request_id": "r", "workspace_id": ws, "api_key_id": key, "agent_id": agent,
            "provider": provider, "model": model, "credential_id": None, "input_tokens": 10,
            "output_tokens": 5, "cache_read_tokens": 1, "cache_write_tokens": 0,
            "reasoning_tokens": 2, "cost_usd": None if cost is None else Decimal(cost),
            "latency_ms": 1.5, "ttft_ms": None, "attempts": 1, "status": status, "ts": ts}


async def _write(services: Services, rows: list[dict]) -> None:
    writer = SpendWriter(services.db)
    for row in rows:
        writer.record(row)
    assert await writer.flush() == len(rows)


async def test_each_grouping_is_what_summarize_gives_alone(any_services: Services) -> None:
    svc = any_services
    ws = (await svc.accounts.workspace_by_name("default")).id
    day1 = datetime(2026, 11, 1, 23, 30, tzinfo=UTC)
    day2 = day1 + timedelta(hours=1)
    await _write(svc, [
        _row(ws, "openai", "gpt-4o", "0.000000150000", day1),
        _row(ws, "openai", "gpt-4o", "0.000000250000", day2, key="key_b"),
        _row(ws, "openai", "gpt-4o-mini", "0.1", day2, key="key_b"),
        _row(ws, "local", None, None, day2),
        _row(ws, "openai", "gpt-4o", "0", day2, status="error:upstream_timeout"),
        _row(ws, "anthropic", "claude", "0.3", day2, agent="ag_1"),
        _row("ws_other", "openai", "gpt-4o", "9", day2),
    ])
    groupings = ("model", "provider", "key", "agent", "day")
    for start in (None, day2):
        each = await summarize_each(svc.db, ws, groupings, start)
        assert set(each) == set(groupings)
        for by in groupings:
            alone = {r.group: r for r in await summarize(svc.db, ws, by, start)}  # type: ignore[arg-type]
            assert {r.group: r for r in each[by]} == alone, by
    each = await summarize_each(svc.db, ws, groupings)
    assert [r.group for r in each["agent"]] == [None, "ag_1"]
    assert [r.group for r in each["model"]] == ["anthropic/claude", "local", "openai/gpt-4o", "openai/gpt-4o-mini"]
    assert [(r.group, r.requests, r.errors) for r in each["day"]] == [("2026-11-01", 1, 0), ("2026-11-02", 5, 1)]
    assert sum((r.cost_usd for r in each["provider"]), Decimal(0)) == Decimal("0.4000004")
    assert each["provider"][1].group == "local" and each["provider"][1].unpriced_requests == 1


async def test_cost_totals_are_exact_to_the_pico_over_many_rows(any_services: Services) -> None:
    """Thousands of costs with all twelve decimals: the totals are their exact Decimal sum
    on both databases (SQLite stores REALs; a float SUM was off in the 11th decimal)."""
    svc = any_services
    ws = (await svc.accounts.workspace_by_name("default")).id
    rng = random.Random(7)
    costs = [Decimal(rng.randrange(1, 10**13)).scaleb(-12) for _ in range(5000)]
    at = datetime(2026, 11, 2, 12, tzinfo=UTC)
    await _write(svc, [_row(ws, "openai", "gpt-4o", str(c), at, key=f"key_{i % 3}") for i, c in enumerate(costs)])
    exact = sum(costs, Decimal(0))
    for by in ("model", "key", "day"):
        got = await summarize(svc.db, ws, by)  # type: ignore[arg-type]
        assert sum((r.cost_usd for r in got), Decimal(0)) == exact, by
    each = await summarize_each(svc.db, ws, ("model", "key"))
    assert each["model"][0].cost_usd == exact
    assert [r.cost_usd for r in each["key"]] == [sum(costs[k::3], Decimal(0)) for k in range(3)]


def _stat(html: str, id_: str) -> str:
    found = re.search(rf'id="{id_}">([^<]+)<', html)
    assert found, id_
    return found.group(1)


async def test_the_overview_sums_today_and_this_month(any_services: Services) -> None:
    svc = any_services
    ws = (await svc.accounts.workspace_by_name("default")).id
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    await _write(svc, [
        _row(ws, "openai", "gpt-4o", "1.25", now),
        _row(ws, "openai", "gpt-4o", "2.5", month_start + timedelta(seconds=1), key="key_b"),
        _row(ws, "openai", "gpt-4o", "40", month_start - timedelta(seconds=1)),  # last month: in neither
        _row("ws_other", "openai", "gpt-4o", "80", now),
    ])
    async with console_client(svc) as (c, _):
        page = (await c.get("/ui/")).text
    first_day = now.day == 1  # then the month's first row is today's too
    assert _stat(page, "spend-today") == ("$3.75" if first_day else "$1.25")
    assert _stat(page, "spend-month") == "$3.75"
    assert "openai/gpt-4o" in page and "key_b" in page

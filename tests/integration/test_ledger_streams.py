"""A stream that fails or is cut short mid-way is recorded as what was streamed: the
prompt estimate and the output tokens counted from the streamed text (or the
provider's usage when it arrived), priced, and the budget charged that same cost,
so ``/api/usage`` and ``/api/budgets`` agree. Through the real app: a provider
error event, a dropped upstream connection, and a client that disconnects."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import httpx
import orjson
import pytest

from tests.support.app import ADMIN_KEY, LiveWarden, client_for
from warden.config import Settings
from warden.gateway.context import CallContext, RouteOptions
from warden.gateway.types import ChatRequest, Message, TextDelta
from warden.services import Services
from warden.testing.upstream import Behaviour, UpstreamServer

UPSTREAM_KEY = "sk-up-openai-0123456789"
PRICE_IN, PRICE_OUT = 100, 1000  # USD per million tokens
BODY = {"model": "openai/gpt-4o-mini", "stream": True,
        "messages": [{"role": "user", "content": "tell me a long story please"}]}


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEY) as up:
        yield up


async def configure(c: httpx.AsyncClient, up: UpstreamServer) -> None:
    r = await c.post("/api/byok", json={
        "provider": "openai", "label": "main", "api_key": UPSTREAM_KEY, "base_url": up.base_url,
        "models": [{"id": "gpt-4o-mini", "input_price": PRICE_IN, "output_price": PRICE_OUT}]})
    assert r.status_code == 201, r.text
    r = await c.put("/api/budgets", json={"scope": "workspace", "period": "month", "limit_usd": "10"})
    assert r.status_code == 200, r.text


def streamed_tokens(lines: list[str]) -> int:
    """Output tokens as the gateway counts streamed text: a quarter per character, at
    least one per piece."""
    total = 0
    for line in lines:
        if not line.startswith("data: {"):
            continue
        for choice in orjson.loads(line[6:]).get("choices", []):
            text = (choice.get("delta") or {}).get("content")
            if text:
                total += max(1, math.ceil(len(text) / 4))
    return total


async def ledger_and_budget(c: httpx.AsyncClient, *, settled: bool = True) -> tuple[dict, Decimal]:
    usage = (await c.get("/api/usage")).json()
    (budget,) = (await c.get("/api/budgets")).json()["budgets"]
    if settled:
        assert Decimal(budget["reserved_usd"]) == 0
    elif Decimal(budget["reserved_usd"]):
        return {"total_requests": 0}, Decimal(0)  # not settled yet
    return usage, Decimal(budget["spent_usd"])


def assert_priced(row: dict, output_tokens: int) -> None:
    assert row["output_tokens"] == output_tokens > 0 and row["input_tokens"] > 0
    expected = (Decimal(row["input_tokens"]) * PRICE_IN + Decimal(output_tokens) * PRICE_OUT) / 10**6
    assert Decimal(row["cost_usd"]) == expected


@pytest.fixture
async def api(services: Services, upstream: UpstreamServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(services) as c:
        await configure(c, upstream)
        yield c


@pytest.mark.parametrize("fault", [Behaviour(stream_error="server_error", fault_after=4),
                                   Behaviour(drop_after=4)], ids=["error_event", "dropped"])
async def test_stream_failing_midway_is_priced_as_streamed(api: httpx.AsyncClient,
                                                           upstream: UpstreamServer,
                                                           fault: Behaviour) -> None:
    upstream.enqueue(fault)
    async with api.stream("POST", "/v1/chat/completions", json=BODY) as r:
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines()]
    assert "data: [DONE]" not in lines and any('"error"' in line for line in lines)
    usage, spent = await ledger_and_budget(api)
    (row,) = usage["rows"]
    assert (row["requests"], row["errors"]) == (1, 1)
    assert_priced(row, streamed_tokens(lines))
    assert spent == Decimal(usage["total_cost_usd"]) == Decimal(row["cost_usd"])


async def test_client_disconnecting_midstream_is_priced_as_streamed(
        settings: Settings, upstream: UpstreamServer) -> None:
    upstream.enqueue(Behaviour(token_delay=0.2, text=" ".join(["word"] * 50)))
    live = LiveWarden(settings).start()
    try:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=live.url, headers=headers, timeout=30) as c:
            await configure(c, upstream)
            lines: list[str] = []
            async with c.stream("POST", "/v1/chat/completions", json=BODY) as r:
                async for line in r.aiter_lines():
                    lines.append(line)
                    if streamed_tokens(lines) >= 3:
                        break  # leaving the block closes the connection mid-stream
            for _ in range(200):  # the server notices the disconnect, then settles and meters
                usage, spent = await ledger_and_budget(c, settled=False)
                if usage["total_requests"]:
                    break
                await asyncio.sleep(0.05)
        (row,) = usage["rows"]
        assert row["requests"] == 1 and 3 <= row["output_tokens"] < 50
        assert_priced(row, row["output_tokens"])
        assert spent == Decimal(usage["total_cost_usd"]) == Decimal(row["cost_usd"])
    finally:
        live.stop()


async def test_provider_usage_that_arrived_before_the_failure_is_kept(services: Services) -> None:
    async with UpstreamServer("anthropic") as up:
        ws = (await services.accounts.workspace_by_name("default")).id
        await services.byok.create(ws, {"provider": "anthropic", "label": "a",
                                        "api_key": "sk-ant-up-0123456789", "base_url": up.base_url,
                                        "models": [{"id": "claude-haiku-4-5"}]}, actor="test")
        req = ChatRequest(model="anthropic/claude-haiku-4-5",
                          messages=[Message.text("user", "a prompt of a few words " * 20)])
        _, whole = await services.gateway.complete(req, CallContext(ws, None, "whole", RouteOptions()))
        up.enqueue(Behaviour(stream_error="overloaded_error", fault_after=4))
        stream = await services.gateway.open_stream(req, CallContext(ws, None, "cut", RouteOptions()))
        texts = [e.text async for e in stream if isinstance(e, TextDelta)]
    usage = stream.info.usage  # message_start carried the exact input count: kept, not estimated
    assert usage.input_tokens == whole.usage.input_tokens > 0
    # ... and an output count of 1, which the streamed text outgrew.
    assert usage.output_tokens == sum(max(1, math.ceil(len(t) / 4)) for t in texts) > 1
    assert stream.info.cost_usd == services.gateway.catalog.cost("anthropic", "claude-haiku-4-5", usage)

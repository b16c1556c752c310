"""Limits hold across two instances sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx

from tests.support.app import ADMIN_KEY
from tests.scaleout.conftest import UPSTREAM_KEY, add_credential, pytestmark  # noqa: F401
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, UpstreamServer

OUTPUT_TOKENS = len(DEFAULT_TEXT.split())
# $1000 per million output tokens, prompt free: a request's real cost is exactly
# OUTPUT_TOKENS * $0.001, and with max_tokens = OUTPUT_TOKENS its reservation is too.
PRICED = [{"id": "gpt-4o-mini", "input_price": 0, "output_price": 1000}]
COST = Decimal("0.001") * OUTPUT_TOKENS
BODY = {"model": "openai/gpt-4o-mini", "max_tokens": OUTPUT_TOKENS,
        "messages": [{"role": "user", "content": "count me"}]}


async def burst(urls: list[str], key: str, n: int, body: dict = BODY) -> list[httpx.Response]:
    """``n`` concurrent completions spread round-robin over the instances."""
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30,
                                 limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*(client.post(f"{urls[i % len(urls)]}/v1/chat/completions",
                                                  json=body) for i in range(n)))


async def test_budget_of_k_requests_admits_exactly_k_over_both(cluster, upstream) -> None:
    a, b = cluster
    k = 10
    with a.client() as admin:
        add_credential(admin, upstream, label="main", models=PRICED)
        r = admin.put("/api/budgets", json={"scope": "workspace", "period": "month",
                                            "limit_usd": str(COST * k)})
        assert r.status_code == 200, r.text
    replies = await burst([a.url, b.url], ADMIN_KEY, 64)
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert len(ok) == k
    assert {(r.status_code, r.json()["error"]["code"]) for r in refused} == {(429, "budget_exceeded")}
    assert all(r.json()["error"]["type"] == "insufficient_quota" for r in refused)
    assert {r.headers["x-warden-cost-usd"] for r in ok} == {str(COST)}
    assert len(upstream.requests) == k  # refused requests never reached the provider
    with b.client() as admin:
        budgets = admin.get("/api/budgets").json()["budgets"]
        usage = admin.get("/api/usage", params={"group_by": "model"}).json()
    (ws_budget,) = budgets
    assert Decimal(ws_budget["spent_usd"]) == COST * k == Decimal(ws_budget["limit_usd"])
    assert Decimal(ws_budget["reserved_usd"]) == 0 and Decimal(ws_budget["remaining_usd"]) == 0
    # The usage endpoint flushes only its own instance's queue: wait for the other's batch.
    for _ in range(50):
        if usage["total_requests"] == k:
            break
        time.sleep(0.1)
        with b.client() as admin:
            usage = admin.get("/api/usage", params={"group_by": "model"}).json()
    assert usage["total_requests"] == k and Decimal(usage["total_cost_usd"]) == COST * k


async def test_rpm_limit_admits_exactly_n_across_both(cluster, upstream) -> None:
    a, b = cluster
    n = 7
    with a.client() as admin:
        add_credential(admin, upstream, label="main", models=PRICED)
        r = admin.post("/api/keys", json={"name": "limited", "rpm_limit": n})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
    replies = await burst([a.url, b.url], key, 64)
    ok = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert len(ok) == n and len(upstream.requests) == n
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limit_exceeded"}
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok + refused} == {str(n)}
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(n))


async def test_breaker_opened_through_one_instance_keeps_the_other_away(cluster, upstream) -> None:
    a, b = cluster
    with UpstreamServer("openai", api_key=UPSTREAM_KEY, default=Behaviour(status=503)) as dead:
        with a.client() as admin:
            add_credential(admin, dead, label="dead", models=[{"id": "gpt-4o"}])
            add_credential(admin, upstream, label="good", models=[{"id": "gpt-4o-mini"}])
        body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                "warden": {"fallbacks": ["openai/gpt-4o-mini"]}}
        with b.client() as client_b, a.client() as client_a:
            # B sees the deployment healthy first (one failure, then failover) ...
            first = client_b.post("/v1/chat/completions", json=body)
            assert first.status_code == 200 and first.headers["x-warden-attempts"] == "2"
            # ... then A's failures open its breaker (3 failures in the window).
            for _ in range(2):
                assert client_a.post("/v1/chat/completions", json=body).status_code == 200
            assert len(dead.requests) == 3
            time.sleep(1.0)  # "skipped by all within a second"
            for _ in range(5):
                r = client_b.post("/v1/chat/completions", json=body)
                assert r.status_code == 200 and r.headers["x-warden-model"] == "gpt-4o-mini"
                assert r.headers["x-warden-attempts"] == "1"
        assert len(dead.requests) == 3  # instance B sent nothing more to the dead deployment


async def test_key_revoked_on_one_is_refused_by_the_other_within_5s(cluster, upstream) -> None:
    a, b = cluster
    with a.client() as admin:
        add_credential(admin, upstream, label="main", models=PRICED)
        created = admin.post("/api/keys", json={"name": "soon-revoked"}).json()
    with b.client(created["key"]) as client_b:
        assert client_b.get("/v1/models").status_code == 200  # B caches the key (TTL 60 s)
        with a.client() as admin:
            assert admin.delete(f"/api/keys/{created['id']}").status_code == 200
        deadline = time.monotonic() + 5.0
        status = 200
        while status == 200 and time.monotonic() < deadline:
            status = client_b.get("/v1/models").status_code
            if status == 200:
                time.sleep(0.05)
        assert status == 401
        assert client_b.get("/v1/models").json()["error"]["code"] == "invalid_api_key"

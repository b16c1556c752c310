"""Failover against the simulator: an outage of the OpenAI-format upstream costs
each request a bounded number of attempts, traffic is back on the cheapest
model within one endpoint cooldown of recovery, and no request ends on a step
the cost guard forbids.

Time that matters to the decisions (breaker cooldowns, health decay) runs on a
fake clock shared by the state store and the health tracker; only the HTTP
calls themselves take real time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.support.state import FakeClock

from warden.gateway.catalog import get_catalog
from warden.gateway.context import CallContext, RouteOptions
from warden.gateway.errors import ProviderError
from warden.gateway.gateway import Gateway, GatewayConfig
from warden.gateway.health import HealthTracker
from warden.gateway.types import ChatRequest, Message
from warden.services import Services
from warden.state import MemoryState
from warden.state.base import BreakerConfig
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, UpstreamServer

# Models of the main OpenAI-format host, cheapest first for "hi" (catalog prices);
# the other host serves gpt-4.1-nano (about the price of gpt-5-nano, rated lower).
CHEAP_HOST = ["gpt-5-nano", "gpt-4o-mini", "gpt-5-mini", "gpt-4o", "o3-pro"]
COOLDOWN_S = 5.0  # the endpoint cooldown: traffic is back at most this long after recovery


@pytest.fixture
async def main_up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
async def other_up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def ws(services: Services, main_up: UpstreamServer, other_up: UpstreamServer) -> str:
    ws_id = (await services.accounts.workspace_by_name("default")).id
    await services.byok.create(ws_id, {"provider": "openai", "label": "main", "api_key": "sk-main-0123456789",
                                       "base_url": main_up.base_url,
                                       "models": [{"id": m} for m in CHEAP_HOST]}, actor="test")
    await services.byok.create(ws_id, {"provider": "openai", "label": "other", "api_key": "sk-other-0123456789",
                                       "base_url": other_up.base_url,
                                       "models": [{"id": "gpt-4.1-nano"}]}, actor="test")
    return ws_id


def gateway(services: Services, clock: FakeClock, **config: Any) -> Gateway:
    """The gateway as services builds it, on a fake-clocked state store and tracker."""
    return Gateway(credentials=services.byok.cache.resolved_credentials,
                   groups=services.model_groups.for_workspace,
                   state=MemoryState(clock=clock, breaker=BreakerConfig(5, 30.0, 15.0)),
                   catalog=get_catalog(), spend=lambda row: None,
                   config=GatewayConfig(backoff_base_s=0.001, backoff_cap_s=0.002,
                                        endpoint_cooldown_s=COOLDOWN_S, **config),
                   health=HealthTracker(clock=clock))


def hi(model: str = "auto") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message.text("user", "hi")])


def ctx(ws: str, **options: Any) -> CallContext:
    return CallContext(ws, None, "req-failover", RouteOptions(**options))


def model_of(up: UpstreamServer) -> str:
    return up.last.body["model"]


async def test_outage_costs_each_request_at_most_three_attempts_on_the_dead_host(
        services: Services, ws: str, main_up: UpstreamServer, other_up: UpstreamServer,
        clock: FakeClock) -> None:
    gw = gateway(services, clock)
    assert (await gw.plan(hi(), ctx(ws))).steps[0].deployment.model == "gpt-5-nano"
    await main_up.go_down()

    # Only the dead host can serve these: the request gives up on it after one try
    # instead of walking its five models three times each.
    fallbacks = [f"openai/{m}" for m in CHEAP_HOST[1:]]
    with pytest.raises(ProviderError) as exc:
        await gw.complete(hi("openai/gpt-5-nano"), ctx(ws, fallbacks=fallbacks,
                                                          max_fallback_cost_factor=math.inf))
    assert exc.value.code == "upstream_unreachable" and exc.value.attempts == 1
    assert exc.value.envelope()["error"]["attempts"] == 1
    assert exc.value.headers["x-warden-attempts"] == "1"
    assert other_up.requests == []

    # Outage continues: auto goes to the other host, the dead one costs at most one try.
    for _ in range(3):
        resp, info = await gw.complete(hi(), ctx(ws))
        assert resp.text == DEFAULT_TEXT and info.model == "gpt-4.1-nano" and info.fallback
        assert info.attempts - 1 <= 3  # attempts on the dead host, the other answered once
    assert len(other_up.requests) == 3
    clock.advance(3.0)
    await main_up.come_back()

    # Within one cooldown of recovery the next request probes the cheap model, and stays.
    clock.advance(COOLDOWN_S)
    served = []
    for _ in range(3):
        resp, info = await gw.complete(hi(), ctx(ws))
        served.append(info.model)
    assert served == ["gpt-5-nano"] * 3
    assert [r.body["model"] for r in main_up.requests] == ["gpt-5-nano"] * 3
    assert info.attempts == 1 and not info.fallback


async def test_a_bounded_walk_over_a_flaky_host(services: Services, ws: str, main_up: UpstreamServer,
                                                other_up: UpstreamServer, clock: FakeClock) -> None:
    """Host answers 503 to everything: per-endpoint and per-plan bounds hold."""
    gw = gateway(services, clock, max_attempts=4, endpoint_max_attempts=2)
    main_up.enqueue(*[Behaviour(status=503)] * 10)
    other_up.enqueue(*[Behaviour(status=503)] * 10)
    fallbacks = [f"openai/{m}" for m in CHEAP_HOST[1:]] + ["openai/gpt-4.1-nano"]
    with pytest.raises(ProviderError) as exc:
        await gw.complete(hi("openai/gpt-5-nano"), ctx(ws, fallbacks=fallbacks,
                                                          max_fallback_cost_factor=math.inf))
    assert exc.value.code == "upstream_overloaded"
    assert len(main_up.requests) == 2 and len(other_up.requests) == 2 and exc.value.attempts == 4


async def test_failover_never_escalates_past_the_cost_guard(
        services: Services, ws: str, main_up: UpstreamServer, other_up: UpstreamServer,
        clock: FakeClock) -> None:
    gw = gateway(services, clock, max_attempts=20, endpoint_max_attempts=20)
    plan = await gw.plan(hi(), ctx(ws))
    allowed = {s.deployment.model for s in plan.steps}
    assert allowed == {"gpt-5-nano", "gpt-4o-mini", "gpt-4.1-nano"}
    assert plan.cost_guard is not None and plan.cost_guard.max_factor == 4.0
    held = {who.rsplit(":", 1)[1] for who, why in plan.rejected if why.startswith("cost guard")}
    assert held == {"gpt-5-mini", "gpt-4o", "o3-pro"}

    # Every model of both hosts fails: the walk ends without touching a forbidden one.
    main_up.default = other_up.default = Behaviour(status=503)
    with pytest.raises(ProviderError):
        await gw.complete(hi(), ctx(ws))
    tried = {r.body["model"] for r in [*main_up.requests, *other_up.requests]}
    assert tried == allowed

    # A fallback the request names is its own choice: it may end there, and says so.
    main_up.default = other_up.default = Behaviour()
    main_up.enqueue(Behaviour(status=400, error_type="context_length_exceeded"))
    resp, info = await gw.complete(hi("openai/gpt-5-nano"), ctx(ws, fallbacks=["openai/gpt-4o"]))
    assert info.model == "gpt-4o" and info.fallback
    assert info.cost_factor is not None and info.cost_factor > 4
    # So may any fallback once the request raises the factor.
    main_up.enqueue(*[Behaviour(status=503)] * 3)
    _, info = await gw.complete(hi("gpt-5-nano"), ctx(ws, fallbacks=["o3-pro"], max_fallback_cost_factor=10_000))
    assert info.model == "o3-pro" and info.cost_factor is not None and info.cost_factor > 100


async def test_a_lost_probe_is_retried_after_another_cooldown(
        services: Services, ws: str, main_up: UpstreamServer, clock: FakeClock) -> None:
    gw = gateway(services, clock)
    await main_up.go_down()
    _, info = await gw.complete(hi(), ctx(ws, max_fallback_cost_factor=math.inf))
    assert info.model == "gpt-4.1-nano"
    clock.advance(COOLDOWN_S)
    # Still down at the probe: it fails over within the bound and re-opens the endpoint.
    _, info = await gw.complete(hi(), ctx(ws, max_fallback_cost_factor=math.inf))
    assert info.model == "gpt-4.1-nano" and info.attempts == 2
    await main_up.come_back()
    _, info = await gw.complete(hi(), ctx(ws, max_fallback_cost_factor=math.inf))
    assert info.model == "gpt-4.1-nano" and info.attempts == 1  # not yet: a cooldown is running
    clock.advance(COOLDOWN_S)
    _, info = await gw.complete(hi(), ctx(ws))
    assert info.model == "gpt-5-nano"
    await asyncio.sleep(0)


async def test_a_workspace_may_allow_pricier_failover(services: Services, ws: str) -> None:
    """The operator's per-workspace factor (PUT /api/workspaces/{id}/limits) replaces the
    server's setting for that workspace's plans; null gives the setting back."""
    from tests.support.app import client_for

    async with client_for(services) as admin:
        r = await admin.put(f"/api/workspaces/{ws}/limits", json={"max_fallback_cost_factor": 10_000})
        assert r.status_code == 200 and r.json()["max_fallback_cost_factor"] == 10_000
        plan = await services.gateway.plan(hi(), ctx(ws))
        assert plan.cost_guard is not None and plan.cost_guard.max_factor == 10_000
        assert "o3-pro" in {s.deployment.model for s in plan.steps}

        r = await admin.put(f"/api/workspaces/{ws}/limits", json={"max_fallback_cost_factor": 0.5})
        assert r.status_code == 422 and r.json()["error"]["param"] == "max_fallback_cost_factor"

        r = await admin.put(f"/api/workspaces/{ws}/limits", json={})
        assert r.status_code == 200 and r.json()["max_fallback_cost_factor"] is None
        plan = await services.gateway.plan(hi(), ctx(ws))
        assert plan.cost_guard is not None and plan.cost_guard.max_factor == 4.0
        assert "o3-pro" not in {s.deployment.model for s in plan.steps}

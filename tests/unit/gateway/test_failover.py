"""The walk over a plan: endpoint breakers, attempt bounds, and what a failure carries.

Calls are the test's own coroutines standing in for an adapter; the state store is
the real in-memory one on a fake clock (or a Redis that does not answer)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from tests.support.state import FakeClock

from warden.errors import ServiceUnavailable
from warden.gateway.catalog import ModelOverride, get_catalog
from warden.gateway.context import CallContext, RouteOptions
from warden.gateway.deployment import Deployment
from warden.gateway.errors import BadRequest, ConnectTimeout, Overloaded, ProviderError, Timeout, Unreachable
from warden.gateway.failover import Attempt, Failover, endpoint_key, fallback_of
from warden.gateway.gateway import GatewayConfig
from warden.gateway.health import HealthTracker
from warden.gateway.routing import plan_route
from warden.gateway.types import ChatRequest, Endpoint, Message
from warden.state import MemoryState, create_state

HOSTS = {"c1": "http://one.test/v1", "c2": "http://two.test/v1"}


def dep(model: str, cred: str, price: str = "1") -> Deployment:
    p = Decimal(price)
    return Deployment.build("openai", model, cred, catalog=get_catalog(), overrides=ModelOverride(
        input_price=p, output_price=p, quality=0.8, capabilities=frozenset(), context_window=10_000))


def endpoint(d: Deployment) -> Endpoint:
    return Endpoint("openai", "openai", HOSTS[d.credential_id or ""], d.model)


def key(d: Deployment) -> str:
    return endpoint_key(d, endpoint(d))


DEPS = [dep("a", "c1"), dep("b", "c1"), dep("c", "c1"), dep("x", "c2")]


def plan(*models: str, **options):
    first, *rest = models
    return plan_route(ChatRequest(model=f"openai/{first}", messages=[Message.text("user", "hi")]), DEPS,
                      options=RouteOptions(fallbacks=[f"openai/{m}" for m in rest], **options))


def run(deadline_s: float = 30.0) -> Attempt:
    return Attempt(CallContext("w", None, "r"), deadline=time.perf_counter() + deadline_s)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def failover(clock: FakeClock) -> Failover:
    return Failover(MemoryState(clock=clock), HealthTracker(clock=clock),
                    GatewayConfig(backoff_base_s=0.001, backoff_cap_s=0.001, endpoint_cooldown_s=5.0))


class Script:
    """The upstream as a list of outcomes per model: an error to raise or a reply."""

    def __init__(self, **outcomes: list[object]) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []

    async def __call__(self, ep: Endpoint) -> str:
        self.calls.append(ep.model)
        queue = self.outcomes.get(ep.model, [])
        outcome = queue.pop(0) if queue else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(10)
        return f"{ep.model}:{outcome}"


def test_endpoint_key_is_host_and_credential() -> None:
    assert key(DEPS[0]) == key(DEPS[1]) == "ep:c1@one.test"
    assert key(DEPS[3]) == "ep:c2@two.test"
    provider_only = Deployment.build("openai", "a", None, catalog=get_catalog())
    assert endpoint_key(provider_only, endpoint(DEPS[0])) == "ep:openai@one.test"


async def test_unreachable_host_is_left_for_every_model_on_it(failover: Failover, clock: FakeClock) -> None:
    script = Script(a=[Unreachable("down")], b=[Unreachable("down")], c=[Unreachable("down")])
    r = run()
    out = await failover.walk(plan("a", "b", "c", "x"), r, endpoint, key, script)
    assert out == "x:ok" and script.calls == ["a", "x"] and r.attempts == 2
    assert r.fallback is True and r.step is not None and r.step.deployment.model == "x"
    assert await failover.state.breaker_states(["ep:c1@one.test"]) == {"ep:c1@one.test": "open"}
    # The next request skips the host without an attempt, until the cooldown is over.
    script.calls.clear()
    await failover.walk(plan("a", "x"), run(), endpoint, key, script)
    assert script.calls == ["x"]
    clock.advance(5.0)
    breakers = await failover.breakers(DEPS, key)
    assert breakers == {d.id: "half_open" for d in DEPS[:3]}


async def test_connect_timeout_counts_as_unreachable_and_failure_carries_attempts(failover: Failover) -> None:
    script = Script(a=[ConnectTimeout("slow")], x=[Overloaded("busy")] * 5)
    with pytest.raises(Overloaded) as exc:
        await failover.walk(plan("a", "x"), run(), endpoint, key, script)
    assert script.calls == ["a", "x", "x", "x"]  # x: the first try and max_retries=2 more
    assert exc.value.attempts == 4 and exc.value.headers["x-warden-attempts"] == "4"
    assert exc.value.envelope("rid")["error"] == {
        "type": "upstream_error", "code": "upstream_overloaded", "message": "busy",
        "request_id": "rid", "attempts": 4}


async def test_attempts_are_bounded_per_endpoint_and_per_plan(clock: FakeClock) -> None:
    busy = [Overloaded("busy")] * 9
    f = Failover(MemoryState(clock=clock), HealthTracker(clock=clock),
                 GatewayConfig(backoff_base_s=0.001, backoff_cap_s=0.001, max_retries=5,
                               endpoint_max_attempts=2, max_attempts=3))
    script = Script(a=list(busy), b=list(busy), x=list(busy))
    with pytest.raises(Overloaded) as exc:
        await f.walk(plan("a", "b", "x", "c"), run(), endpoint, key, script)
    assert script.calls == ["a", "a", "x"] and exc.value.attempts == 3


async def test_a_request_fault_ends_the_walk_at_once(failover: Failover) -> None:
    script = Script(a=[BadRequest("no")])
    with pytest.raises(BadRequest) as exc:
        await failover.walk(plan("a", "x"), run(), endpoint, key, script)
    assert script.calls == ["a"] and exc.value.attempts == 1
    assert failover.health.error_rate(DEPS[0].id) == 0.0  # the request was at fault, not the model


async def test_deadline(failover: Failover) -> None:
    with pytest.raises(Timeout) as exc:
        await failover.walk(plan("a"), run(deadline_s=0.05), endpoint, key, Script(a=["hang"]))
    assert exc.value.code == "upstream_timeout" and exc.value.attempts == 1
    with pytest.raises(Timeout) as exc:
        await failover.walk(plan("a"), run(deadline_s=-1), endpoint, key, Script())
    assert exc.value.code == "deadline_exceeded" and exc.value.attempts == 0


async def test_all_skipped_names_the_cost_guard(failover: Failover) -> None:
    await failover.state.breaker_trip("ep:c1@one.test", 5.0)
    p = plan_route(ChatRequest(model="g", messages=[Message.text("user", "hi")]),
                   [DEPS[0], dep("x", "c2", price="50")], groups={"g": ["openai/a", "openai/x"]},
                   max_fallback_cost_factor=4)
    with pytest.raises(ServiceUnavailable) as exc:
        await failover.walk(p, run(), endpoint, key, Script())
    assert exc.value.code == "no_available_deployment"
    assert "cost guard held back 1 pricier fallback" in exc.value.message
    with pytest.raises(ServiceUnavailable) as exc:
        await failover.walk(plan("a"), run(), endpoint, key, Script())
    assert "cost guard" not in exc.value.message


async def test_a_successful_probe_closes_the_endpoint_and_clears_errors(
        failover: Failover, clock: FakeClock) -> None:
    failover.health.record(DEPS[0].id, False)
    await failover.state.breaker_trip("ep:c1@one.test", 5.0)
    clock.advance(5.0)
    health = failover.health.snapshot([d.id for d in DEPS], await failover.breakers(DEPS, key))
    p = plan_route(ChatRequest(model="openai/a", messages=[Message.text("user", "hi")]), DEPS,
                   health=health)
    assert p.steps[0].health.probe
    assert await failover.walk(p, run(), endpoint, key, Script()) == "a:ok"
    assert await failover.state.breaker_states(["ep:c1@one.test"]) == {"ep:c1@one.test": "closed"}
    assert failover.health.error_rate(DEPS[0].id) == 0.0


async def test_a_probe_answered_with_an_error_still_closes_the_endpoint(
        failover: Failover, clock: FakeClock) -> None:
    await failover.state.breaker_trip("ep:c1@one.test", 5.0)
    clock.advance(5.0)
    health = failover.health.snapshot([d.id for d in DEPS], await failover.breakers(DEPS, key))
    p = plan_route(ChatRequest(model="openai/a", messages=[Message.text("user", "hi")]), DEPS,
                   health=health, options=RouteOptions(fallbacks=["openai/x"]))
    script = Script(a=[ProviderError("odd reply")])
    assert await failover.walk(p, run(), endpoint, key, script) == "x:ok"
    assert await failover.state.breaker_states(["ep:c1@one.test"]) == {"ep:c1@one.test": "closed"}


async def test_state_store_down_walks_without_breakers(clock: FakeClock) -> None:
    state = create_state("redis://127.0.0.1:1/0")
    f = Failover(state, HealthTracker(clock=clock), GatewayConfig())
    try:
        assert await f.breakers(DEPS, key) == {}
        script = Script(a=[Unreachable("down")])
        assert await f.walk(plan("a", "x"), run(), endpoint, key, script) == "x:ok"
        await f.record(DEPS[0], None, 1.0)
    finally:
        await state.close()


def test_backoff() -> None:
    f = Failover(MemoryState(), HealthTracker(), GatewayConfig(retry_after_cap_s=5.0))
    assert f.backoff(0, BadRequest("x")) is None
    assert f.backoff(0, Overloaded("x", retry_after=2.0)) == 2.0
    assert f.backoff(0, Overloaded("x", retry_after=60.0)) is None
    assert f.backoff(2, Overloaded("x")) is None
    assert 0.05 <= f.backoff(0, Overloaded("x")) <= 0.1


def test_fallback_of() -> None:
    cheap, pricey = dep("a", "c1", price="1"), dep("x", "c2", price="3")
    req = ChatRequest(model="openai/a", messages=[Message.text("user", "hi")])
    guarded = plan_route(req, [cheap, pricey], options=RouteOptions(fallbacks=["openai/x"]),
                         max_fallback_cost_factor=4)
    assert fallback_of(guarded, guarded.steps[0]) == (False, None)
    assert fallback_of(guarded, guarded.steps[1]) == (True, pytest.approx(3.0))
    plain = plan_route(req, [cheap, pricey], options=RouteOptions(fallbacks=["openai/x"]))
    assert fallback_of(plain, plain.steps[1]) == (True, None)

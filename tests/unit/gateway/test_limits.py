"""The limiter against real state stores (memory, Redis); sources are plain
async functions, as the composition root injects them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.support.app import REDIS_URL
from warden.errors import BudgetExceeded, Forbidden, RateLimitExceeded
from warden.gateway.catalog import ModelOverride, get_catalog
from warden.gateway.context import CallContext
from warden.gateway.limits import (
    Admission,
    Budget,
    Limiter,
    RateSnapshot,
    WorkspaceLimits,
    duration_text,
    rate_headers,
)
from warden.gateway.routing import PlanStep, RoutePlan
from warden.gateway.deployment import Deployment
from warden.gateway.types import ChatRequest, EmbeddingRequest, Message, TextPart, Usage
from warden.state import MemoryState, StateStore, StateUnavailable, create_state, to_pico
from warden.state.base import RateResult

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
CTX = CallContext("ws1", "key1", "req1", agent_id="ag1")
REQ = ChatRequest(model="openai/m", messages=[Message("user", [TextPart("hello there")])], max_tokens=10)


def dep(model: str = "m", output_price: str | None = "1000", max_output: int | None = None) -> Deployment:
    override = ModelOverride(input_price=Decimal(0), output_price=Decimal(output_price),
                             max_output=max_output) if output_price else ModelOverride(max_output=max_output)
    return Deployment.build("openai", model, "cred1", catalog=get_catalog(), overrides=override)


def plan(*deps: Deployment) -> RoutePlan:
    return RoutePlan("openai/m", "explicit", None, None, [PlanStep(d, 1.0) for d in deps], [])  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        state: StateStore = MemoryState()
    else:
        if not REDIS_URL:
            pytest.skip("WARDEN_TEST_REDIS_URL is not set")
        state = create_state(REDIS_URL, prefix=f"wlim:{uuid.uuid4().hex[:12]}:")
    yield state
    await state.close()


def limiter(state: StateStore, limits: WorkspaceLimits, **kw) -> Limiter:  # noqa: ANN003
    async def source(workspace_id: str) -> WorkspaceLimits:
        assert workspace_id == "ws1"
        return limits

    return Limiter(state, source, now=lambda: NOW, **kw)


def ws_budget(limit: str, **kw) -> Budget:  # noqa: ANN003
    return Budget("workspace", "ws1", "month", Decimal(limit), **kw)


async def spent(state: StateStore, budget: Budget) -> tuple[int, int]:
    return tuple(await state.usage(budget.counter("ws1", NOW).key))  # type: ignore[return-value]


async def test_reserves_worst_step_and_settles_real_cost(store: StateStore) -> None:
    budget = ws_budget("1")
    lim = limiter(store, WorkspaceLimits((budget,)))
    cheap, dear = dep("cheap", "1000"), dep("dear", "3000")
    admission, walked = await lim.admit(REQ, CTX, plan(cheap, dear))
    assert [s.deployment for s in walked.steps] == [cheap, dear]
    worst = to_pico(Decimal(10 * 3000) / 10**6)  # max_tokens at the dearest step's price
    assert admission.reserved_pico == worst and await spent(store, budget) == (0, worst)
    await admission.settle(Decimal("0.004"), Usage(3, 4), cheap)
    assert await spent(store, budget) == (to_pico(Decimal("0.004")), 0)
    await admission.settle(Decimal("1"), Usage(3, 4), cheap)  # once only
    await admission.release()
    assert await spent(store, budget) == (to_pico(Decimal("0.004")), 0)


async def test_refusal_names_the_scope_and_charges_nothing(store: StateStore) -> None:
    key_budget = Budget("key", "key1", "day", Decimal("0.005"))
    other = Budget("key", "someone-else", "day", Decimal("0"))  # does not apply to CTX
    lim = limiter(store, WorkspaceLimits((ws_budget("1"), key_budget, other), rpm_limit=5))
    with pytest.raises(BudgetExceeded, match="key 'key1' day budget"):
        await lim.admit(REQ, CTX, plan(dep()))
    assert await spent(store, ws_budget("1")) == (0, 0)
    result = await store.rate_adjust("workspace:ws1:rpm", 5, 60.0, 0)
    assert result.remaining == 5  # the request unit was given back


async def test_release_on_failure_refunds_tokens(store: StateStore) -> None:
    budget = ws_budget("1")
    lim = limiter(store, WorkspaceLimits((budget,), tpm_limit=1000), )
    admission, _ = await lim.admit(REQ, CTX, plan(dep()))
    level = await store.rate_adjust("workspace:ws1:tpm", 1000, 60.0, 0)
    assert level.remaining < 1000
    await admission.release()
    assert await spent(store, budget) == (0, 0)
    assert (await store.rate_adjust("workspace:ws1:tpm", 1000, 60.0, 0)).remaining == 1000


async def test_requests_per_minute_alone_take_one_unit_and_keep_it(store: StateStore) -> None:
    """No budget, no tokens limit: the end of the call has nothing to settle or correct."""
    lim = limiter(store, WorkspaceLimits(rpm_limit=5))
    admission, _ = await lim.admit(REQ, CTX, plan(dep()))
    assert admission.reservation_id is None and admission.rate is not None
    assert admission.rate.remaining_requests == 4
    await admission.settle(Decimal("0.01"), Usage(3, 4))
    assert admission.done and admission.rate.remaining_tokens is None
    assert (await store.rate_adjust("workspace:ws1:rpm", 5, 60.0, 0)).remaining == 4  # the request counts


async def test_stream_without_usage_charges_what_was_seen(store: StateStore) -> None:
    budget = ws_budget("1")
    lim = limiter(store, WorkspaceLimits((budget,)))
    d = dep()
    admission, _ = await lim.admit(REQ, CTX, plan(d))
    await admission.settle(None, Usage(), d, output_seen=4)
    assert await spent(store, budget) == (to_pico(Decimal(4 * 1000) / 10**6), 0)
    admission, _ = await lim.admit(REQ, CTX, plan(d))
    await admission.settle(None, Usage())  # nothing known at all: the hold is charged
    assert (await spent(store, budget))[0] == to_pico(Decimal("0.004")) + to_pico(Decimal("0.01"))


async def test_default_output_is_capped_by_the_model(store: StateStore) -> None:
    lim = limiter(store, WorkspaceLimits((ws_budget("100"),)), default_output_tokens=4096)
    req = ChatRequest(model="openai/m", messages=REQ.messages)
    admission, _ = await lim.admit(req, CTX, plan(dep(max_output=100)))
    assert admission.reserved_pico == to_pico(Decimal(100 * 1000) / 10**6)
    admission2, _ = await lim.admit(req, CTX, plan(dep()))
    assert admission2.reserved_pico == to_pico(Decimal(4096 * 1000) / 10**6)


async def test_unpriced_steps_are_dropped_under_a_budget(store: StateStore) -> None:
    lim = limiter(store, WorkspaceLimits((ws_budget("1"),)))
    unpriced, priced = dep("mystery-x", None), dep("m", "1000")
    _, walked = await lim.admit(REQ, CTX, plan(unpriced, priced))
    assert [s.deployment for s in walked.steps] == [priced]
    with pytest.raises(Forbidden, match="openai/mystery-x") as exc:
        await lim.admit(REQ, CTX, plan(unpriced))
    assert exc.value.code == "price_unknown"
    free = limiter(store, WorkspaceLimits())
    admission, walked = await free.admit(REQ, CTX, plan(unpriced))
    assert not admission.active and walked.steps[0].deployment is unpriced


async def test_per_request_cap(store: StateStore) -> None:
    lim = limiter(store, WorkspaceLimits((ws_budget("1", per_request_cap_usd=Decimal("0.005")),)))
    with pytest.raises(BudgetExceeded, match="per-request cap"):
        await lim.admit(REQ, CTX, plan(dep()))  # 10 tokens * $0.001 = $0.01 > $0.005


async def test_rate_refusal_headers(store: StateStore) -> None:
    ctx = CallContext("ws1", "key1", "r", key_rpm_limit=1, key_tpm_limit=10_000)
    lim = limiter(store, WorkspaceLimits(rpm_limit=50))
    admission, _ = await lim.admit(REQ, ctx, plan(dep()))
    assert admission.rate is not None and admission.rate.limit_requests == 1
    assert admission.rate.remaining_requests == 0 and admission.rate.limit_tokens == 10_000
    with pytest.raises(RateLimitExceeded, match="key limit of 1 requests") as exc:
        await lim.admit(REQ, ctx, plan(dep()))
    headers = exc.value.headers
    assert headers["retry-after"] == "60" and headers["x-ratelimit-remaining-requests"] == "0"
    big = CallContext("ws1", "key2", "r", key_tpm_limit=5)
    with pytest.raises(RateLimitExceeded, match="exceed the key limit of 5 tokens") as exc:
        await lim.admit(REQ, big, plan(dep()))
    assert "retry-after" not in exc.value.headers


async def test_source_failure_fails_closed_or_open() -> None:
    async def broken(workspace_id: str) -> WorkspaceLimits:
        raise OSError("database down")

    async def state_down(workspace_id: str) -> WorkspaceLimits:
        raise StateUnavailable()

    state = MemoryState()
    for source in (broken, state_down):
        with pytest.raises(StateUnavailable) as exc:
            await Limiter(state, source).admit(REQ, CTX, plan(dep()))
        assert exc.value.status == 503 and exc.value.code == "state_unavailable"
        admission, _ = await Limiter(state, source, fail_open=True).admit(REQ, CTX, plan(dep()))
        assert not admission.active


async def test_store_down_fails_closed_or_open_and_never_half_charges() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = create_state(f"redis://127.0.0.1:{port}/0")
    try:
        lim = limiter(down, WorkspaceLimits((ws_budget("1"),), rpm_limit=3))
        with pytest.raises(StateUnavailable, match="shared state store"):
            await lim.admit(REQ, CTX, plan(dep()))
        lim.fail_open = True
        admission, _ = await lim.admit(REQ, CTX, plan(dep()))
        assert not admission.active
        # An admission whose store goes away settles quietly (its hold expires by TTL).
        stuck = Admission(down, reservation_id="r1", reserved_pico=5, rates=[])
        await stuck.settle(Decimal("0.1"), Usage(1, 1))
        assert stuck.done
    finally:
        await down.close()


def test_duration_text_and_headers() -> None:
    assert [duration_text(s) for s in (0, 0.0204, 1.5, 59.9999, 360, 3723)] == [
        "0ms", "21ms", "1.5s", "60s", "6m0s", "1h2m3s"]
    assert rate_headers(None) == {}
    r = RateResult(True, 10, 4, 36.0, 0.0)
    t = RateResult(True, 1000, 900, 6.0, 0.0)
    snap = RateSnapshot.of([r, RateResult(True, 20, 9, 1.0, 0.0)], [t])
    assert rate_headers(snap) == {
        "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "36s", "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "6s"}
    assert RateSnapshot.of([], []) is None
    assert set(rate_headers(RateSnapshot.of([r], []))) == {
        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"}


async def test_embeddings_reserve_their_input_at_the_input_price_and_no_output(
        store: StateStore) -> None:
    budget = ws_budget("1")
    lim = limiter(store, WorkspaceLimits((budget,), tpm_limit=1_000))
    emb = Deployment.build("openai", "text-embedding-3-small", "cred1", catalog=get_catalog())
    req = EmbeddingRequest("text-embedding-3-small", ["abcd" * 50, [1, 2, 3]])  # 50 + 3 tokens
    admission, _ = await lim.admit(req, CTX, plan(emb))
    assert admission.prompt_tokens == 53
    assert admission.reserved_pico == to_pico(Decimal(53) * Decimal("0.02") / 10**6)
    assert admission.rate is not None and admission.rate.remaining_tokens == 1_000 - 53

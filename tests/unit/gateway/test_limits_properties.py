"""Properties of the limiter (admit -> call -> settle) over the in-process store.

Concurrent requests, as asyncio tasks that yield between their steps in orders
Hypothesis picks, are admitted, then settle a real cost, abort a stream, or fail
and release. However they interleave: no budget ever holds more than its limit,
a hold is the worst case of the plan to the pico, nothing stays reserved at the
end, spend is exactly what was charged, and a refused request keeps nothing
(not even its rate units).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.properties import FEW, PROPERTIES
from tests.support.state import FakeClock
from warden.errors import BudgetExceeded, Forbidden, RateLimitExceeded
from warden.gateway.catalog import ModelOverride, get_catalog
from warden.gateway.complexity import estimate_tokens
from warden.gateway.context import CallContext
from warden.gateway.deployment import Deployment
from warden.gateway.limits import (
    Budget,
    Limiter,
    RateSnapshot,
    WorkspaceLimits,
    duration_text,
    rate_headers,
)
from warden.gateway.routing import PlanStep, RoutePlan
from warden.gateway.types import ChatRequest, Message, TextPart, Usage
from warden.state import MemoryState, StateUnavailable
from warden.state.base import to_pico

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
MTOK = Decimal(1_000_000)
PRICES = [Decimal(p) for p in ("0", "0.15", "1", "2.5", "10", "75")]


def dep(name: str, inp: Decimal, out: Decimal, max_output: int | None = None) -> Deployment:
    return Deployment.build("openai", name, "cred1", catalog=get_catalog(),
                            overrides=ModelOverride(input_price=inp, output_price=out, max_output=max_output))


def plan(*deps: Deployment) -> RoutePlan:
    return RoutePlan("openai/m", "explicit", None, None, [PlanStep(d, 1.0) for d in deps], [])  # type: ignore[arg-type]


deployments = st.builds(dep, st.sampled_from(["a", "b", "c"]), st.sampled_from(PRICES), st.sampled_from(PRICES),
                        st.none() | st.integers(1, 5000))


@dataclass(frozen=True)
class Call:
    words: int
    max_tokens: int | None
    steps: tuple[Deployment, ...]
    outcome: str  # "settle" | "abort" | "fail" | "unknown"
    share: float  # of the hold the real cost / the output seen takes
    key: str
    pauses: int


calls = st.builds(Call, st.integers(1, 300), st.none() | st.integers(1, 4000),
                  st.lists(deployments, min_size=1, max_size=3).map(tuple),
                  st.sampled_from(["settle", "settle", "abort", "fail", "unknown"]), st.floats(0, 1),
                  st.sampled_from(["key1", "key2"]), st.integers(0, 3))


def request(c: Call) -> ChatRequest:
    return ChatRequest(model="openai/m", messages=[Message("user", [TextPart("word " * c.words)])],
                       max_tokens=c.max_tokens)


def worst(c: Call, default_output: int) -> int:
    prompt = estimate_tokens(request(c))
    costs = []
    for d in c.steps:
        out = c.max_tokens if c.max_tokens is not None else min(default_output, d.info.max_output or default_output)
        costs.append((prompt * d.info.input_price + out * d.info.output_price) / MTOK)
    return to_pico(max(costs))


@FEW
@given(st.integers(0, 30).map(lambda k: k * 10**10 + 7), st.integers(0, 30).map(lambda k: k * 10**10), st.sampled_from([None, 2, 6]),
       st.sampled_from([None, 3_000, 30_000]), st.lists(calls, min_size=1, max_size=8))
async def test_concurrent_calls_never_overspend_and_refusals_keep_nothing(
        ws_pico: int, key_pico: int, rpm: int | None, tpm: int | None, batch: list[Call]) -> None:
    state = MemoryState(clock=FakeClock())
    ws = Budget("workspace", "ws1", "month", Decimal(ws_pico).scaleb(-12))
    key1 = Budget("key", "key1", "day", Decimal(key_pico).scaleb(-12))
    stranger = Budget("key", "someone-else", "day", Decimal(0))  # applies to no call here
    limiter = Limiter(state, _source(WorkspaceLimits((ws, key1, stranger), rpm_limit=rpm, tpm_limit=tpm)),
                      default_output_tokens=2048, now=lambda: NOW)
    counters = {b: b.counter("ws1", NOW).key for b in (ws, key1, stranger)}
    charged = {b: 0 for b in counters}
    admitted = 0
    tokens_charged = 0

    async def within_limits() -> None:
        for b, key in counters.items():
            used = await state.usage(key)
            assert used.spent_pico + used.reserved_pico <= to_pico(b.limit_usd)

    async def one(c: Call) -> None:
        nonlocal admitted, tokens_charged
        ctx = CallContext("ws1", c.key, "req")
        try:
            admission, walked = await limiter.admit(request(c), ctx, plan(*c.steps))
        except (BudgetExceeded, RateLimitExceeded):
            await within_limits()
            return
        admitted += 1
        hold = worst(c, 2048)
        assert admission.reserved_pico == hold and [s.deployment for s in walked.steps] == list(c.steps)
        await within_limits()
        for _ in range(c.pauses):
            await asyncio.sleep(0)
        prompt = estimate_tokens(request(c))
        if c.outcome == "settle":
            charge = int(hold * c.share)
            await admission.settle(Decimal(charge).scaleb(-12), Usage(prompt, 5))
            tokens = prompt + 5
        elif c.outcome == "abort":  # a stream cut before the provider's usage arrived
            d = c.steps[-1]
            seen = int((c.max_tokens or 0) * c.share)
            await admission.settle(None, Usage(), d, output_seen=seen)
            charge = to_pico((prompt * d.info.input_price + seen * d.info.output_price) / MTOK)
            assert charge <= hold  # an aborted stream never charges more than it held
            tokens = prompt + seen
        elif c.outcome == "unknown":  # no cost, no deployment to estimate with: the hold is charged
            await admission.settle(None, Usage())
            charge, tokens = hold, prompt
        else:
            await admission.release()
            charge, tokens = 0, 0
        await admission.release()  # a second finish changes nothing
        await admission.settle(Decimal(1), Usage(1, 1))
        for b in counters:
            if b.applies_to(ctx):
                charged[b] += charge
        tokens_charged += tokens
        await within_limits()

    await asyncio.gather(*(one(c) for c in batch))
    for b, key in counters.items():
        assert tuple(await state.usage(key)) == (charged[b], 0)
    if rpm is not None:
        assert (await state.rate_adjust("workspace:ws1:rpm", rpm, 60.0, 0)).remaining == rpm - admitted
    if tpm is not None:
        level = await state.rate_adjust("workspace:ws1:tpm", tpm, 60.0, 0)
        assert level.remaining == max(0, tpm - tokens_charged)


def _source(limits: WorkspaceLimits):  # noqa: ANN202
    async def source(workspace_id: str) -> WorkspaceLimits:
        assert workspace_id == "ws1"
        return limits

    return source


@PROPERTIES
@given(calls, st.integers(0, 10**9))
async def test_a_request_is_refused_exactly_when_its_worst_case_does_not_fit(c: Call, limit_pico: int) -> None:
    state = MemoryState(clock=FakeClock())
    budget = Budget("workspace", "ws1", "total", Decimal(limit_pico).scaleb(-12))
    limiter = Limiter(state, _source(WorkspaceLimits((budget,))), default_output_tokens=2048, now=lambda: NOW)
    hold = worst(c, 2048)
    try:
        admission, _ = await limiter.admit(request(c), CallContext("ws1", "k", "r"), plan(*c.steps))
    except BudgetExceeded as exc:
        assert hold > to_pico(budget.limit_usd)
        assert str(exc) == ("budget exceeded: this request's worst-case cost does not fit in the workspace "
                            f"total budget of ${budget.limit_usd}")
        assert tuple(await state.usage(budget.counter("ws1", NOW).key)) == (0, 0)
    else:
        assert hold <= to_pico(budget.limit_usd) and admission.reserved_pico == hold
        assert tuple(await state.usage(budget.counter("ws1", NOW).key)) == (0, hold)


@PROPERTIES
@given(calls, st.integers(1, 10**8))
async def test_the_per_request_cap_refuses_exactly_above_it(c: Call, cap_pico: int) -> None:
    state = MemoryState(clock=FakeClock())
    cap = Decimal(cap_pico).scaleb(-12)
    budget = Budget("workspace", "ws1", "day", Decimal(1000), per_request_cap_usd=cap)
    limiter = Limiter(state, _source(WorkspaceLimits((budget,))), default_output_tokens=2048, now=lambda: NOW)
    hold = worst(c, 2048)
    if hold > cap_pico:
        with pytest.raises(BudgetExceeded) as exc:
            await limiter.admit(request(c), CallContext("ws1", "k", "r"), plan(*c.steps))
        assert str(exc.value) == (f"budget exceeded: this request's worst-case cost is above the per-request "
                                  f"cap of ${cap} of the workspace day budget of $1000; lower max_tokens")
    else:
        admission, _ = await limiter.admit(request(c), CallContext("ws1", "k", "r"), plan(*c.steps))
        assert admission.reserved_pico == hold


@PROPERTIES
@given(st.lists(st.booleans(), min_size=1, max_size=4))
async def test_under_a_budget_only_priced_steps_are_walked(priced: list[bool]) -> None:
    steps = [dep(f"m{i}", Decimal(1), Decimal(2)) if p else
             Deployment.build("openai", f"mystery-{i}", "cred1", catalog=get_catalog())
             for i, p in enumerate(priced)]
    limiter = Limiter(MemoryState(clock=FakeClock()), _source(WorkspaceLimits((Budget(
        "agent", "ag1", "month", Decimal(5)),))), now=lambda: NOW)
    ctx = CallContext("ws1", "k", "r", agent_id="ag1")
    req = ChatRequest(model="openai/m", messages=[Message("user", [TextPart("hi")])], max_tokens=5)
    if not any(priced):
        with pytest.raises(Forbidden) as exc:
            await limiter.admit(req, ctx, plan(*steps))
        names = ", ".join(sorted(d.name for d in steps))
        assert exc.value.code == "price_unknown" and str(exc.value).startswith(
            f"a budget applies to this request but the price of {names} is unknown")
        return
    admission, walked = await limiter.admit(req, ctx, plan(*steps))
    assert [s.deployment for s in walked.steps] == [d for d, p in zip(steps, priced) if p]
    assert admission.active and admission.reservation_id is not None
    assert admission.reservation_id.startswith("r:")


@pytest.mark.parametrize(("failure", "what"), [(OSError("db down"), "the database"),
                                               (StateUnavailable(), "limits")])
async def test_an_unreachable_source_fails_closed_or_open_and_says_so(
        failure: Exception, what: str, caplog: pytest.LogCaptureFixture) -> None:
    async def source(workspace_id: str) -> WorkspaceLimits:
        raise failure

    req = ChatRequest(model="openai/m", messages=[Message("user", [TextPart("hi")])])
    p = plan(dep("a", Decimal(1), Decimal(1)))
    with pytest.raises(StateUnavailable) as exc:
        await Limiter(MemoryState(), source).admit(req, CallContext("ws1", "k", "r"), p)
    assert str(exc.value) == (f"{what} is unavailable, so budgets and rate limits cannot be checked; "
                              "try again shortly")
    with caplog.at_level(logging.WARNING, logger="warden.limits"):
        admission, walked = await Limiter(MemoryState(), source, fail_open=True).admit(
            req, CallContext("ws1", "k", "r"), p)
    assert not admission.active and walked is p
    assert f"{what} unavailable: admitting without budgets or rate limits (fail-open)" in caplog.messages


# --- what the properties above do not pin: the edges, word for word -------------------


class DownState(MemoryState):
    """The in-process store with its settle/release/adjust failing, as a store that went away."""

    async def settle(self, reservation_id: str, actual_pico: int, *, scopes=None) -> bool:  # noqa: ANN001
        raise StateUnavailable()

    async def release(self, reservation_id: str, *, scopes=None) -> bool:  # noqa: ANN001
        raise StateUnavailable()

    async def rate_adjust_many(self, adjustments):  # noqa: ANN001, ANN201
        raise StateUnavailable()


async def test_a_store_lost_after_the_call_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    state = DownState(clock=FakeClock())
    limiter = Limiter(state, _source(WorkspaceLimits((Budget("workspace", "ws1", "day", Decimal(1)),),
                                                     tpm_limit=10_000)), now=lambda: NOW)
    req = ChatRequest(model="openai/m", messages=[Message("user", [TextPart("hi")])], max_tokens=5)
    with caplog.at_level(logging.WARNING, logger="warden.limits"):
        first, _ = await limiter.admit(req, CallContext("ws1", "k", "r"), plan(dep("a", Decimal(1), Decimal(1))))
        await first.settle(Decimal("0.001"), Usage(3, 4))
        second, _ = await limiter.admit(req, CallContext("ws1", "k", "r"), plan(dep("a", Decimal(1), Decimal(1))))
        await second.release()
    assert first.done and second.done
    # The hold and the token counters end in one store call: one warning each.
    assert [m for m in caplog.messages if m.startswith("shared state unavailable")] == [
        "shared state unavailable: settle skipped", "shared state unavailable: release skipped"]


async def test_the_token_headers_show_the_tightest_level_after_the_adjustment() -> None:
    state = MemoryState(clock=FakeClock())
    limiter = Limiter(state, _source(WorkspaceLimits(tpm_limit=5_000)), now=lambda: NOW)
    ctx = CallContext("ws1", "k", "r", key_tpm_limit=2_000)
    req = ChatRequest(model="openai/m", messages=[Message("user", [TextPart("hi")])], max_tokens=500)
    admission, _ = await limiter.admit(req, ctx, plan(dep("a", Decimal(1), Decimal(1))))
    assert admission.rate is not None and admission.rate.limit_tokens == 2_000
    await admission.settle(Decimal("0.0001"), Usage(40, 60))  # 100 tokens, not the ~500 estimated
    assert admission.rate.remaining_tokens == 1_900  # the key's, the tighter of the two
    assert admission.rate.reset_tokens_s == pytest.approx(100 * 60 / 2_000)


@pytest.mark.parametrize(("usage", "cost", "seen", "expected"), [
    (Usage(0, 7), Decimal("0.000002"), 0, 2_000_000),  # output only still counts as usage
    (Usage(5, 0), Decimal("0.000003"), 0, 3_000_000),
    (Usage(5, 7), None, 4, None),  # usage but no cost: the estimate at the deployment's prices
])
async def test_what_a_settle_charges(usage: Usage, cost: Decimal | None, seen: int, expected: int | None) -> None:
    state = MemoryState(clock=FakeClock())
    budget = Budget("workspace", "ws1", "day", Decimal(1))
    limiter = Limiter(state, _source(WorkspaceLimits((budget,))), now=lambda: NOW)
    d = dep("a", Decimal(2), Decimal(3))
    req = ChatRequest(model="openai/m", messages=[Message("user", [TextPart("hi")])], max_tokens=50)
    admission, _ = await limiter.admit(req, CallContext("ws1", "k", "r"), plan(d))
    await admission.settle(cost, usage, d, output_seen=seen)
    if expected is None:
        expected = to_pico((admission.prompt_tokens * Decimal(2) + seen * Decimal(3)) / MTOK)
    assert tuple(await state.usage(budget.counter("ws1", NOW).key)) == (expected, 0)


async def test_an_aborted_stream_on_an_unpriced_step_charges_its_hold() -> None:
    state = MemoryState(clock=FakeClock())
    budget = Budget("workspace", "ws1", "day", Decimal(1))
    limiter = Limiter(state, _source(WorkspaceLimits((budget,))), now=lambda: NOW)
    req = ChatRequest(model="openai/m", messages=[Message("user", [TextPart("hi")])], max_tokens=50)
    admission, _ = await limiter.admit(req, CallContext("ws1", "k", "r"), plan(dep("a", Decimal(2), Decimal(3))))
    unpriced = Deployment.build("openai", "mystery-z", "cred1", catalog=get_catalog())
    await admission.settle(None, Usage(), unpriced, output_seen=9)
    assert tuple(await state.usage(budget.counter("ws1", NOW).key)) == (admission.reserved_pico, 0)


async def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    state = MemoryState(clock=FakeClock())
    limiter = Limiter(state, _source(WorkspaceLimits(rpm_limit=240)), now=lambda: NOW)  # a unit per 0.25 s
    req = ChatRequest(model="openai/m", messages=[Message("user", [TextPart("hi")])])
    for _ in range(240):
        await limiter.admit(req, CallContext("ws1", None, "r"), plan(dep("a", Decimal(1), Decimal(1))))
    with pytest.raises(RateLimitExceeded) as exc:
        await limiter.admit(req, CallContext("ws1", None, "r"), plan(dep("a", Decimal(1), Decimal(1))))
    assert exc.value.headers["retry-after"] == "1"
    assert str(exc.value) == "rate limit exceeded: the workspace limit of 240 requests per minute; retry in 1 s"


def test_duration_and_header_edges() -> None:
    assert [duration_text(s) for s in (0.5, 1, 59.5, 60, 61)] == ["500ms", "1s", "59.5s", "1m0s", "1m1s"]
    snap = RateSnapshot(limit_requests=5, remaining_requests=5, reset_requests_s=None,
                        limit_tokens=9, remaining_tokens=9, reset_tokens_s=None)
    headers = rate_headers(snap)
    assert (headers["x-ratelimit-reset-requests"], headers["x-ratelimit-reset-tokens"]) == ("0ms", "0ms")

"""The cost guard: no plan step costs more than the factor times the first choice,
checked by example and as a property over random plans, prices and health."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden.gateway.catalog import Catalog, ModelOverride, get_catalog
from warden.gateway.context import RouteOptions
from warden.gateway.cost_guard import CostGuard, apply_cost_guard, estimate, factor_of
from warden.gateway.deployment import Deployment
from warden.gateway.health import Health
from warden.gateway.routing import TYPICAL_OUTPUT, plan_route
from warden.gateway.types import ChatRequest, Message

CATALOG = get_catalog()


def dep(name: str, price: float | None, quality: float = 0.8, cred: str = "c1",
        catalog: Catalog = CATALOG) -> Deployment:
    if price is None:
        override = ModelOverride(quality=quality)
    else:
        p = Decimal(str(price))
        override = ModelOverride(input_price=p, output_price=p * 4, quality=quality,
                                 capabilities=frozenset({"tools"}), context_window=100_000)
    return Deployment.build("openai", name, cred, catalog=catalog, overrides=override)


def hi(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message.text("user", "hi")])


def test_pricier_fallbacks_are_dropped_with_a_reason() -> None:
    deps = [dep("cheap", 0.1), dep("double", 0.2), dep("tenfold", 1.0), dep("unpriced", None)]
    groups = {"g": ["openai/cheap", "openai/tenfold", "openai/double", "openai/unpriced"]}
    plan = plan_route(hi("g"), deps, groups=groups, max_fallback_cost_factor=4)
    assert [s.deployment.model for s in plan.steps] == ["cheap", "double", "unpriced"]
    assert [s.cost_factor for s in plan.steps] == [1.0, pytest.approx(2.0), None]
    why = dict(plan.rejected)["c1:tenfold"]
    assert why.startswith("cost guard: about 10x") and "limit 4x" in why
    guard = plan.to_dict()["cost_guard"]
    assert guard["max_factor"] == 4 and guard["reference"] == "c1:cheap" and guard["excluded"] == 1
    assert guard["applied"] is True and Decimal(guard["reference_cost_usd"]) > 0
    assert plan.to_dict()["steps"][1]["cost_factor"] == 2.0


def test_the_request_may_raise_or_lift_the_factor_or_name_the_fallback() -> None:
    deps = [dep("cheap", 0.1), dep("tenfold", 1.0)]
    req, groups = hi("g"), {"g": ["openai/cheap", "openai/tenfold"]}
    guarded = plan_route(req, deps, groups=groups, max_fallback_cost_factor=4)
    raised = plan_route(req, deps, groups=groups, options=RouteOptions(max_fallback_cost_factor=20),
                        max_fallback_cost_factor=4)
    lifted = plan_route(req, deps, groups=groups, options=RouteOptions(max_fallback_cost_factor=math.inf),
                        max_fallback_cost_factor=4)
    off = plan_route(req, deps, groups=groups)
    named = plan_route(hi("openai/cheap"), deps, options=RouteOptions(fallbacks=["openai/tenfold"]),
                       max_fallback_cost_factor=4)
    bare = plan_route(hi("openai/cheap"), deps, options=RouteOptions(fallbacks=["tenfold"]),
                      max_fallback_cost_factor=4)
    assert len(guarded.steps) == len(bare.steps) == 1
    assert len(raised.steps) == len(lifted.steps) == len(off.steps) == len(named.steps) == 2
    assert named.steps[1].cost_factor == pytest.approx(10.0)  # kept, and still said to be pricier
    assert lifted.to_dict()["cost_guard"]["max_factor"] is None
    assert lifted.to_dict()["cost_guard"]["applied"] is False
    assert off.cost_guard is None and off.to_dict()["cost_guard"] is None


def test_first_choice_is_the_best_step_before_breakers_reorder() -> None:
    deps = [dep("cheap", 0.1, quality=0.9), dep("pricey", 1.0, quality=0.9)]
    health = {"c1:cheap": Health(breaker_open=True)}
    plan = plan_route(hi("auto"), deps, health=health, max_fallback_cost_factor=4)
    # The cheap model is down: it goes last, and the pricier one may not stand in for it.
    assert [s.deployment.model for s in plan.steps] == ["cheap"]
    assert plan.cost_guard is not None and plan.cost_guard.reference == "c1:cheap"


def test_unpriced_first_choice_cannot_guard() -> None:
    deps = [dep("mystery", None), dep("pricey", 5.0)]
    plan = plan_route(hi("g"), deps, groups={"g": ["openai/mystery", "openai/pricey"]},
                      max_fallback_cost_factor=4)
    assert len(plan.steps) == 2
    assert plan.cost_guard == CostGuard(4, "c1:mystery", None)
    assert plan.cost_guard.to_dict()["applied"] is False


def test_factor_of_a_free_first_choice() -> None:
    assert factor_of(Decimal(0), Decimal(0)) == 1.0
    assert factor_of(Decimal("0.1"), Decimal(0)) == math.inf
    assert factor_of(Decimal(3), Decimal(2)) == 1.5
    free, paid = dep("free", 0.0), dep("paid", 0.1)
    kept, guard = apply_cost_guard([], free, 4, 10, 10, [])
    assert kept == [] and guard.excluded == 0
    assert estimate(paid.info, 1_000_000, 0) == Decimal("0.1")


# --- the property -------------------------------------------------------------

PRICES = st.one_of(st.none(), st.floats(min_value=0.0, max_value=100.0, allow_nan=False).map(
    lambda p: round(p, 4)))
SPEC = st.tuples(PRICES, st.floats(min_value=0.3, max_value=1.0), st.sampled_from(["c1", "c2"]),
                 st.sampled_from(["closed", "open", "probe"]), st.floats(min_value=0.0, max_value=1.0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(SPEC, min_size=1, max_size=8),
       factor=st.floats(min_value=1.0, max_value=50.0),
       mode=st.sampled_from(["auto", "explicit", "group"]),
       fallbacks=st.lists(st.tuples(st.integers(min_value=0, max_value=7), st.booleans()), max_size=4))
def test_no_step_is_pricier_than_the_factor_allows(specs, factor, mode, fallbacks) -> None:
    deps = [dep(f"m{i}", price, quality, cred) for i, (price, quality, cred, _, _) in enumerate(specs)]
    health = {d.id: Health(breaker_open=state == "open", error_rate=err, probe=state == "probe")
              for d, (_, _, _, state, err) in zip(deps, specs, strict=True)}
    names = [f"openai/{d.model}" for d in deps]
    groups = {"g": names}
    model = {"auto": "auto", "explicit": names[0], "group": "g"}[mode]
    # A fallback named as provider/model is the request's own choice; a bare id is not.
    chosen = [(deps[i % len(deps)], explicit) for i, explicit in fallbacks]
    options = RouteOptions(fallbacks=[f"openai/{d.model}" if explicit else d.model for d, explicit in chosen])
    exempt = {d.id for d, explicit in chosen if explicit}
    try:
        plan = plan_route(hi(model), deps, groups=groups, health=health, options=options,
                          max_fallback_cost_factor=factor)
    except Exception as exc:  # auto drops unpriced models: nothing may be left
        assert mode == "auto" and getattr(exc, "code", None) == "no_eligible_deployment"
        return
    guard = plan.cost_guard
    assert guard is not None
    first = next(d for d in deps if d.id == guard.reference)
    assert first.id in {s.deployment.id for s in plan.steps}  # the first choice is never dropped
    output = TYPICAL_OUTPUT[plan.complexity.level]
    ref = estimate(first.info, plan.needs.input_tokens, output)
    assert guard.reference_cost_usd == ref
    for step in plan.steps:
        cost = estimate(step.deployment.info, plan.needs.input_tokens, output)
        if ref is None or cost is None or step.deployment.id == first.id or step.deployment.id in exempt:
            continue
        assert cost <= Decimal(str(factor)) * ref * (1 + Decimal("1e-9")) or (ref == 0 and cost == 0)
    # What was dropped was dropped by the guard for being over the factor.
    for who, why in plan.rejected:
        if why.startswith("cost guard"):
            assert who not in exempt  # a fallback the request named is never held back
            over = next(d for d in deps if d.id == who)
            cost = estimate(over.info, plan.needs.input_tokens, output)
            assert ref is not None and cost is not None and (ref == 0 or cost / ref > Decimal(str(factor)) * Decimal("0.999999"))


RATES = st.sampled_from([0.0, 0.1, 0.3, 0.9, 0.15, 0.6]) | st.floats(min_value=0.0, max_value=100.0).map(
    lambda p: round(p, 4))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(RATES, RATES), min_size=2, max_size=5),
       st.integers(min_value=0, max_value=5_000), st.integers(min_value=0, max_value=5_000),
       st.sampled_from([1.0, 1.5, 2.0, 4.0, math.inf]))
def test_the_float_factor_decides_as_the_exact_one(prices, input_tokens, output_tokens, limit) -> None:
    """Factors come from float rates; near the limit from Decimals: the same steps kept."""
    deps = [Deployment.build("openai", f"m{i}", "c", catalog=CATALOG,
                             overrides=ModelOverride(input_price=Decimal(str(a)), output_price=Decimal(str(b))))
            for i, (a, b) in enumerate(prices)]
    steps = [_Step(d) for d in deps]
    kept, _guard = apply_cost_guard(steps, deps[0], limit, input_tokens, output_tokens, [])
    ref = estimate(deps[0].info, input_tokens, output_tokens)
    assert ref is not None
    exact = [s for s in steps if s.deployment is deps[0]
             or factor_of(estimate(s.deployment.info, input_tokens, output_tokens), ref) <= limit]
    assert [s.deployment.id for s in kept] == [s.deployment.id for s in exact]
    for step in kept:
        want = factor_of(estimate(step.deployment.info, input_tokens, output_tokens), ref)
        assert step.cost_factor == pytest.approx(want, rel=1e-9) or step.cost_factor == want


class _Step:
    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.cost_factor: float | None = None


def test_a_step_exactly_at_the_limit_is_kept() -> None:
    """Exactly 3x; from float rates alone it reads 3.0000000000000004, over the limit."""
    a = Deployment.build("openai", "a", "c", catalog=CATALOG,
                         overrides=ModelOverride(input_price=Decimal("0.1"), output_price=Decimal("0.3")))
    b = Deployment.build("openai", "b", "c", catalog=CATALOG,
                         overrides=ModelOverride(input_price=Decimal("0.3"), output_price=Decimal("0.9")))
    assert (7 * 0.3 + 3 * 0.9) / (7 * 0.1 + 3 * 0.3) > 3.0
    kept, guard = apply_cost_guard([_Step(a), _Step(b)], a, 3.0, 7, 3, [])
    assert [s.deployment for s in kept] == [a, b] and guard.excluded == 0
    assert kept[1].cost_factor == 3.0

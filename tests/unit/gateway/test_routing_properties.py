"""Properties of the routing planner over fleets Hypothesis makes up: a plan never
holds a deployment that cannot serve the request, every candidate is either a
step or rejected with a reason, ranking is a sort by score (breakers last) that
does not depend on the fleet's order, and each ``prefer`` is monotone in what it
prefers: cheaper, better or faster never ranks a deployment lower."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.properties import PLANS
from warden.errors import InvalidRequest, NotFound
from warden.gateway.catalog import ModelOverride, get_catalog
from warden.gateway.context import RouteOptions
from warden.gateway.deployment import Deployment
from warden.gateway.health import Health
from warden.gateway.routing import WORST_CASE_OUTPUT, needs_for, plan_route, reachable
from warden.gateway.types import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    ToolChoice,
    ToolSpec,
)

CAPS = ["tools", "vision", "json_schema", "reasoning"]
PRICES = [None, Decimal("0"), Decimal("0.04"), Decimal("0.3"), Decimal("2.5"), Decimal("15"), Decimal("80")]
CATALOG = get_catalog()


@cache
def build(i: int, caps: frozenset[str] | None, context: int | None, quality: float | None,
          inp: Decimal | None, out: Decimal | None, provider: str) -> Deployment:
    over = ModelOverride(input_price=inp, output_price=out, context_window=context, capabilities=caps,
                         quality=quality)
    return Deployment.build(provider, f"model-{i}", f"cred-{i % 3}", catalog=CATALOG, overrides=over)


def fleet_of(specs: list[tuple]) -> list[Deployment]:
    return [build(i, *spec) for i, spec in enumerate(specs)]


specs = st.tuples(
    st.none() | st.frozensets(st.sampled_from([*CAPS, "embeddings"]), max_size=4),
    st.none() | st.sampled_from([1_000, 8_000, 128_000]),
    st.none() | st.sampled_from([0.3, 0.55, 0.7, 0.8, 0.9, 0.95]),
    st.sampled_from(PRICES), st.sampled_from(PRICES), st.sampled_from(["openai", "groq", "deepseek"]))
fleets = st.lists(specs, min_size=1, max_size=8).map(fleet_of)
healths = st.builds(Health, st.booleans(), st.none() | st.sampled_from([50.0, 900.0, 20_000.0]),
                    st.sampled_from([0.0, 0.0, 0.25, 1.0]), st.booleans())


@st.composite
def requests(draw: st.DrawFn, model: str | st.SearchStrategy[str] = "auto") -> ChatRequest:
    parts: list = [TextPart(draw(st.sampled_from(["hi", "Prove step by step that the lemma holds, with a rigorous proof. " * 6])))]
    if draw(st.booleans()):
        parts.append(ImagePart("https://example.invalid/a.png"))
    tools = [ToolSpec("f", "", {"type": "object"})] if draw(st.booleans()) else []
    choice = draw(st.sampled_from([None, ToolChoice("auto"), ToolChoice("none")])) if tools else None
    fmt = ResponseFormat("json_schema", {"type": "object"}) if draw(st.booleans()) else None
    return ChatRequest(model=model if isinstance(model, str) else draw(model),
                       messages=[Message("user", parts)], tools=tools, tool_choice=choice,
                       response_format=fmt, reasoning_effort=draw(st.sampled_from([None, "low", "high"])),
                       max_tokens=draw(st.none() | st.sampled_from([16, 2_000, 200_000])))


def plan_or_none(req: ChatRequest, fleet: list[Deployment], **kw):  # noqa: ANN003, ANN201
    try:
        return plan_route(req, fleet, **kw)
    except InvalidRequest as exc:
        assert exc.code == "no_eligible_deployment" and "no deployment can serve this request" in str(exc)
        return None


@PLANS
@given(requests(), fleets, st.sampled_from(["value", "cost", "quality", "latency"]),
       st.none() | st.sampled_from([Decimal("0.0001"), Decimal("0.05")]), st.data())
def test_auto_plans_only_deployments_that_can_serve(req: ChatRequest, fleet: list[Deployment], prefer: str,
                                                    max_cost: Decimal | None, data: st.DataObject) -> None:
    health = {d.id: data.draw(healths) for d in fleet}
    plan = plan_or_none(req, fleet, health=health, options=RouteOptions(prefer=prefer, max_cost_usd=max_cost))
    needs = needs_for(req, plan.needs.input_tokens) if plan else None
    steps = plan.steps if plan else []
    for step in steps:
        info = step.deployment.info
        assert needs.capabilities <= info.capabilities  # tools, vision, json_schema, reasoning
        assert "embeddings" not in info.capabilities
        assert info.context_window is None or info.context_window >= needs.min_context
        assert info.price_known and info.quality is not None  # auto trusts only what the catalog knows
        if max_cost is not None:
            out = req.max_tokens or min(info.max_output or WORST_CASE_OUTPUT, WORST_CASE_OUTPUT)
            worst = (needs.input_tokens * info.input_price + out * info.output_price) / Decimal(1_000_000)
            assert step.estimated_cost_usd == worst and worst <= max_cost
    if plan is not None:
        # Every candidate is a step or rejected with a reason, never both, never twice.
        step_ids = [s.deployment.id for s in steps]
        rejected = [who for who, _ in plan.rejected]
        assert len(set(step_ids)) == len(step_ids) and not set(step_ids) & set(rejected)
        assert set(step_ids) | set(rejected) == {d.id for d in fleet}
        assert all(why for _, why in plan.rejected)
        # Ranked: open breakers last, then by score, then by id.
        keys = [(health[s.deployment.id].breaker_open, -s.score, s.deployment.id) for s in steps]
        assert keys == sorted(keys)
        assert [s.health for s in steps] == [health[i] for i in step_ids]
        assert all(s.reason.startswith(f"ranked {n} of {len(steps)} by {prefer}; ")
                   for n, s in enumerate(steps, 1))


@PLANS
@given(requests(), fleets, st.randoms(use_true_random=False), st.data())
def test_a_plan_does_not_depend_on_the_fleets_order(req: ChatRequest, fleet: list[Deployment], rnd,
                                                    data: st.DataObject) -> None:
    health = {d.id: data.draw(healths) for d in fleet}
    shuffled = list(fleet)
    rnd.shuffle(shuffled)
    a, b = plan_or_none(req, fleet, health=health), plan_or_none(req, shuffled, health=health)
    assert (a is None) == (b is None)
    if a is not None:
        assert [(s.deployment.id, s.score) for s in a.steps] == [(s.deployment.id, s.score) for s in b.steps]
        assert sorted(a.rejected) == sorted(b.rejected)
        assert a.to_dict() == plan_route(req, fleet, health=health).to_dict()  # deterministic


def _rank(plan, dep_id: str) -> tuple[int, float]:
    for n, s in enumerate(plan.steps):
        if s.deployment.id == dep_id:
            return n, s.score
    raise AssertionError(f"{dep_id} not planned")


@PLANS
@given(st.lists(specs, min_size=2, max_size=6), st.integers(0, 5), st.sampled_from(PRICES[1:]),
       st.sampled_from(["value", "cost"]), st.sampled_from(["hi", "Prove the lemma step by step, rigorously. " * 6]))
def test_cheaper_never_ranks_lower_when_cost_counts(raw: list[tuple], pick: int, cheaper: Decimal,
                                                   prefer: str, text: str) -> None:
    raw = [(frozenset(), None, q if q is not None else 0.7, i if i is not None else Decimal(1),
            o if o is not None else Decimal(1), p) for _, _, q, i, o, p in raw]
    pick %= len(raw)
    caps, ctx, quality, inp, out, provider = raw[pick]
    if cheaper > min(inp, out):
        return
    before_fleet = fleet_of(raw)
    after_fleet = fleet_of([*raw[:pick], (caps, ctx, quality, cheaper, cheaper, provider), *raw[pick + 1:]])
    req = ChatRequest(model="auto", messages=[Message.text("user", text)])
    options = RouteOptions(prefer=prefer)
    before = _rank(plan_route(req, before_fleet, options=options), before_fleet[pick].id)
    after = _rank(plan_route(req, after_fleet, options=options), after_fleet[pick].id)
    assert after[1] >= before[1] and after[0] <= before[0]


@PLANS
@given(st.lists(specs, min_size=2, max_size=6), st.integers(0, 5), st.sampled_from([0.6, 0.85, 0.99]),
       st.sampled_from(["value", "cost", "quality"]))
def test_better_quality_never_ranks_lower(raw: list[tuple], pick: int, better: float, prefer: str) -> None:
    raw = [(frozenset(), None, q if q is not None else 0.5, i if i is not None else Decimal(1),
            o if o is not None else Decimal(1), p) for _, _, q, i, o, p in raw]
    pick %= len(raw)
    caps, ctx, quality, inp, out, provider = raw[pick]
    if better < quality:
        return
    before_fleet = fleet_of(raw)
    after_fleet = fleet_of([*raw[:pick], (caps, ctx, better, inp, out, provider), *raw[pick + 1:]])
    req = ChatRequest(model="auto", messages=[Message.text("user", "hi")])
    options = RouteOptions(prefer=prefer)
    before = _rank(plan_route(req, before_fleet, options=options), before_fleet[pick].id)
    after = _rank(plan_route(req, after_fleet, options=options), after_fleet[pick].id)
    assert after[1] >= before[1] and after[0] <= before[0]


@PLANS
@given(st.lists(specs, min_size=2, max_size=6), st.integers(0, 5),
       st.sampled_from([None, 10.0, 800.0, 9_000.0, 30_000.0]), st.sampled_from([0.0, 0.2, 1.0]),
       st.sampled_from(["value", "cost", "quality", "latency"]))
def test_healthier_never_ranks_lower(raw: list[tuple], pick: int, latency: float | None, errors: float,
                                     prefer: str) -> None:
    """Faster and fewer errors never lower a score; an open breaker always goes last."""
    raw = [(frozenset(), None, 0.8, Decimal(1), Decimal(1), p) for *_, p in raw]
    pick %= len(raw)
    fleet = fleet_of(raw)
    target = fleet[pick].id
    req = ChatRequest(model="auto", messages=[Message.text("user", "hi")])
    options = RouteOptions(prefer=prefer)
    sick = Health(latency_ms=latency, error_rate=errors)
    better = replace(sick, latency_ms=None if latency is None else latency / 2, error_rate=errors / 2)
    worse = _rank(plan_route(req, fleet, health={target: sick}, options=options), target)
    healed = _rank(plan_route(req, fleet, health={target: better}, options=options), target)
    assert healed[1] >= worse[1] and healed[0] <= worse[0]
    broken = plan_route(req, fleet, health={target: Health(breaker_open=True)}, options=options)
    assert broken.steps[-1].deployment.id == target
    assert broken.steps[-1].reason.endswith("circuit breaker open, so tried last.")


@PLANS
@given(requests(model=st.sampled_from(["openai/model-0", "model-1", "groq/*", "grp"])), fleets,
       st.lists(st.sampled_from(["model-2", "deepseek/model-3", "nope"]), max_size=2))
def test_named_models_fallbacks_and_groups_never_repeat_or_lack_a_known_need(
        req: ChatRequest, fleet: list[Deployment], fallbacks: list[str]) -> None:
    groups = {"grp": ["model-2", "openai/model-0", "missing"]}
    try:
        plan = plan_route(req, fleet, groups=groups, options=RouteOptions(fallbacks=fallbacks))
    except InvalidRequest as exc:
        assert exc.code == "no_eligible_deployment"
        return
    except Exception as exc:  # noqa: BLE001 - only "not served" may escape
        assert getattr(exc, "code", None) == "model_not_found", exc
        return
    ids = [s.deployment.id for s in plan.steps]
    assert len(ids) == len(set(ids))
    for step in plan.steps:
        info = step.deployment.info
        if info.described:  # a named model is excluded only for a known lack
            assert plan.needs.capabilities <= info.capabilities
        assert info.context_window is None or info.context_window >= plan.needs.min_context
    primary = [s for s in plan.steps if not s.reason.startswith("fallback '")]
    assert plan.steps[:len(primary)] == primary  # fallbacks come after the model asked for
    assert "nope" not in fallbacks or ("nope", "fallback not served by any deployment") in plan.rejected
    if req.model == "grp":
        assert ("missing", "member of group 'grp' that no deployment serves") in plan.rejected


def outcome(req: ChatRequest, fleet, **kw):  # noqa: ANN001, ANN003, ANN201
    """A plan as data, or the error it ended in."""
    try:
        plan = plan_route(req, fleet, **kw)
    except (InvalidRequest, NotFound) as exc:
        return type(exc).__name__, str(exc)
    return plan.kind, [(s.deployment.id, s.reason, s.score) for s in plan.steps], plan.rejected, \
        plan.complexity.to_dict()


@PLANS
@given(requests(model=st.sampled_from(["auto", "openai/model-0", "model-1", "groq/*", "grp", "nope"])),
       fleets, st.lists(st.sampled_from(["model-2", "deepseek/model-3", "nope", "grp"]), max_size=2),
       st.none() | st.sampled_from([1.0, 4.0]))
def test_planning_over_the_reachable_deployments_is_planning_over_all(
        req: ChatRequest, fleet: list[Deployment], fallbacks: list[str], factor: float | None) -> None:
    """The gateway reads breakers for, and plans over, only what the names can reach."""
    groups = {"grp": ["model-2", "openai/model-0", "missing"]}
    kw = {"groups": groups, "options": RouteOptions(fallbacks=fallbacks), "max_fallback_cost_factor": factor}
    near = reachable([req.model, *fallbacks], fleet, groups)
    assert [d.id for d in near] == [d.id for d in fleet if d in near]  # the fleet's order
    assert outcome(req, near, **kw) == outcome(req, fleet, **kw)


@pytest.mark.parametrize("prefer", ["value", "cost", "quality", "latency"])
def test_each_preference_picks_its_extreme(prefer: str) -> None:
    fleet = fleet_of([(frozenset(), None, 0.95, Decimal(30), Decimal(60), "openai"),   # the best, dear
                      (frozenset(), None, 0.7, Decimal("0.01"), Decimal("0.02"), "groq"),  # cheap, adequate
                      (frozenset(), None, 0.7, Decimal(3), Decimal(6), "deepseek")])      # fast
    health = {fleet[2].id: Health(latency_ms=20.0), fleet[0].id: Health(latency_ms=8_000.0),
              fleet[1].id: Health(latency_ms=6_000.0)}
    plan = plan_route(ChatRequest(model="auto", messages=[Message.text("user", "hi")]), fleet, health=health,
                      options=RouteOptions(prefer=prefer))
    first = {"value": fleet[1], "cost": fleet[1], "quality": fleet[0], "latency": fleet[2]}[prefer]
    assert plan.steps[0].deployment.id == first.id


# --- one plan explained, word for word and score for score ------------------------------


def _golden_fleet() -> tuple[list[Deployment], dict[str, Health]]:
    def d(provider: str, model: str, cred: str, **o) -> Deployment:  # noqa: ANN003
        return Deployment.build(provider, model, cred, catalog=CATALOG,
                                overrides=ModelOverride(capabilities=frozenset(), **o))

    fleet = [d("groq", "openai/gpt-oss-120b", "g1", input_price=Decimal("0.15"), output_price=Decimal("0.6"),
               quality=0.8),
             d("openai", "gpt-oss-120b", "o1", input_price=Decimal("0.01"), output_price=Decimal("0.02")),
             d("ollama", "gpt-oss-120b", "l1", quality=0.6),  # a local provider: free
             d("deepseek", "gpt-oss-120b", "x1", quality=0.9)]  # not in the price snapshot
    health = {fleet[0].id: Health(error_rate=0.25, latency_ms=1234.0), fleet[1].id: Health(probe=True),
              fleet[3].id: Health(latency_ms=20_000.0)}
    return fleet, health


GOLDEN = {'cost': [('l1:gpt-oss-120b',
           0.94,
           'ranked 1 of 4 by cost; quality 0.60; free; cost score 0.940 for a simple request.'),
          ('o1:gpt-oss-120b',
           0.925,
           'ranked 2 of 4 by cost; quality unrated; about $0.0198 per million tokens for this request; cost '
           "score 0.925 for a simple request; recovering: its breaker's cooldown is over, one request probes "
           'it.'),
          ('g1:openai/gpt-oss-120b',
           0.529164,
           'ranked 3 of 4 by cost; quality 0.80; about $0.589 per million tokens for this request; cost '
           'score 0.529 for a simple request; 25% recent errors; recent latency 1234 ms.'),
          ('x1:gpt-oss-120b',
           0.035,
           'ranked 4 of 4 by cost; quality 0.90; price unknown; cost score 0.035 for a simple request; '
           'recent latency 20000 ms.')],
 'latency': [('g1:openai/gpt-oss-120b',
              0.695639,
              'ranked 1 of 4 by latency; quality 0.80; about $0.589 per million tokens for this request; '
              'latency score 0.696 for a simple request; 25% recent errors; recent latency 1234 ms.'),
             ('l1:gpt-oss-120b',
              0.614,
              'ranked 2 of 4 by latency; quality 0.60; free; latency score 0.614 for a simple request.'),
             ('o1:gpt-oss-120b',
              0.605,
              'ranked 3 of 4 by latency; quality unrated; about $0.0198 per million tokens for this request; '
              "latency score 0.605 for a simple request; recovering: its breaker's cooldown is over, one "
              'request probes it.'),
             ('x1:gpt-oss-120b',
              0.081,
              'ranked 4 of 4 by latency; quality 0.90; price unknown; latency score 0.081 for a simple '
              'request; recent latency 20000 ms.')],
 'quality': [('x1:gpt-oss-120b',
              0.755,
              'ranked 1 of 4 by quality; quality 0.90; price unknown; quality score 0.755 for a simple '
              'request; recent latency 20000 ms.'),
             ('g1:openai/gpt-oss-120b',
              0.654807,
              'ranked 2 of 4 by quality; quality 0.80; about $0.589 per million tokens for this request; '
              'quality score 0.655 for a simple request; 25% recent errors; recent latency 1234 ms.'),
             ('l1:gpt-oss-120b',
              0.62,
              'ranked 3 of 4 by quality; quality 0.60; free; quality score 0.620 for a simple request.'),
             ('o1:gpt-oss-120b',
              0.525,
              'ranked 4 of 4 by quality; quality unrated; about $0.0198 per million tokens for this request; '
              "quality score 0.525 for a simple request; recovering: its breaker's cooldown is over, one "
              'request probes it.')],
 'value': [('l1:gpt-oss-120b',
            0.88,
            'ranked 1 of 4 by value; quality 0.60; free; value score 0.880 for a simple request.'),
           ('o1:gpt-oss-120b',
            0.85,
            'ranked 2 of 4 by value; quality unrated; about $0.0198 per million tokens for this request; '
            "value score 0.850 for a simple request; recovering: its breaker's cooldown is over, one request "
            'probes it.'),
           ('g1:openai/gpt-oss-120b',
            0.552722,
            'ranked 3 of 4 by value; quality 0.80; about $0.589 per million tokens for this request; value '
            'score 0.553 for a simple request; 25% recent errors; recent latency 1234 ms.'),
           ('x1:gpt-oss-120b',
            0.17,
            'ranked 4 of 4 by value; quality 0.90; price unknown; value score 0.170 for a simple request; '
            'recent latency 20000 ms.')]}


@pytest.mark.parametrize("prefer", sorted(GOLDEN))
def test_a_bare_model_ranked_and_explained(prefer: str) -> None:
    """A bare id finds every provider serving it (``openai/gpt-oss-120b`` at Groq too)."""
    fleet, health = _golden_fleet()
    plan = plan_route(ChatRequest(model="gpt-oss-120b", messages=[Message.text("user", "hi")]), fleet,
                      health=health, options=RouteOptions(prefer=prefer))
    assert plan.kind == "bare"
    assert [(s.deployment.id, s.reason) for s in plan.steps] == [(i, r) for i, _, r in GOLDEN[prefer]]
    assert [s.score for s in plan.steps] == pytest.approx([sc for _, sc, _ in GOLDEN[prefer]], abs=1e-6)


def test_a_providers_wildcard_is_its_deployments_best_quality_first() -> None:
    fleet, health = _golden_fleet()
    extra = [Deployment.build("groq", name, cred, catalog=CATALOG,
                              overrides=ModelOverride(capabilities=frozenset(), quality=q))
             for name, cred, q in (("llama-x", "g2", 0.95), ("aaa", "g3", None), ("bbb", "g4", None))]
    plan = plan_route(ChatRequest(model="groq/*", messages=[Message.text("user", "hi")]), fleet + extra,
                      health=health)
    assert plan.kind == "group"
    assert [(s.deployment.id, s.reason) for s in plan.steps] == [
        ("g2:llama-x", "in the order of group 'groq/*'; quality 0.95; price unknown."),
        ("g1:openai/gpt-oss-120b", "in the order of group 'groq/*'; quality 0.80; about $0.589 per million "
                                   "tokens for this request; 25% recent errors; recent latency 1234 ms."),
        ("g3:aaa", "in the order of group 'groq/*'; quality unrated; price unknown."),
        ("g4:bbb", "in the order of group 'groq/*'; quality unrated; price unknown.")]
    with pytest.raises(NotFound):
        plan_route(ChatRequest(model="mistral/*", messages=[Message.text("user", "hi")]), fleet)

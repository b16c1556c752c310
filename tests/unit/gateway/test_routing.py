from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest

from warden.errors import InvalidRequest, NotFound
from warden.gateway.catalog import Catalog, ModelOverride, get_catalog
from warden.gateway.routing import plan_route
from warden.gateway.health import Health
from warden.gateway.deployment import Deployment
from warden.gateway.context import RouteOptions
from warden.gateway.types import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    ToolChoice,
    ToolSpec,
)

HARD = (
    "Prove step by step that every bounded monotone sequence converges. Use induction where needed "
    "and give a rigorous proof of the lemma, with a counterexample for the unbounded case."
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return get_catalog()


def dep(catalog: Catalog, provider: str, model: str, cred: str | None = None, **override) -> Deployment:
    o = ModelOverride(**override) if override else None
    return Deployment.build(provider, model, cred or f"c-{provider}", catalog=catalog, overrides=o)


@pytest.fixture(scope="module")
def fleet(catalog: Catalog) -> list[Deployment]:
    specs = [
        ("openai", "gpt-5"), ("openai", "gpt-4o-mini"), ("openai", "gpt-5-nano"),
        ("anthropic", "claude-opus-4-5"), ("anthropic", "claude-haiku-4-5"),
        ("groq", "llama-3.1-8b-instant"), ("deepseek", "deepseek-chat"), ("deepseek", "deepseek-reasoner"),
        ("gemini", "gemini-2.5-flash"), ("cerebras", "llama3.1-8b"),
    ]
    return [dep(catalog, p, m) for p, m in specs]


def ask(text: str = "hi", model: str = "auto", **kw) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message.text("user", text)], **kw)


def ids(plan) -> list[str]:
    return [s.deployment.id for s in plan.steps]


def rejected(plan) -> dict[str, str]:
    return dict(plan.rejected)


# --- auto: value ranking ------------------------------------------------------------


def test_simple_prompt_favours_a_cheap_adequate_model(fleet, catalog) -> None:
    plan = plan_route(ask("hi"), fleet, catalog=catalog)
    assert plan.kind == "auto" and plan.complexity.level == "simple"
    first = plan.steps[0].deployment.info
    assert first.quality >= 0.5
    assert first.output_rate < 1.0  # a cheap model, not a flagship
    assert plan.steps[0].deployment.id == "c-openai:gpt-5-nano"
    assert "ranked 1 of" in plan.steps[0].reason and "simple request" in plan.steps[0].reason


def test_advanced_prompt_favours_quality(fleet, catalog) -> None:
    plan = plan_route(ask(HARD), fleet, catalog=catalog)
    assert plan.complexity.level == "advanced"
    assert [s.deployment.model for s in plan.steps[:3]] == ["gpt-5", "claude-opus-4-5", "deepseek-reasoner"]
    # Models below the advanced quality floor are pushed down, cheap or not.
    assert [s.deployment.model for s in plan.steps[-2:]] == ["llama-3.1-8b-instant", "llama3.1-8b"]
    scores = [s.score for s in plan.steps]
    assert scores == sorted(scores, reverse=True)


def test_prefer_cost_and_quality(fleet, catalog) -> None:
    cheapest = plan_route(ask(HARD), fleet, options=RouteOptions(prefer="cost"), catalog=catalog)
    best = plan_route(ask("hi"), fleet, options=RouteOptions(prefer="quality"), catalog=catalog)
    # Even for an advanced prompt, "cost" puts a cheap model first (the value ranking would not).
    assert cheapest.steps[0].deployment.model == "gpt-5-nano"
    assert best.steps[0].deployment.model == "claude-opus-4-5"
    assert "by quality" in best.steps[0].reason and best.prefer == "quality"


def test_prefer_latency_uses_live_latency(catalog) -> None:
    a, b = dep(catalog, "openai", "gpt-5", "fast"), dep(catalog, "openai", "gpt-5-nano", "slow")
    health = {a.id: Health(latency_ms=300), b.id: Health(latency_ms=6_000)}
    plan = plan_route(ask(), [b, a], health=health, options=RouteOptions(prefer="latency"), catalog=catalog)
    assert ids(plan) == [a.id, b.id]
    assert "recent latency 300 ms" in plan.steps[0].reason
    unknown = plan_route(ask(), [b, a], options=RouteOptions(prefer="latency"), catalog=catalog)
    assert ids(unknown)[0] == b.id  # no latency known: value decides


# --- needs ------------------------------------------------------------------------


def test_tools_filter(fleet, catalog) -> None:
    plan = plan_route(ask(tools=[ToolSpec("lookup")]), fleet, catalog=catalog)
    assert "c-deepseek:deepseek-reasoner" not in ids(plan)
    assert rejected(plan)["c-deepseek:deepseek-reasoner"] == "lacks: needs tools"
    assert plan.needs.capabilities == frozenset({"tools"})
    off = plan_route(ask(tools=[ToolSpec("x")], tool_choice=ToolChoice("none")), fleet, catalog=catalog)
    assert "c-deepseek:deepseek-reasoner" in ids(off)


def test_vision_and_json_schema_filter(fleet, catalog) -> None:
    image = ChatRequest(
        model="auto",
        messages=[Message(role="user", content=[TextPart("what is it"), ImagePart(url="http://x/a.png")])],
        response_format=ResponseFormat(type="json_schema", schema={"type": "object"}),
    )
    plan = plan_route(image, fleet, catalog=catalog)
    assert plan.needs.capabilities == frozenset({"vision", "json_schema"})
    assert rejected(plan)["c-deepseek:deepseek-chat"] == "lacks: needs json_schema, vision"
    assert rejected(plan)["c-groq:llama-3.1-8b-instant"] == "lacks: needs json_schema, vision"
    for step in plan.steps:
        assert {"vision", "json_schema"} <= step.deployment.info.capabilities


def test_reasoning_effort_needs_a_reasoning_model(fleet, catalog) -> None:
    plan = plan_route(ask(reasoning_effort="low"), fleet, catalog=catalog)
    assert all(s.deployment.info.has("reasoning") for s in plan.steps)
    assert rejected(plan)["c-openai:gpt-4o-mini"] == "lacks: needs reasoning"


def test_context_window_filter(fleet, catalog) -> None:
    plan = plan_route(ask(max_tokens=60_000), fleet, catalog=catalog)
    why = rejected(plan)["c-cerebras:llama3.1-8b"]
    assert why.startswith("context window 32768 tokens is below the ~60") and "max_tokens" in why
    assert plan.needs.min_context == plan.needs.input_tokens + 60_000


def test_auto_skips_unknown_price_and_unrated_models(catalog) -> None:
    unpriced = dep(catalog, "together", "deepseek-ai/DeepSeek-V3.1")
    unrated = dep(catalog, "ollama", "llama3.2")
    rated_local = dep(catalog, "ollama", "qwen3:8b", "c-local", quality=0.6, capabilities=frozenset({"tools"}))
    plan = plan_route(ask(), [unpriced, unrated, rated_local], catalog=catalog)
    assert ids(plan) == [rated_local.id]
    assert "free" in plan.steps[0].reason
    assert rejected(plan)[unpriced.id] == "price unknown; used only when asked for by name"
    assert rejected(plan)[unrated.id].startswith("no quality score in the catalog")
    tools = plan_route(ask(tools=[ToolSpec("t")]), [unrated, rated_local], catalog=catalog)
    assert rejected(tools)[unrated.id] == "capabilities unknown (not in the catalog): needs tools"


# --- explicit, bare, groups ----------------------------------------------------------


def test_explicit_keeps_credential_order_and_appends_fallbacks(catalog, fleet) -> None:
    first = dep(catalog, "openai", "gpt-5", "cred-b")
    second = dep(catalog, "openai", "gpt-5", "cred-a")
    deps = [*fleet, first, second]
    opts = RouteOptions(fallbacks=["anthropic/claude-haiku-4-5", "no/such-model", "openai/gpt-5"])
    plan = plan_route(ask(HARD, model="openai/gpt-5"), deps, options=opts, catalog=catalog)
    assert plan.kind == "explicit"
    assert ids(plan) == ["c-openai:gpt-5", "cred-b:gpt-5", "cred-a:gpt-5", "c-anthropic:claude-haiku-4-5"]
    assert plan.steps[0].reason.startswith("requested by name;")
    assert plan.steps[3].reason.startswith("fallback 'anthropic/claude-haiku-4-5', requested by name;")
    assert rejected(plan)["no/such-model"] == "fallback not served by any deployment"


def test_explicit_trusts_undescribed_models_but_not_known_lacks(catalog) -> None:
    local = dep(catalog, "ollama", "llama3.2")
    plan = plan_route(ask(model="ollama/llama3.2", tools=[ToolSpec("t")]), [local], catalog=catalog)
    assert ids(plan) == [local.id] and "quality unrated" in plan.steps[0].reason
    reasoner = dep(catalog, "deepseek", "deepseek-reasoner")
    with pytest.raises(InvalidRequest) as err:
        plan_route(ask(model="deepseek/deepseek-reasoner", tools=[ToolSpec("t")]), [reasoner], catalog=catalog)
    assert err.value.code == "no_eligible_deployment" and err.value.status == 400
    assert "lacks: needs tools" in err.value.message


def test_explicit_model_with_unknown_price_is_callable(catalog) -> None:
    unpriced = dep(catalog, "together", "deepseek-ai/DeepSeek-V3.1")
    plan = plan_route(ask(model="together/deepseek-ai/DeepSeek-V3.1"), [unpriced], catalog=catalog)
    assert plan.kind == "explicit" and ids(plan) == [unpriced.id]
    assert "price unknown" in plan.steps[0].reason


def test_bare_model_id_spans_providers_and_is_ranked(catalog) -> None:
    deps = [
        dep(catalog, "groq", "openai/gpt-oss-120b"),
        dep(catalog, "cerebras", "gpt-oss-120b"),
        dep(catalog, "fireworks", "accounts/fireworks/models/gpt-oss-120b"),
        dep(catalog, "openai", "gpt-5"),
    ]
    plan = plan_route(ask(model="gpt-oss-120b"), deps, catalog=catalog)
    assert plan.kind == "bare"
    assert sorted(ids(plan)) == sorted(d.id for d in deps[:3])
    assert [s.score for s in plan.steps] == sorted((s.score for s in plan.steps), reverse=True)
    # A slash in a model id that is not a provider prefix is still a bare id.
    only_groq = plan_route(ask(model="openai/gpt-oss-120b"), deps, catalog=catalog)
    assert only_groq.kind == "bare" and ids(only_groq) == ["c-groq:openai/gpt-oss-120b"]


def test_group_keeps_its_order(catalog, fleet) -> None:
    groups = {"smart": ["anthropic/claude-haiku-4-5", "gone/model", "openai/gpt-5", "deepseek-chat"]}
    plan = plan_route(ask(HARD, model="smart"), fleet, groups=groups, catalog=catalog)
    assert plan.kind == "group"
    assert ids(plan) == ["c-anthropic:claude-haiku-4-5", "c-openai:gpt-5", "c-deepseek:deepseek-chat"]
    assert rejected(plan)["gone/model"] == "member of group 'smart' that no deployment serves"
    assert "in the order of group 'smart'" in plan.steps[0].reason


def test_unknown_model_is_not_found(fleet, catalog) -> None:
    with pytest.raises(NotFound) as err:
        plan_route(ask(model="openai/gpt-99"), fleet, catalog=catalog)
    assert (err.value.code, err.value.status, err.value.param) == ("model_not_found", 404, "model")
    assert "gpt-99" in err.value.message


def test_nothing_eligible_explains_why(catalog) -> None:
    with pytest.raises(InvalidRequest) as err:
        plan_route(ask(), [], catalog=catalog)
    assert err.value.code == "no_eligible_deployment"
    assert err.value.message.endswith("no provider keys are configured: add one with "
                                      "`warden byok add PROVIDER --key -` (or POST /api/byok)")
    deps = [dep(catalog, "deepseek", "deepseek-reasoner", f"k{i}") for i in range(7)]
    with pytest.raises(InvalidRequest) as err:
        plan_route(ask(tools=[ToolSpec("t")]), deps, catalog=catalog)
    assert "k0:deepseek-reasoner: lacks: needs tools" in err.value.message
    assert "(and 2 more)" in err.value.message


# --- health -----------------------------------------------------------------------


def test_open_breaker_goes_last_even_when_explicit(catalog) -> None:
    a, b, c = (dep(catalog, "openai", "gpt-5", f"k{i}") for i in range(3))
    health = {a.id: Health(breaker_open=True)}
    explicit = plan_route(ask(model="openai/gpt-5"), [a, b, c], health=health, catalog=catalog)
    assert ids(explicit) == [b.id, c.id, a.id]
    assert "circuit breaker open, so tried last" in explicit.steps[-1].reason
    auto = plan_route(ask(), [a, b, c], health=health, catalog=catalog)
    assert ids(auto)[-1] == a.id


def test_error_rate_and_latency_penalise(catalog) -> None:
    a, b = dep(catalog, "openai", "gpt-5-mini", "a"), dep(catalog, "openai", "gpt-5-mini", "b")
    plan = plan_route(ask(model="gpt-5-mini"), [a, b], health={a.id: Health(error_rate=0.4)}, catalog=catalog)
    assert ids(plan) == [b.id, a.id]
    assert "40% recent errors" in plan.steps[1].reason
    slow = plan_route(ask(), [a, b], health={b.id: Health(latency_ms=9_000)}, catalog=catalog)
    assert ids(slow) == [a.id, b.id]
    assert slow.steps[0].score > slow.steps[1].score


# --- cost ceiling -------------------------------------------------------------------


def test_max_cost_excludes_expensive_and_unpriced(catalog, fleet) -> None:
    unpriced = dep(catalog, "together", "deepseek-ai/DeepSeek-V3.1")
    opts = RouteOptions(max_cost_usd=Decimal("0.002"))
    plan = plan_route(ask("hi", model="auto", max_tokens=1_000), [*fleet, unpriced], options=opts, catalog=catalog)
    why = rejected(plan)["c-anthropic:claude-opus-4-5"]
    assert why.startswith("estimated worst-case cost $0.025") and why.endswith("exceeds max_cost_usd $0.002")
    for step in plan.steps:
        assert step.estimated_cost_usd is not None and step.estimated_cost_usd <= Decimal("0.002")
    explicit = plan_route(ask(model="together/deepseek-ai/DeepSeek-V3.1"), [unpriced], catalog=catalog)
    assert explicit.steps
    with pytest.raises(InvalidRequest, match="max_cost_usd cannot be guaranteed"):
        plan_route(ask(model="together/deepseek-ai/DeepSeek-V3.1"), [unpriced], options=opts, catalog=catalog)


def test_max_cost_without_max_tokens_assumes_a_capped_answer(catalog) -> None:
    nano = dep(catalog, "openai", "gpt-5-nano")
    opts = RouteOptions(max_cost_usd=Decimal("1"))
    step = plan_route(ask(), [nano], options=opts, catalog=catalog).steps[0]
    info = nano.info
    # prompt estimate + 4096 output tokens at worst-case rates
    assert step.estimated_cost_usd == (plan_route(ask(), [nano], catalog=catalog).needs.input_tokens * info.input_price
                      + 4_096 * info.output_price) / Decimal(1_000_000)


# --- output -----------------------------------------------------------------------


def test_plan_is_json_serialisable_and_deterministic(fleet, catalog) -> None:
    opts = RouteOptions(prefer="value", fallbacks=["gpt-5"], max_cost_usd=Decimal("5"))
    req = ask("Compare and contrast these designs", tools=[ToolSpec("t")])
    a = plan_route(req, fleet, options=opts, catalog=catalog).to_dict()
    b = plan_route(req, fleet, options=opts, catalog=catalog).to_dict()
    assert a == b
    assert json.loads(orjson.dumps(a)) == a
    assert a["kind"] == "auto" and a["needs"]["capabilities"] == ["tools"]
    step = a["steps"][0]
    assert set(step) >= {"deployment", "provider", "model", "score", "reason", "estimated_cost_usd"}
    assert isinstance(step["estimated_cost_usd"], str)
    assert {"deployment": "c-deepseek:deepseek-reasoner", "reason": "lacks: needs tools"} in a["rejected"]
    assert a["complexity"]["level"] in ("simple", "moderate", "complex", "advanced")


def test_fallback_duplicates_are_not_repeated(fleet, catalog) -> None:
    opts = RouteOptions(fallbacks=["auto", "openai/gpt-5"])
    plan = plan_route(ask(model="openai/gpt-5"), fleet, options=opts, catalog=catalog)
    assert len(ids(plan)) == len(set(ids(plan)))
    assert ids(plan)[0] == "c-openai:gpt-5"
    assert len(plan.steps) == len(fleet)
    assert "fallback 'auto', ranked 1 of" in plan.steps[1].reason


def test_deployment_ids() -> None:
    cat = get_catalog()
    assert Deployment.build("openai", "gpt-5", "cred1", catalog=cat).id == "cred1:gpt-5"
    d = Deployment.build("ollama", "llama3", catalog=cat)
    assert (d.id, d.name, d.credential_id) == ("ollama:llama3", "ollama/llama3", None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, RouteOptions()),
        ({"prefer": "cost", "fallbacks": ["a/b"], "max_cost_usd": 0.5},
         RouteOptions(prefer="cost", fallbacks=["a/b"], max_cost_usd=Decimal("0.5"))),
    ],
)
def test_route_options_from_dict(raw, expected) -> None:
    assert RouteOptions.from_dict(raw) == expected


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ({"prefer": "speed"}, "warden.prefer"),
        ({"fallbacks": "a/b"}, "warden.fallbacks"),
        ({"fallbacks": [""]}, "warden.fallbacks"),
        ({"max_cost_usd": "lots"}, "warden.max_cost_usd"),
        ({"max_cost_usd": -1}, "warden.max_cost_usd"),
        ({"max_cost_usd": True}, "warden.max_cost_usd"),
    ],
)
def test_route_options_from_dict_rejects(raw, param) -> None:
    with pytest.raises(InvalidRequest) as err:
        RouteOptions.from_dict(raw)
    assert err.value.param == param


# --- embeddings -----------------------------------------------------------------------


def test_chat_never_gets_an_embedding_model_and_embeddings_only_get_them(catalog, fleet) -> None:
    small = dep(catalog, "openai", "text-embedding-3-small")
    plan = plan_route(ask(), [*fleet, small])
    assert small.id not in ids(plan)
    assert rejected(plan)[small.id] == "an embedding model: it serves /v1/embeddings only"
    with pytest.raises(InvalidRequest, match="embedding model"):
        plan_route(ask(model="openai/text-embedding-3-small"), [*fleet, small])
    emb = plan_route(EmbeddingRequest("auto", ["hello", "world"]), [*fleet, small])
    assert ids(emb) == [small.id] and emb.needs.capabilities == frozenset({"embeddings"})
    assert emb.complexity.level == "simple" and "lacks: needs embeddings" in rejected(emb)[fleet[0].id]
    # An undescribed model asked for by name gets the benefit of the doubt (a local embedder).
    local = dep(catalog, "ollama", "nomic-embed-text")
    named = plan_route(EmbeddingRequest("ollama/nomic-embed-text", ["x"]), [small, local])
    assert ids(named) == [local.id] and named.kind == "explicit"


def test_embedding_context_is_per_input_and_max_cost_counts_no_output(catalog) -> None:
    small = dep(catalog, "openai", "text-embedding-3-small")
    many = EmbeddingRequest("text-embedding-3-small", ["word " * 1000] * 50)  # 50 x ~1,250 tokens
    assert ids(plan_route(many, [small])) == [small.id]
    huge = EmbeddingRequest("text-embedding-3-small", ["w" * 40_000])  # ~10,000 tokens > 8,191
    with pytest.raises(InvalidRequest, match="context window 8192"):
        plan_route(huge, [small])
    priced = plan_route(EmbeddingRequest("text-embedding-3-small", ["abcd" * 100]), [small],
                        options=RouteOptions(max_cost_usd=Decimal("0.000002")))
    assert priced.steps[0].estimated_cost_usd == Decimal(100) * Decimal("0.02") / 1_000_000

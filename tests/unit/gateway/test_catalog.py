"""Catalog: prices from the genai-prices snapshot, facts from models.json, overrides.

Expected costs are computed here by hand from the snapshot's published rates
(never through Warden's code or genai-prices' calc), so a wrong usage mapping
or a wrong rate shows up as a different Decimal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price
from genai_prices import types as gp
from genai_prices.data_snapshot import get_snapshot
from pydantic import ValidationError

from warden.gateway.catalog import (
    CAPABILITIES,
    Catalog,
    ModelOverride,
    ModelSpec,
    get_catalog,
    load_model_data,
)
from warden.gateway.providers.registry import PROVIDERS
from warden.gateway.types import Usage

M = Decimal(1_000_000)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def snapshot_prices(prices_id: str, model: str, at: datetime = NOW) -> gp.ModelPrice:
    """The snapshot's rates for a model, read straight from the data."""
    _, info = get_snapshot().find_provider_model(model, None, prices_id, None)
    return info.get_prices(at)


def rate(value: Decimal | gp.TieredPrices, input_tokens: int = 0) -> Decimal:
    if isinstance(value, gp.TieredPrices):
        chosen = value.base
        for tier in value.tiers:
            if input_tokens > tier.start:
                chosen = tier.price
        return chosen
    return value


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return get_catalog()


# --- exact cost ----------------------------------------------------------------


def test_anthropic_cost_with_cache_read_write_and_reasoning(catalog: Catalog) -> None:
    p = snapshot_prices("anthropic", "claude-sonnet-4-0")
    usage = Usage(
        input_tokens=12_000, output_tokens=3_000, cache_read_tokens=5_000, cache_write_tokens=2_000,
        reasoning_tokens=1_200,
    )
    # Our input includes cache reads and writes; output includes reasoning.
    expected = (
        (12_000 - 5_000 - 2_000) * p.input_mtok
        + 5_000 * p.cache_read_mtok
        + 2_000 * p.cache_write_mtok
        + 3_000 * p.output_mtok
    ) / M
    got = catalog.cost("anthropic", "claude-sonnet-4-0", usage, at=NOW)
    assert got == expected
    assert isinstance(got, Decimal)
    assert got == Decimal("0.069")  # (5000*3 + 5000*0.3 + 2000*3.75 + 3000*15) per M


def test_openai_cost_with_cache_reads_and_dated_model_id(catalog: Catalog) -> None:
    p = snapshot_prices("openai", "gpt-4o")
    usage = Usage(input_tokens=2_000, output_tokens=750, cache_read_tokens=1_024)
    expected = ((2_000 - 1_024) * p.input_mtok + 1_024 * p.cache_read_mtok + 750 * p.output_mtok) / M
    assert catalog.cost("openai", "gpt-4o-2024-08-06", usage, at=NOW) == expected


def test_reasoning_tokens_are_not_billed_twice(catalog: Catalog) -> None:
    p = snapshot_prices("openai", "o4-mini")
    with_reasoning = Usage(input_tokens=100, output_tokens=900, reasoning_tokens=800)
    assert catalog.cost("openai", "o4-mini", with_reasoning, at=NOW) == (
        100 * p.input_mtok + 900 * p.output_mtok
    ) / M


def test_tiered_price_applies_above_the_threshold(catalog: Catalog) -> None:
    p = snapshot_prices("anthropic", "claude-sonnet-4-5")
    assert isinstance(p.input_mtok, gp.TieredPrices)
    threshold = p.input_mtok.tiers[0].start
    big = Usage(input_tokens=threshold + 1_000, output_tokens=1_000)
    small = Usage(input_tokens=threshold - 1_000, output_tokens=1_000)
    big_expected = (
        (threshold + 1_000) * rate(p.input_mtok, threshold + 1_000)
        + 1_000 * rate(p.output_mtok, threshold + 1_000)
    ) / M
    small_expected = ((threshold - 1_000) * p.input_mtok.base + 1_000 * p.output_mtok.base) / M
    assert catalog.cost("anthropic", "claude-sonnet-4-5", big, at=NOW) == big_expected
    assert catalog.cost("anthropic", "claude-sonnet-4-5", small, at=NOW) == small_expected
    assert big_expected > small_expected * 2


def test_time_of_day_prices_follow_the_request_time(catalog: Catalog) -> None:
    peak = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    off_peak = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)
    usage = Usage(input_tokens=10_000, output_tokens=2_000)
    costs = {}
    for label, at in (("peak", peak), ("off", off_peak)):
        p = snapshot_prices("deepseek", "deepseek-chat", at)
        costs[label] = (10_000 * p.input_mtok + 2_000 * p.output_mtok) / M
        assert catalog.cost("deepseek", "deepseek-chat", usage, at=at) == costs[label]
    assert costs["peak"] != costs["off"]


def test_inconsistent_counts_are_clamped_not_fatal(catalog: Catalog) -> None:
    p = snapshot_prices("anthropic", "claude-sonnet-4-0")
    # A provider reporting more cache reads than input: input is taken as the reads.
    usage = Usage(input_tokens=100, output_tokens=10, cache_read_tokens=400, reasoning_tokens=50)
    expected = (400 * p.cache_read_mtok + 50 * p.output_mtok) / M
    assert catalog.cost("anthropic", "claude-sonnet-4-0", usage, at=NOW) == expected


def test_cost_defaults_to_now(catalog: Catalog) -> None:
    p = snapshot_prices("openai", "gpt-4.1-mini", datetime.now(tz=UTC))
    assert catalog.cost("openai", "gpt-4.1-mini", Usage(input_tokens=1_000, output_tokens=0)) == (
        1_000 * p.input_mtok / M
    )


# --- unknown prices --------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "not-a-real-model-xyz"),
        ("together", "deepseek-ai/DeepSeek-V3.1"),  # described in models.json, absent from the snapshot
        ("no-such-provider", "gpt-4o"),
        ("mistral", "mistral-nemo:free"),  # in the snapshot but with no token prices
    ],
)
def test_unknown_price_is_none_never_zero(catalog: Catalog, provider: str, model: str) -> None:
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    assert catalog.cost(provider, model, usage) is None
    assert catalog.estimate_cost(provider, model, 1_000, 1_000) is None
    info = catalog.model_info(provider, model)
    assert info.price_known is False
    assert info.input_price is None and info.input_rate is None


# --- local and overrides ---------------------------------------------------------


def test_local_provider_is_free_unless_the_credential_says_otherwise(catalog: Catalog) -> None:
    usage = Usage(input_tokens=5_000, output_tokens=5_000)
    assert catalog.cost("ollama", "llama3.1:8b", usage) == Decimal(0)
    assert catalog.model_info("ollama", "llama3.1:8b").free is True
    assert catalog.cost("openai-compatible", "my-model", usage) == Decimal(0)
    not_free = ModelOverride(free=False)
    assert catalog.cost("openai-compatible", "my-model", usage, not_free) is None
    assert catalog.model_info("openai-compatible", "my-model", not_free).price_known is False


def test_declared_free_hosted_model_costs_zero(catalog: Catalog) -> None:
    info = catalog.model_info("openai", "gpt-4o", ModelOverride(free=True))
    assert info.free and info.price_known and info.input_price == 0
    assert catalog.cost("openai", "gpt-4o", Usage(10, 10), ModelOverride(free=True)) == 0


def test_override_prices_replace_the_snapshot(catalog: Catalog) -> None:
    o = ModelOverride(input_price=Decimal("2"), output_price=Decimal("8"), cache_write_price=Decimal("2.5"))
    usage = Usage(input_tokens=10_000, output_tokens=1_000, cache_read_tokens=4_000, cache_write_tokens=1_000)
    # cache reads default to the input price; cache writes use their own.
    expected = (5_000 * Decimal(2) + 4_000 * Decimal(2) + 1_000 * Decimal("2.5") + 1_000 * Decimal(8)) / M
    assert catalog.cost("openai-compatible", "served-model", usage, o) == expected
    info = catalog.model_info("openai-compatible", "served-model", o)
    assert (info.price_known, info.free, info.input_price, info.output_price) == (
        True, False, Decimal(2), Decimal(8),
    )
    cr = ModelOverride(input_price=Decimal("1"), output_price=Decimal("1"), cache_read_price=Decimal("0.1"))
    assert catalog.cost("openai", "gpt-4o", Usage(input_tokens=1_000, cache_read_tokens=1_000), cr) == (
        Decimal("0.0001")
    )


def test_override_facts(catalog: Catalog) -> None:
    o = ModelOverride(
        context_window=4_096, max_output=512, capabilities=frozenset({"tools"}), quality=0.3
    )
    info = catalog.model_info("openai", "gpt-5", o)
    assert (info.context_window, info.max_output, info.capabilities, info.quality) == (
        4_096, 512, frozenset({"tools"}), 0.3,
    )
    bare = catalog.model_info("ollama", "qwen3:8b", ModelOverride(capabilities=frozenset({"tools"})))
    assert bare.described is True and bare.quality is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, ModelOverride()),
        (
            {"input_price": 0.5, "output_price": "1.5", "context_window": 8192, "capabilities": ["vision"],
             "quality": 1, "free": False, "max_output": 100, "cache_read_price": 0, "cache_write_price": None},
            ModelOverride(
                input_price=Decimal("0.5"), output_price=Decimal("1.5"), cache_read_price=Decimal(0),
                context_window=8192, max_output=100, capabilities=frozenset({"vision"}), quality=1.0,
                free=False,
            ),
        ),
    ],
)
def test_override_from_a_model_entry(raw: dict, expected: ModelOverride) -> None:
    assert ModelSpec.model_validate({"id": "m", **raw}).override() == expected


@pytest.mark.parametrize(
    "raw",
    [
        {"input_price": -1},
        {"input_price": "abc"},
        {"output_price": True},
        {"input_price": "NaN"},
        {"context_window": 0},
        {"context_window": True},
        {"max_output": 1.5},
        {"capabilities": "tools"},
        {"capabilities": ["tools", "telepathy"]},
        {"quality": 1.5},
        {"quality": True},
        {"free": "yes"},
    ],
)
def test_model_entry_rejects_bad_overrides(raw: dict) -> None:
    with pytest.raises(ValidationError) as exc:
        ModelSpec.model_validate({"id": "m", **raw})
    assert exc.value.errors()[0]["loc"][0] == next(iter(raw))  # names the field


# --- facts -------------------------------------------------------------------------


def test_model_info_combines_snapshot_and_data_file(catalog: Catalog) -> None:
    info = catalog.model_info("anthropic", "claude-sonnet-4-5-20250929")
    _, snap = get_snapshot().find_provider_model("claude-sonnet-4-5", None, "anthropic", None)
    assert info.context_window == snap.context_window
    assert info.capabilities == frozenset({"tools", "vision", "json_schema", "reasoning"})
    assert info.quality == 0.91 and info.max_output == 64_000 and info.described
    # Gemini's "models/" resource form and a context window only the data file has.
    gem = catalog.model_info("gemini", "models/gemini-3-pro-preview")
    assert gem.described and gem.context_window == 1_048_576 and gem.price_known
    assert catalog.model_info("deepseek", "deepseek-reasoner").has("tools") is False


def test_undescribed_model_has_no_claimed_capabilities(catalog: Catalog) -> None:
    info = catalog.model_info("openrouter", "openai/gpt-4o")
    assert info.price_known is True  # priced by genai-prices
    assert info.described is False and info.capabilities == frozenset() and info.quality is None


def test_estimate_cost_is_worst_case(catalog: Catalog) -> None:
    tiered = snapshot_prices("anthropic", "claude-sonnet-4-5")
    top_in = max([tiered.input_mtok.base, *(t.price for t in tiered.input_mtok.tiers)])
    top_out = max([tiered.output_mtok.base, *(t.price for t in tiered.output_mtok.tiers)])
    assert catalog.estimate_cost("anthropic", "claude-sonnet-4-5", 1_000, 2_000) == (
        1_000 * top_in + 2_000 * top_out
    ) / M
    # DeepSeek: the higher of its time-of-day prices, whatever the time now.
    peak = snapshot_prices("deepseek", "deepseek-chat", datetime(2026, 1, 1, 8, tzinfo=UTC))
    off = snapshot_prices("deepseek", "deepseek-chat", datetime(2026, 1, 1, 20, tzinfo=UTC))
    worst_in = max(peak.input_mtok, off.input_mtok)
    worst_out = max(peak.output_mtok, off.output_mtok)
    assert catalog.estimate_cost("deepseek", "deepseek-chat", 1_000, 1_000) == (
        1_000 * worst_in + 1_000 * worst_out
    ) / M
    assert catalog.estimate_cost("ollama", "llama3", 10**6, 10**6) == 0


def test_known_models(catalog: Catalog) -> None:
    names = catalog.known_models("openai")
    assert "gpt-5" in names and names == sorted(names)
    assert catalog.known_models("ollama") == []
    names.append("mutated")
    assert "mutated" not in catalog.known_models("openai")


def test_custom_data_and_latest_alias() -> None:
    data = {
        "as_of": "2000-01-01",
        "sources": ["test"],
        "models": {"anthropic": {"Claude-3-7-Sonnet": {"capabilities": ["tools"], "quality": 0.5}}},
    }
    cat = Catalog(data=data)
    assert cat.as_of == "2000-01-01" and cat.sources == ["test"]
    assert cat.model_info("anthropic", "claude-3-7-sonnet-latest").quality == 0.5
    assert cat.model_info("gemini", "gemini-2.5-pro").described is False


def test_catalog_is_built_once_and_cached() -> None:
    assert get_catalog() is get_catalog()
    cat = get_catalog()
    assert cat.model_info("openai", "gpt-5") is cat.model_info("openai", "gpt-5")
    assert get_snapshot().from_auto_update is False


def test_info_to_dict(catalog: Catalog) -> None:
    d = catalog.model_info("openai", "gpt-4o-mini").to_dict()
    p = snapshot_prices("openai", "gpt-4o-mini")
    assert d["input_price_per_mtok"] == str(p.input_mtok)
    assert d["capabilities"] == ["json_schema", "tools", "vision"]
    assert catalog.model_info("openai", "nope").to_dict()["output_price_per_mtok"] is None


def test_data_file_is_well_formed() -> None:
    data = load_model_data()
    assert data["as_of"] and len(data["sources"]) >= 10
    required = {"openai", "anthropic", "gemini", "deepseek", "groq", "mistral", "xai", "moonshot",
                "together", "fireworks", "cerebras"}
    assert required <= set(data["models"])
    for provider, models in data["models"].items():
        assert provider in PROVIDERS
        for name, entry in models.items():
            assert set(entry["capabilities"]) <= CAPABILITIES, name
            assert 0 <= entry["quality"] <= 1, name
            if "embeddings" in entry["capabilities"]:  # an embedding model: it generates nothing
                assert entry["capabilities"] == ["embeddings"] and "max_output" not in entry, name
                assert entry["context_window"] > 0, name
            else:
                assert entry["context_window"] > 0 and entry["max_output"] > 0, name


def test_input_only_prices_estimate_output_at_zero(catalog: Catalog) -> None:
    p = snapshot_prices("together", "together/Tev1-4B-experimental")
    assert p.output_mtok is None and p.input_mtok is not None
    assert catalog.estimate_cost("together", "together/Tev1-4B-experimental", 2_000, 500) == (
        2_000 * p.input_mtok / M
    )


def test_embedding_models_are_priced_from_genai_prices(catalog: Catalog) -> None:
    embedding = [(p, m) for p, models in load_model_data()["models"].items()
                 for m, e in models.items() if "embeddings" in e["capabilities"]]
    assert ("openai", "text-embedding-3-small") in embedding and ("gemini", "gemini-embedding-001") in embedding
    for provider, model in embedding:
        info = catalog.model_info(provider, model)
        assert info.price_known and info.has("embeddings") and info.max_output is None, model
        cost = catalog.cost(provider, model, Usage(input_tokens=12_345))
        expected = calc_price(GenaiUsage(input_tokens=12_345), model_ref=model,
                              provider_id=PROVIDERS[provider].prices_id).total_price
        assert cost == expected, model

"""Properties of the cost code: the catalog's figure is genai-prices' own for every
priced model (Decimal for Decimal, and so pico for pico), cost is monotone in the
tokens a call uses, and the worst-case rates a reservation uses are never below
what a call can actually be charged."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import cache

from genai_prices import types as gp
from genai_prices.data_snapshot import get_snapshot
from genai_prices.data_units import unit_data
from hypothesis import given
from hypothesis import strategies as st

from tests.support.properties import PROPERTIES, WIDE
from warden.gateway.catalog import Catalog
from warden.gateway.pricing import (
    FixedRates,
    FlatRates,
    fixed_cost,
    flat_cost,
    flat_rates,
    to_genai_usage,
    worst_rates,
)
from warden.gateway.providers.registry import PROVIDERS
from warden.gateway.types import Usage
from warden.state.base import to_pico

NOW = datetime.now(tz=UTC)
counts = st.integers(0, 3_000_000)
usages = st.builds(Usage, input_tokens=counts, output_tokens=counts, cache_read_tokens=counts,
                   cache_write_tokens=counts, reasoning_tokens=counts)
rates = st.decimals(min_value=0, max_value=200, places=4, allow_nan=False, allow_infinity=False)
fixed = st.builds(FixedRates, input=rates, output=rates, cache_read=rates, cache_write=rates)


@cache
def flat_models() -> tuple[tuple[gp.Provider, gp.ModelInfo, FlatRates], ...]:
    return tuple((p, m, r) for p in get_snapshot().providers for m in p.models
                 if (r := flat_rates(p, m, NOW)) is not None)


@cache
def catalog_models() -> tuple[tuple[str, str, gp.Provider, gp.ModelInfo], ...]:
    """Every model of the catalog that genai-prices prices, by the catalog's own names."""
    catalog = Catalog()
    out = []
    for provider in sorted(PROVIDERS):
        for name in catalog.known_models(provider):
            found = catalog._genai_model(provider, name)
            if found is not None and worst_rates(found[1], NOW) is not None:
                out.append((provider, name, *found))
    return tuple(out)


def genai(provider: gp.Provider, model: gp.ModelInfo, usage: Usage) -> Decimal:
    return model.calc_price(to_genai_usage(usage), provider, genai_request_timestamp=NOW).total_price


@WIDE
@given(usages)
def test_flat_cost_is_genai_prices_to_the_last_digit(usage: Usage) -> None:
    for provider, model, flat in flat_models():
        got, want = flat_cost(flat, usage), genai(provider, model, usage)
        assert (str(got), to_pico(got)) == (str(want), to_pico(want)), (provider.id, model.id)


@WIDE
@given(usages)
def test_catalog_cost_is_genai_prices_for_every_priced_model(usage: Usage) -> None:
    catalog = Catalog()
    assert len(catalog_models()) > 50
    for provider, name, gp_provider, gp_model in catalog_models():
        got = catalog.cost(provider, name, usage)
        want = genai(gp_provider, gp_model, usage)
        assert got is not None and (str(got), to_pico(got)) == (str(want), to_pico(want)), (provider, name)


def grow(usage: Usage, field: str, by: int) -> Usage:
    values = {f: getattr(usage, f) for f in ("input_tokens", "output_tokens", "cache_read_tokens",
                                            "cache_write_tokens", "reasoning_tokens")}
    values[field] += by
    if field.startswith("cache_"):
        values["input_tokens"] += by  # cached tokens are part of the input (inclusive counts)
    return Usage(**values)


growth = st.sampled_from(["input_tokens", "output_tokens", "reasoning_tokens", "cache_read_tokens",
                          "cache_write_tokens"])


@WIDE
@given(usages, growth, st.integers(1, 1_000_000))
def test_more_tokens_never_cost_less(usage: Usage, field: str, by: int) -> None:
    more = grow(usage, field, by)
    for _, _, flat in flat_models():
        assert flat_cost(flat, more) >= flat_cost(flat, usage)


@PROPERTIES
@given(fixed, usages, growth, st.integers(1, 1_000_000))
def test_fixed_rates_monotone_and_exact(r: FixedRates, usage: Usage, field: str, by: int) -> None:
    more = grow(usage, field, by)
    assert fixed_cost(r, more) >= fixed_cost(r, usage) >= 0
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    want = (max(usage.input_tokens - cached, 0) * r.input + usage.cache_read_tokens * r.cache_read
            + usage.cache_write_tokens * r.cache_write
            + max(usage.output_tokens, usage.reasoning_tokens) * r.output) / Decimal(1_000_000)
    assert fixed_cost(r, usage) == want


@WIDE
@given(st.integers(0, 2_000_000), st.integers(0, 2_000_000))
def test_worst_rates_bound_every_charge(input_tokens: int, output_tokens: int) -> None:
    """A reservation at the worst rates is never less than the call's real price."""
    for provider, _, gp_provider, gp_model in catalog_models():
        worst = worst_rates(gp_model, NOW)
        assert worst is not None
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        bound = (input_tokens * worst[0] + output_tokens * worst[1]) / Decimal(1_000_000)
        price = genai(gp_provider, gp_model, usage)
        assert price <= bound or gp_model.get_prices(NOW).requests_kcount is not None, (provider, gp_model.id)


def test_to_genai_usage_clamps_inconsistent_counts() -> None:
    u = to_genai_usage(Usage(input_tokens=5, output_tokens=1, cache_read_tokens=4, cache_write_tokens=3,
                             reasoning_tokens=9))
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
            u.output_reasoning_tokens) == (7, 9, 4, 3, 9)
    plain = to_genai_usage(Usage(input_tokens=5, output_tokens=2))
    assert (plain.input_tokens, plain.output_tokens, plain.cache_read_tokens, plain.cache_write_tokens,
            plain.output_reasoning_tokens) == (5, 2, 0, 0, 0)


TOKEN_KEYS = {"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"}  # what a chat call reports
# Units a chat call never reports (searches, audio, pages...): charged 0. Other token or per-request
# units (cache_write_1h_mtok, requests_kcount...) are left to genai-prices.
OTHER_FAMILIES = {u["price_key"] for u in unit_data.values()
                  if u["dimensions"].get("family") not in ("tokens", "requests")}


def test_flat_exactly_when_the_price_is_one_fixed_set_of_rates() -> None:
    """The fast path is taken whenever it can be: a price from now on that is one set of plain
    non-negative Decimal rates with a token rate among them (groq's whisper is left to genai-prices)."""
    checked = {True: 0, False: 0}
    for provider in get_snapshot().providers:
        for model in provider.models:
            prices = model.prices
            if isinstance(prices, list):
                started = all(c.constraint is None or (isinstance(c.constraint, gp.StartDateConstraint)
                                                       and c.constraint.start_date <= NOW.date()) for c in prices)
                prices = prices[-1].prices if started else None
            set_rates = {} if prices is None else {k: v for k, v in vars(prices).items()
                                                   if not k.startswith("_") and v is not None}
            flat = (type(prices) is gp.ModelPrice and not (provider.id == "groq" and model.id.startswith("whisper"))
                    and any(k in TOKEN_KEYS for k in set_rates)
                    and all((k in TOKEN_KEYS or k in OTHER_FAMILIES) and type(v) is Decimal and v >= 0
                            for k, v in set_rates.items()))
            got = flat_rates(provider, model, NOW)
            checked[flat] += 1
            assert (got is not None) == flat, (provider.id, model.id)
            if got is not None:
                assert [price for _, price, _ in got] == list(set_rates.values())
    assert checked[True] > 500 and checked[False] > 10


def test_worst_rates_none_only_without_any_token_price() -> None:
    for provider in get_snapshot().providers:
        for model in provider.models:
            current = model.get_prices(NOW)
            worst = worst_rates(model, NOW)
            windows = [c.prices for c in model.prices if isinstance(c.constraint, gp.TimeOfDateConstraint)] \
                if isinstance(model.prices, list) else []
            priced = [mp for mp in (current, *windows) if mp.input_mtok is not None or mp.output_mtok is not None]
            assert (worst is None) == (not priced), (provider.id, model.id)
            if worst is not None and current.input_mtok is None:
                assert worst[0] >= 0

"""Flat prices are costed by the catalog itself; the result must be genai-prices'
own, Decimal for Decimal (value and exponent), over the whole bundled snapshot."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from genai_prices.data_snapshot import get_snapshot

from warden.gateway.catalog import Catalog
from warden.gateway.pricing import flat_cost, flat_rates, to_genai_usage
from warden.gateway.types import Usage


def _usages(rnd: random.Random, n: int) -> list[Usage]:
    out = [Usage(), Usage(input_tokens=12, output_tokens=3)]
    for _ in range(n):
        inp = rnd.choice([0, 1, 7, 1_234, 99_999, 250_001, 1_000_003])
        out.append(Usage(input_tokens=inp, output_tokens=rnd.choice([0, 1, 333, 70_000]),
                         cache_read_tokens=rnd.choice([0, 3, inp // 2, inp + 5]),
                         cache_write_tokens=rnd.choice([0, 2, inp // 3]),
                         reasoning_tokens=rnd.choice([0, 4, 100_000])))
    return out


def test_flat_cost_equals_genai_prices_for_every_flat_model() -> None:
    now = datetime.now(tz=UTC)
    rnd = random.Random(9)
    flat = 0
    for provider in get_snapshot().providers:
        for model in provider.models:
            rates = flat_rates(provider, model, now)
            if rates is None:
                continue
            flat += 1
            for usage in _usages(rnd, 6):
                want = model.calc_price(to_genai_usage(usage), provider, genai_request_timestamp=now).total_price
                got = flat_cost(rates, usage)
                assert (str(got), got) == (str(want), want), (provider.id, model.id, usage)
    assert flat > 500  # most chat models are flat-priced: the fast path is the common one


def test_tiered_and_time_of_day_prices_are_left_to_genai_prices() -> None:
    now = datetime.now(tz=UTC)
    kinds = {"tiered": 0, "time_of_day": 0}
    for provider in get_snapshot().providers:
        for model in provider.models:
            prices = model.prices if isinstance(model.prices, list) else [None]
            if any(c is not None and type(c.constraint).__name__ == "TimeOfDateConstraint" for c in prices):
                kinds["time_of_day"] += 1
                assert flat_rates(provider, model, now) is None, model.id
            current = model.get_prices(now)
            if any(type(v).__name__ == "TieredPrices" for v in vars(current).values()):
                kinds["tiered"] += 1
                assert flat_rates(provider, model, now) is None, model.id
    assert kinds["tiered"] > 0 and kinds["time_of_day"] > 0


def test_catalog_cost_uses_the_same_figures_now_and_at_a_past_time() -> None:
    catalog = Catalog()
    usage = Usage(input_tokens=1_000, output_tokens=500, cache_read_tokens=200)
    found = catalog._genai_model("openai", "gpt-4o-mini")
    assert found is not None
    provider, model = found
    now = datetime.now(tz=UTC)
    want = model.calc_price(to_genai_usage(usage), provider, genai_request_timestamp=now).total_price
    assert str(catalog.cost("openai", "gpt-4o-mini", usage)) == str(want)
    # An explicit time goes to genai-prices (a past price may differ from today's).
    past = now - timedelta(days=3)
    want_past = model.calc_price(to_genai_usage(usage), provider, genai_request_timestamp=past).total_price
    assert catalog.cost("openai", "gpt-4o-mini", usage, at=past) == want_past

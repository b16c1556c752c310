"""How a model is priced: free, fixed rates from a credential's override, or
genai-prices' snapshot, and the arithmetic of each.

The catalog resolves a :data:`Pricing` once per (provider, model, override);
this module only computes with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from genai_prices import types as gp
from genai_prices.data_units import unit_data

from warden.gateway.types import Usage

_MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Free:
    pass


@dataclass(frozen=True, slots=True)
class FixedRates:
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal


FlatRates = tuple[tuple[str, Decimal, int], ...]  # (count name, USD per ``per`` units, per)


@dataclass(frozen=True, slots=True)
class GenaiPrices:
    provider: gp.Provider
    model: gp.ModelInfo
    worst_input: Decimal
    worst_output: Decimal
    # The token rates when the price is flat (see ``flat_rates``): the cost is then
    # computed here, the same arithmetic as genai-prices without its per-call setup.
    flat: FlatRates | None = None


Pricing = Free | FixedRates | GenaiPrices | None


def _top_rate(price: Decimal | gp.TieredPrices | None) -> Decimal:
    if price is None:
        return _ZERO
    if isinstance(price, gp.TieredPrices):
        return max([price.base, *(tier.price for tier in price.tiers)])
    return price


def worst_rates(model: gp.ModelInfo, now: datetime) -> tuple[Decimal, Decimal] | None:
    """Highest input/output rate the model can charge now, or None without token prices."""
    candidates = [model.get_prices(now)]
    if isinstance(model.prices, list):
        # Time-of-day windows (e.g. DeepSeek off-peak) alternate during the day.
        candidates += [
            c.prices for c in model.prices if isinstance(c.constraint, gp.TimeOfDateConstraint)
        ]
    if all(mp.input_mtok is None and mp.output_mtok is None for mp in candidates):
        return None
    return (
        max(_top_rate(mp.input_mtok) for mp in candidates),
        max(_top_rate(mp.output_mtok) for mp in candidates),
    )


# genai-prices' price keys -> (our count that unit charges, ``per``). The four token
# units are what a chat call reports; units of other families (web searches, audio
# seconds, pages...) are never reported by a chat call, so they charge a count of 0.
_TOKEN_UNITS = {"input_mtok": "input", "output_mtok": "output",
                "cache_read_mtok": "cache_read", "cache_write_mtok": "cache_write"}
_UNITS: dict[str, tuple[str, int]] = {
    unit["price_key"]: (_TOKEN_UNITS.get(unit["price_key"], "none"), unit["per"])
    for unit in unit_data.values()
    if unit["price_key"] in _TOKEN_UNITS or unit["dimensions"].get("family") not in ("tokens", "requests")
}



def flat_rates(provider: gp.Provider, model: gp.ModelInfo, now: datetime) -> FlatRates | None:
    """The model's rates, in genai-prices' order, when its price from ``now`` on is one
    fixed set of per-unit rates (no tiers, no time-of-day windows, no per-request
    fee, no price change scheduled), else None: genai-prices computes those."""
    prices = model.prices
    if isinstance(prices, list):
        # Prices that started in the past stay in force; the last one active wins.
        if not all(c.constraint is None or (isinstance(c.constraint, gp.StartDateConstraint)
                                            and c.constraint.active(now)) for c in prices):
            return None
        prices = prices[-1].prices
    if type(prices) is not gp.ModelPrice or (provider.id == "groq" and model.id.startswith("whisper")):
        return None
    rates = [(key, value) for key, value in vars(prices).items()
             if not key.startswith("_") and value is not None]
    if not any(key in _TOKEN_UNITS for key, _ in rates) or not all(
            key in _UNITS and type(value) is Decimal and value.is_finite() and value >= 0
            for key, value in rates):
        return None
    return tuple((_UNITS[key][0], value, _UNITS[key][1]) for key, value in rates)


def flat_cost(rates: FlatRates, usage: Usage) -> Decimal:
    """genai-prices' result for a flat price, operation for operation, so the Decimal
    is identical, exponent included: each priced unit is charged its *leaf* count
    (input minus the cache reads/writes priced on their own), each term is
    ``price * count / per``, summed from ``Decimal(0)`` (tests compare both over
    the whole snapshot)."""
    cache_read = usage.cache_read_tokens
    cache_write = usage.cache_write_tokens
    uncached = max(usage.input_tokens, cache_read + cache_write)  # clamped as in to_genai_usage
    for unit, _, _ in rates:
        if unit == "cache_read":
            uncached -= cache_read
        elif unit == "cache_write":
            uncached -= cache_write
    counts = {"input": uncached, "output": max(usage.output_tokens, usage.reasoning_tokens),
              "cache_read": cache_read, "cache_write": cache_write, "none": 0}
    total = Decimal(0)
    for unit, price, per in rates:
        total += price * Decimal(counts[unit]) / per
    return total


def to_genai_usage(usage: Usage) -> gp.Usage:
    """Our Usage -> genai-prices' Usage (same inclusive convention; see module doc)."""
    cache_read = usage.cache_read_tokens
    cache_write = usage.cache_write_tokens
    values: dict[str, int] = {
        # Clamp so a provider's inconsistent counts cannot make genai-prices raise.
        "input_tokens": max(usage.input_tokens, cache_read + cache_write),
        "output_tokens": max(usage.output_tokens, usage.reasoning_tokens),
    }
    if cache_read:
        values["cache_read_tokens"] = cache_read
    if cache_write:
        values["cache_write_tokens"] = cache_write
    if usage.reasoning_tokens:
        values["output_reasoning_tokens"] = usage.reasoning_tokens
    return gp.Usage(**values)


def fixed_cost(rates: FixedRates, usage: Usage) -> Decimal:
    cache_read = usage.cache_read_tokens
    cache_write = usage.cache_write_tokens
    uncached = max(usage.input_tokens - cache_read - cache_write, 0)
    output = max(usage.output_tokens, usage.reasoning_tokens)
    total = (
        uncached * rates.input
        + cache_read * rates.cache_read
        + cache_write * rates.cache_write
        + output * rates.output
    )
    return total / _MTOK

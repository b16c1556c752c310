"""What each model can do and what it costs.

Three layers, later ones winning:

1. ``genai-prices``' bundled snapshot: prices and context windows. Read from the
   package's own data only; Warden never starts ``genai_prices.UpdatePrices``, so
   nothing here touches the network.
2. ``data/models.json``: capabilities, a quality score and limits genai-prices
   lacks, with its sources and date.
3. A credential's per-model :class:`ModelOverride`.

Price rules:

- An unknown price is ``None``, never ``Decimal(0)``: a model with no known price
  stays callable by name, and its cost is reported as unknown.
- $0 only when a model is declared free (``ModelOverride.free=True``) or its
  provider is local (``ProviderInfo.local``: ollama, openai-compatible) and the
  credential did not say ``free=False`` nor give prices. A credential that points
  ``openai-compatible`` at a paid host should set ``free: false`` or its prices.
- Override prices (USD per million tokens) replace genai-prices for that model;
  cache reads/writes default to the input price, reasoning is output.

Usage convention: ours and genai-prices' agree (``input_tokens`` includes cache
reads and writes, ``output_tokens`` includes reasoning, the detailed counts are
subsets), so the mapping is one to one; only inconsistent counts are clamped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib.resources import files
from typing import Any

import orjson
from genai_prices import types as gp
from genai_prices.data_snapshot import DataSnapshot, get_snapshot
from genai_prices.data_units import unit_data

from warden.gateway.providers.registry import PROVIDERS, ProviderInfo
from warden.gateway.types import Usage

CAPABILITIES: frozenset[str] = frozenset({"tools", "vision", "json_schema", "reasoning"})

_MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_CACHE_LIMIT = 20_000  # model_info entries; cleared past this so odd inputs cannot grow it forever


@dataclass(frozen=True, slots=True)
class ModelOverride:
    """What a credential says about one of its models; every field optional."""

    input_price: Decimal | None = None  # USD per million tokens
    output_price: Decimal | None = None
    cache_read_price: Decimal | None = None
    cache_write_price: Decimal | None = None
    context_window: int | None = None
    max_output: int | None = None
    capabilities: frozenset[str] | None = None
    quality: float | None = None
    free: bool | None = None

    @property
    def has_prices(self) -> bool:
        return self.input_price is not None or self.output_price is not None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelOverride:
        """Build from a credential's model entry (JSON); raises ValueError on bad values."""

        def price(key: str) -> Decimal | None:
            value = raw.get(key)
            if value is None:
                return None
            if isinstance(value, bool):
                raise ValueError(f"{key} must be a number")
            try:
                dec = Decimal(str(value))
            except InvalidOperation:
                raise ValueError(f"{key} must be a number") from None
            if not dec.is_finite() or dec < 0:
                raise ValueError(f"{key} must be a non-negative number")
            return dec

        def positive_int(key: str) -> int | None:
            value = raw.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{key} must be a positive integer")
            return value

        caps = raw.get("capabilities")
        if caps is not None:
            if not isinstance(caps, (list, tuple, set, frozenset)):
                raise ValueError("capabilities must be a list")
            unknown = set(caps) - CAPABILITIES
            if unknown:
                raise ValueError(f"unknown capabilities: {', '.join(sorted(map(str, unknown)))}")
            caps = frozenset(caps)
        quality = raw.get("quality")
        if quality is not None:
            if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not 0 <= quality <= 1:
                raise ValueError("quality must be a number between 0 and 1")
            quality = float(quality)
        free = raw.get("free")
        if free is not None and not isinstance(free, bool):
            raise ValueError("free must be true or false")
        return cls(
            input_price=price("input_price"),
            output_price=price("output_price"),
            cache_read_price=price("cache_read_price"),
            cache_write_price=price("cache_write_price"),
            context_window=positive_int("context_window"),
            max_output=positive_int("max_output"),
            capabilities=caps,
            quality=quality,
            free=free,
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    provider: str
    model: str
    context_window: int | None
    max_output: int | None
    capabilities: frozenset[str]
    quality: float | None
    price_known: bool
    # True when capabilities come from models.json or an override; False means
    # "we do not know", not "it has none".
    described: bool = False
    free: bool = False
    # Worst-case list rates, USD per million tokens (highest tier and time-of-day
    # price): for reservations and ranking, not for metering.
    input_price: Decimal | None = None
    output_price: Decimal | None = None
    # The same rates as floats, precomputed so ranking does no Decimal work.
    input_rate: float | None = None
    output_rate: float | None = None

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "context_window": self.context_window,
            "max_output": self.max_output,
            "capabilities": sorted(self.capabilities),
            "quality": self.quality,
            "price_known": self.price_known,
            "described": self.described,
            "free": self.free,
            "input_price_per_mtok": None if self.input_price is None else str(self.input_price),
            "output_price_per_mtok": None if self.output_price is None else str(self.output_price),
        }


# --- how a model is priced (resolved once per (provider, model, override)) ----


@dataclass(frozen=True, slots=True)
class _Free:
    pass


@dataclass(frozen=True, slots=True)
class _FixedRates:
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal


_FlatRates = tuple[tuple[str, Decimal, int], ...]  # (count name, USD per ``per`` units, per)


@dataclass(frozen=True, slots=True)
class _GenaiPrices:
    provider: gp.Provider
    model: gp.ModelInfo
    worst_input: Decimal
    worst_output: Decimal
    # The token rates when the price is flat (see ``_flat_rates``): the cost is then
    # computed here, the same arithmetic as genai-prices without its per-call setup.
    flat: _FlatRates | None = None


_Pricing = _Free | _FixedRates | _GenaiPrices | None


def _top_rate(price: Decimal | gp.TieredPrices | None) -> Decimal:
    if price is None:
        return _ZERO
    if isinstance(price, gp.TieredPrices):
        return max([price.base, *(tier.price for tier in price.tiers)])
    return price


def _worst_rates(model: gp.ModelInfo, now: datetime) -> tuple[Decimal, Decimal] | None:
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



def _flat_rates(provider: gp.Provider, model: gp.ModelInfo, now: datetime) -> _FlatRates | None:
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


def _flat_cost(rates: _FlatRates, usage: Usage) -> Decimal:
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


def _fixed_cost(rates: _FixedRates, usage: Usage) -> Decimal:
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


def _normalise(model: str) -> str:
    model = model.strip().lower()
    return model.removeprefix("models/")  # Gemini's resource-name form


class Catalog:
    """Model facts and prices; build once per process (see :func:`get_catalog`)."""

    def __init__(
        self,
        *,
        snapshot: DataSnapshot | None = None,
        data: Mapping[str, Any] | None = None,
        providers: Mapping[str, ProviderInfo] = PROVIDERS,
    ) -> None:
        self._snapshot = snapshot if snapshot is not None else get_snapshot()
        data = data if data is not None else load_model_data()
        self.as_of: str | None = data.get("as_of")
        self.sources: list[str] = list(data.get("sources", []))
        self._providers = providers
        self._described: dict[str, dict[str, dict[str, Any]]] = {
            provider: {name.lower(): entry for name, entry in models.items()}
            for provider, models in data.get("models", {}).items()
        }
        self._names: dict[str, list[str]] = {
            provider: sorted(models) for provider, models in data.get("models", {}).items()
        }
        self._info_cache: dict[tuple[str, str, ModelOverride | None], ModelInfo] = {}
        self._pricing_cache: dict[tuple[str, str, ModelOverride | None], _Pricing] = {}
        self._genai_cache: dict[tuple[str, str], tuple[gp.Provider, gp.ModelInfo] | None] = {}

    # --- public API ---------------------------------------------------------

    def model_info(self, provider: str, model: str, overrides: ModelOverride | None = None) -> ModelInfo:
        key = (provider, model, overrides)
        info = self._info_cache.get(key)
        if info is None:
            if len(self._info_cache) >= _CACHE_LIMIT:
                self._info_cache.clear()
            info = self._info_cache[key] = self._build_info(provider, model, overrides)
        return info

    def cost(
        self,
        provider: str,
        model: str,
        usage: Usage,
        overrides: ModelOverride | None = None,
        *,
        at: datetime | None = None,
    ) -> Decimal | None:
        """Exact cost of one call in USD; None when the price is unknown.

        ``at`` is when the call was made (time-dependent prices); default now.
        """
        pricing = self._pricing(provider, model, overrides)
        if pricing is None:
            return None
        if isinstance(pricing, _Free):
            return _ZERO
        if isinstance(pricing, _FixedRates):
            return _fixed_cost(pricing, usage)
        if pricing.flat is not None and at is None:
            return _flat_cost(pricing.flat, usage)
        calc = pricing.model.calc_price(
            to_genai_usage(usage), pricing.provider, genai_request_timestamp=at or datetime.now(tz=UTC)
        )
        return calc.total_price

    def estimate_cost(
        self,
        provider: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        overrides: ModelOverride | None = None,
    ) -> Decimal | None:
        """Worst-case cost (highest tier and time-of-day rate) for a reservation."""
        info = self.model_info(provider, model, overrides)
        if info.input_price is None or info.output_price is None:
            return None
        return (input_tokens * info.input_price + output_tokens * info.output_price) / _MTOK

    def known_models(self, provider: str) -> list[str]:
        """Chat models ``models.json`` describes for this provider, sorted."""
        return list(self._names.get(provider, ()))

    # --- building -----------------------------------------------------------

    def _described_entry(self, provider: str, model: str) -> dict[str, Any] | None:
        table = self._described.get(provider)
        if not table:
            return None
        name = _normalise(model)
        for candidate in (name, _DATE_SUFFIX.sub("", name), name.removesuffix("-latest")):
            entry = table.get(candidate)
            if entry is not None:
                return entry
        return None

    def _genai_model(self, provider: str, model: str) -> tuple[gp.Provider, gp.ModelInfo] | None:
        key = (provider, model)
        if key in self._genai_cache:
            return self._genai_cache[key]
        found: tuple[gp.Provider, gp.ModelInfo] | None = None
        pinfo = self._providers.get(provider)
        if pinfo is not None and pinfo.prices_id is not None:
            try:
                found = self._snapshot.find_provider_model(_normalise(model), None, pinfo.prices_id, None)
            except LookupError:
                found = None
        self._genai_cache[key] = found
        return found

    def _pricing(self, provider: str, model: str, overrides: ModelOverride | None) -> _Pricing:
        key = (provider, model, overrides)
        if key in self._pricing_cache:
            return self._pricing_cache[key]
        pricing = self._resolve_pricing(provider, model, overrides)
        if len(self._pricing_cache) >= _CACHE_LIMIT:
            self._pricing_cache.clear()
        self._pricing_cache[key] = pricing
        return pricing

    def _resolve_pricing(self, provider: str, model: str, overrides: ModelOverride | None) -> _Pricing:
        if overrides is not None and overrides.has_prices:
            in_rate = overrides.input_price or _ZERO
            return _FixedRates(
                input=in_rate,
                output=overrides.output_price or _ZERO,
                cache_read=in_rate if overrides.cache_read_price is None else overrides.cache_read_price,
                cache_write=in_rate if overrides.cache_write_price is None else overrides.cache_write_price,
            )
        declared_free = overrides.free if overrides is not None else None
        pinfo = self._providers.get(provider)
        if declared_free or (declared_free is None and pinfo is not None and pinfo.local):
            return _Free()
        found = self._genai_model(provider, model)
        if found is None:
            return None
        now = datetime.now(tz=UTC)
        rates = _worst_rates(found[1], now)
        if rates is None:
            return None
        return _GenaiPrices(found[0], found[1], rates[0], rates[1], _flat_rates(found[0], found[1], now))

    def _build_info(self, provider: str, model: str, overrides: ModelOverride | None) -> ModelInfo:
        entry = self._described_entry(provider, model)
        found = self._genai_model(provider, model)
        context = found[1].context_window if found is not None else None
        if context is None and entry is not None:
            context = entry.get("context_window")
        max_output = entry.get("max_output") if entry is not None else None
        capabilities = frozenset(entry.get("capabilities", ())) if entry is not None else frozenset()
        quality = entry.get("quality") if entry is not None else None
        described = entry is not None
        if overrides is not None:
            context = overrides.context_window or context
            max_output = overrides.max_output or max_output
            if overrides.capabilities is not None:
                capabilities, described = overrides.capabilities, True
            if overrides.quality is not None:
                quality = overrides.quality

        pricing = self._pricing(provider, model, overrides)
        in_price: Decimal | None
        out_price: Decimal | None
        if isinstance(pricing, _Free):
            in_price = out_price = _ZERO
        elif isinstance(pricing, _FixedRates):
            in_price, out_price = pricing.input, pricing.output
        elif isinstance(pricing, _GenaiPrices):
            in_price, out_price = pricing.worst_input, pricing.worst_output
        else:
            in_price = out_price = None
        return ModelInfo(
            provider=provider,
            model=model,
            context_window=context,
            max_output=max_output,
            capabilities=capabilities,
            quality=quality,
            price_known=pricing is not None,
            described=described,
            free=isinstance(pricing, _Free),
            input_price=in_price,
            output_price=out_price,
            input_rate=None if in_price is None else float(in_price),
            output_rate=None if out_price is None else float(out_price),
        )


def load_model_data() -> dict[str, Any]:
    """The bundled ``data/models.json``."""
    raw = files("warden.gateway").joinpath("data/models.json").read_bytes()
    return orjson.loads(raw)


@cache
def get_catalog() -> Catalog:
    """The process-wide catalog, built on first use."""
    return Catalog()

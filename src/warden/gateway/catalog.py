"""What each model can do and what it costs.

Three layers, later ones winning:

1. ``genai-prices``' bundled snapshot: prices and context windows. Read from the
   package's own data only; Warden never starts ``genai_prices.UpdatePrices``, so
   nothing here touches the network.
2. ``data/models.json``: capabilities, a quality score and limits genai-prices
   lacks, with its sources and date.
3. A credential's per-model :class:`ModelOverride`, validated once, as a
   :class:`ModelSpec` (API input and stored rows alike).

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
from decimal import Decimal
from functools import cache
from importlib.resources import files
from typing import Annotated, Any, Literal, get_args

import orjson
from genai_prices import types as gp
from genai_prices.data_snapshot import DataSnapshot, get_snapshot
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, StrictBool

from warden.gateway.pricing import (
    FixedRates,
    Free,
    GenaiPrices,
    Pricing,
    fixed_cost,
    flat_cost,
    flat_rates,
    to_genai_usage,
    worst_rates,
)
from warden.gateway.providers.registry import PROVIDERS, ProviderInfo
from warden.gateway.types import Usage

Capability = Literal["tools", "vision", "json_schema", "reasoning", "embeddings"]
CAPABILITIES: frozenset[str] = frozenset(get_args(Capability))

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


def _not_bool(value: Any) -> Any:
    # JSON true/false would otherwise pass as the numbers 1 and 0.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


# USD per million tokens; exact in, a plain JSON number out.
Price = Annotated[Decimal, Field(ge=0, le=1_000_000, allow_inf_nan=False),
                  PlainSerializer(float, return_type=float, when_used="json")]
TokenCount = Annotated[int, Field(ge=1, le=100_000_000), BeforeValidator(_not_bool)]
Quality = Annotated[float, Field(ge=0, le=1), BeforeValidator(_not_bool)]


# The one validation of an override: API input is checked with it and stored rows
# are re-read with it; ``override`` then only converts. (The docstring is public:
# it is the OpenAPI description.)
class ModelSpec(BaseModel):
    """One model a credential serves, with optional overrides of the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    input_price: Price | None = None
    output_price: Price | None = None
    cache_read_price: Price | None = None
    cache_write_price: Price | None = None
    context_window: TokenCount | None = None
    max_output: TokenCount | None = None
    capabilities: tuple[Capability, ...] | None = Field(default=None, max_length=5)
    quality: Quality | None = None
    free: StrictBool | None = None

    def override(self) -> ModelOverride:
        return ModelOverride(
            input_price=self.input_price,
            output_price=self.output_price,
            cache_read_price=self.cache_read_price,
            cache_write_price=self.cache_write_price,
            context_window=self.context_window,
            max_output=self.max_output,
            capabilities=None if self.capabilities is None else frozenset(self.capabilities),
            quality=self.quality,
            free=self.free,
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
        self._pricing_cache: dict[tuple[str, str, ModelOverride | None], Pricing] = {}
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
        if isinstance(pricing, Free):
            return _ZERO
        if isinstance(pricing, FixedRates):
            return fixed_cost(pricing, usage)
        if pricing.flat is not None and at is None:
            return flat_cost(pricing.flat, usage)
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
        """Models ``models.json`` describes for this provider (chat and embedding), sorted."""
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

    def _pricing(self, provider: str, model: str, overrides: ModelOverride | None) -> Pricing:
        key = (provider, model, overrides)
        if key in self._pricing_cache:
            return self._pricing_cache[key]
        pricing = self._resolve_pricing(provider, model, overrides)
        if len(self._pricing_cache) >= _CACHE_LIMIT:
            self._pricing_cache.clear()
        self._pricing_cache[key] = pricing
        return pricing

    def _resolve_pricing(self, provider: str, model: str, overrides: ModelOverride | None) -> Pricing:
        if overrides is not None and overrides.has_prices:
            in_rate = overrides.input_price or _ZERO
            return FixedRates(
                input=in_rate,
                output=overrides.output_price or _ZERO,
                cache_read=in_rate if overrides.cache_read_price is None else overrides.cache_read_price,
                cache_write=in_rate if overrides.cache_write_price is None else overrides.cache_write_price,
            )
        declared_free = overrides.free if overrides is not None else None
        pinfo = self._providers.get(provider)
        if declared_free or (declared_free is None and pinfo is not None and pinfo.local):
            return Free()
        found = self._genai_model(provider, model)
        if found is None:
            return None
        now = datetime.now(tz=UTC)
        rates = worst_rates(found[1], now)
        if rates is None:
            return None
        return GenaiPrices(found[0], found[1], rates[0], rates[1], flat_rates(found[0], found[1], now))

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
        if isinstance(pricing, Free):
            in_price = out_price = _ZERO
        elif isinstance(pricing, FixedRates):
            in_price, out_price = pricing.input, pricing.output
        elif isinstance(pricing, GenaiPrices):
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
            free=isinstance(pricing, Free),
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

"""Failover's cost guard: a fallback may not cost more than a set factor times
the first choice, for this request's estimated tokens.

Pure: the planner hands in its steps and the first choice (the primary's best
step before breakers reorder it); steps over the factor are dropped with their
reason, and every step kept carries its factor (for ``route explain`` and the
``x-warden-fallback-cost-factor`` header).

What the guard stops is escalation nobody asked for: ``auto`` walking down its
ranking, a bare id or a group reaching a pricier member. A fallback the request
names itself (``"fallbacks": ["anthropic/claude-opus-4-5"]``) is the request's
own choice and is kept whatever it costs; so is everything once the request
raises ``max_fallback_cost_factor``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence, Set
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from warden.gateway.catalog import ModelInfo
from warden.gateway.deployment import Deployment


class _Step(Protocol):
    deployment: Deployment
    cost_factor: float | None


Step = TypeVar("Step", bound=_Step)


@dataclass(frozen=True, slots=True)
class CostGuard:
    """One plan's cost bound and what it was measured against."""

    max_factor: float  # inf: the request allowed any fallback
    reference: str  # the first choice's deployment id
    reference_cost_usd: Decimal | None  # its estimate for this request; None: price unknown
    excluded: int = 0

    @property
    def applied(self) -> bool:
        return self.reference_cost_usd is not None and not math.isinf(self.max_factor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_factor": None if math.isinf(self.max_factor) else self.max_factor,
            "reference": self.reference,
            "reference_cost_usd": None if self.reference_cost_usd is None else str(self.reference_cost_usd),
            "excluded": self.excluded,
            "applied": self.applied,
        }


def estimate(info: ModelInfo, input_tokens: int, output_tokens: int) -> Decimal | None:
    """The cost of ``input_tokens`` in and ``output_tokens`` out; None if unpriced."""
    if info.input_price is None or info.output_price is None:
        return None
    return (input_tokens * info.input_price + output_tokens * info.output_price) / Decimal(1_000_000)


def factor_of(cost: Decimal, reference: Decimal) -> float:
    """How many times the reference ``cost`` is (a priced step after a free one: inf)."""
    if reference > 0:
        return float(cost / reference)
    return 1.0 if cost == 0 else math.inf


def _rate_cost(info: ModelInfo, input_tokens: int, output_tokens: int) -> float:
    return input_tokens * (info.input_rate or 0.0) + output_tokens * (info.output_rate or 0.0)


def _factor(info: ModelInfo, first: ModelInfo, ref: Decimal, ref_rate: float, input_tokens: int,
            output_tokens: int, max_factor: float) -> float | None:
    """``factor_of`` the step's estimate, from the float rates (Decimal division is most
    of the guard's cost, on every request); exact where the floats come too close to
    the limit to decide."""
    if info.input_price is None or info.output_price is None:
        return None
    if info is first or (info.input_price == first.input_price and info.output_price == first.output_price):
        return 1.0  # the first choice itself, or the same model through another key
    if ref_rate > 0.0:
        factor = _rate_cost(info, input_tokens, output_tokens) / ref_rate
        if math.isinf(max_factor) or abs(factor - max_factor) > 1e-9 * max_factor:
            return factor
    cost = estimate(info, input_tokens, output_tokens)
    assert cost is not None  # both prices are known
    return factor_of(cost, ref)


def apply_cost_guard(steps: Sequence[Step], first: Deployment, max_factor: float, input_tokens: int,
                     output_tokens: int, rejected: list[tuple[str, str]], *,
                     exempt: Set[str] = frozenset()) -> tuple[list[Step], CostGuard]:
    """The steps within ``max_factor`` of ``first`` or in ``exempt`` (deployment ids the
    request named); the others go to ``rejected``. A step whose price is unknown cannot
    be compared and is kept without a factor."""
    ref = estimate(first.info, input_tokens, output_tokens)
    if ref is None:
        return list(steps), CostGuard(max_factor, first.id, None)
    ref_rate = _rate_cost(first.info, input_tokens, output_tokens)
    kept: list[Step] = []
    for step in steps:
        cost = _factor(step.deployment.info, first.info, ref, ref_rate, input_tokens, output_tokens,
                       max_factor)
        if cost is not None:
            step.cost_factor = cost
            if step.cost_factor > max_factor and step.deployment is not first \
                    and step.deployment.id not in exempt:
                rejected.append((step.deployment.id, (
                    f"cost guard: about {step.cost_factor:.3g}x the estimated cost of the first "
                    f"choice {first.name} (limit {max_factor:g}x); raise "
                    "warden.max_fallback_cost_factor to allow it")))
                continue
        kept.append(step)
    return kept, CostGuard(max_factor, first.id, ref, len(steps) - len(kept))

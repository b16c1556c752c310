"""The routing planner: which deployments to try, in what order, and why.

Pure and synchronous: the caller passes the workspace's deployments, its model
groups and a snapshot of live health; nothing here does I/O.

``model`` is resolved, in this order, as

- ``auto``: every deployment, ranked by value for the request's complexity;
- a workspace group name: its members in the group's order;
- ``provider/model``: that model at that provider (every credential serving it);
  ``provider/*``: all of that provider's deployments, highest quality first;
- a bare model id: every provider serving it (exact id, or the last path
  segment, so ``gpt-oss-120b`` finds ``openai/gpt-oss-120b`` at Groq), ranked.

Then deployments that cannot serve the request are dropped (each with a reason in
``rejected``), the request's fallbacks are appended in order, and deployments
whose circuit breaker is open go last. Explicit models and groups keep their
given order; ``auto`` and bare ids are ranked.

With ``max_fallback_cost_factor`` set, ``cost_guard.py`` drops the steps that
would cost more than that factor times the first choice (the primary's best step
before breakers reorder it), except fallbacks the request named as ``provider/model``.

How strictly the catalog is trusted depends on how the model was chosen: ``auto``
only considers models whose capabilities, quality and price are known; a model
asked for by name is given the benefit of the doubt where the catalog does not
describe it, and is excluded only for a known lack.

An :class:`EmbeddingRequest` is planned alike over the ``embeddings`` models (which
chat never gets), its largest input checked against the context window.

Long on purpose: one pure planner (resolve, filter, score, order, explain) whose
steps share per-plan constants; apart, each piece would be a fragment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from warden.errors import InvalidRequest, NotFound
from warden.gateway.catalog import Catalog
from warden.gateway.context import Prefer, RouteOptions
from warden.gateway.cost_guard import CostGuard, apply_cost_guard
from warden.gateway.cost_guard import estimate as _estimate
from warden.gateway.deployment import Deployment
from warden.gateway.health import Health
from warden.gateway.complexity import (Complexity, Level, estimate_input_tokens, estimate_tokens,
                                       score_complexity)
from warden.gateway.types import ChatRequest, EmbeddingRequest

Kind = Literal["auto", "group", "explicit", "bare"]

# Output tokens assumed for ranking (a typical answer at each level, capped by
# max_tokens) and for the worst-case max_cost_usd check when max_tokens is unset.
TYPICAL_OUTPUT: dict[Level, int] = {"simple": 200, "moderate": 500, "complex": 1_000, "advanced": 2_000}
WORST_CASE_OUTPUT = 4_096

# Value weights: how much quality counts against price, and the quality below
# which a model is penalised as inadequate, per complexity level.
_QUALITY_WEIGHT: dict[Level, float] = {"simple": 0.3, "moderate": 0.5, "complex": 0.7, "advanced": 0.85}
_QUALITY_FLOOR: dict[Level, float] = {"simple": 0.5, "moderate": 0.65, "complex": 0.78, "advanced": 0.86}
_UNKNOWN_QUALITY = 0.5  # for models asked for by name that the catalog does not rate

# Effective price (USD per million tokens, this request's input/output mix) on a
# log scale: $0.05/M or less is "cheap" 1.0, $50/M or more is 0.0.
_PRICE_LO, _PRICE_HI = 0.05, 50.0
_LOG_LO, _LOG_SPAN = math.log10(_PRICE_LO), math.log10(_PRICE_HI) - math.log10(_PRICE_LO)

_LATENCY_SCALE_MS = 10_000.0  # latency at which the latency score reaches 0
_ERROR_PENALTY = 0.5  # score lost at a 100% recent error rate


_HEALTHY = Health()


# --- outputs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Needs:
    """What a deployment must offer to serve the request."""

    capabilities: frozenset[str]
    input_tokens: int  # estimated prompt size
    max_tokens: int | None

    @property
    def min_context(self) -> int:
        return self.input_tokens + (self.max_tokens or 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "capabilities": sorted(self.capabilities),
            "estimated_input_tokens": self.input_tokens,
            "max_tokens": self.max_tokens,
            "min_context": self.min_context,
        }


@dataclass(slots=True)
class PlanStep:
    deployment: Deployment
    score: float
    estimated_cost_usd: Decimal | None = None  # worst case for this request (when max_cost_usd is set)
    # The reason sentence is composed on first read: most plans are walked, not shown.
    _why: tuple[_Scored, _Context, int] | None = field(default=None, repr=False, compare=False)
    _reason: str | None = field(default=None, repr=False, compare=False)
    cost_factor: float | None = None  # estimated cost / the first choice's (cost guard on)

    @property
    def health(self) -> Health:
        """The deployment's live health when the plan was made."""
        return self._why[0].health if self._why is not None else _HEALTHY

    @property
    def reason(self) -> str:
        if self._reason is None:
            self._reason = _describe(*self._why) if self._why is not None else ""
        return self._reason

    def to_dict(self) -> dict[str, Any]:
        d = self.deployment
        return {
            "deployment": d.id,
            "provider": d.provider,
            "model": d.model,
            "credential_id": d.credential_id,
            "score": round(self.score, 4),
            "reason": self.reason,
            "estimated_cost_usd": None if self.estimated_cost_usd is None else str(self.estimated_cost_usd),
            "quality": d.info.quality,
            "capabilities": sorted(d.info.capabilities),
            "context_window": d.info.context_window,
            "cost_factor": None if self.cost_factor is None else round(self.cost_factor, 3),
        }


@dataclass
class RoutePlan:
    model_requested: str
    kind: Kind
    complexity: Complexity
    needs: Needs
    steps: list[PlanStep]
    rejected: list[tuple[str, str]]  # (deployment id or model name, why excluded)
    prefer: Prefer = "value"
    cost_guard: CostGuard | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_requested": self.model_requested,
            "kind": self.kind,
            "prefer": self.prefer,
            "complexity": self.complexity.to_dict(),
            "needs": self.needs.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "rejected": [{"deployment": who, "reason": why} for who, why in self.rejected],
            "cost_guard": None if self.cost_guard is None else self.cost_guard.to_dict(),
        }


# --- planning --------------------------------------------------------------

NO_PROVIDER_KEYS = ("no provider keys are configured: add one with `warden byok add PROVIDER --key -` "
                    "(or POST /api/byok)")


def needs_for(req: ChatRequest, input_tokens: int) -> Needs:
    caps: set[str] = set()
    if req.tools and not (req.tool_choice is not None and req.tool_choice.mode == "none"):
        caps.add("tools")
    if req.has_images:
        caps.add("vision")
    if req.response_format is not None and req.response_format.type == "json_schema":
        caps.add("json_schema")
    if req.reasoning_effort in ("low", "medium", "high"):
        caps.add("reasoning")
    return Needs(frozenset(caps), input_tokens, req.max_tokens)


def _matches_bare(d: Deployment, name: str) -> bool:
    return name in d.bare_names


def _resolve(
    name: str, deployments: Sequence[Deployment], groups: Mapping[str, list[str]], rejected: list[tuple[str, str]]
) -> tuple[Kind, list[Deployment]] | None:
    """Which deployments ``name`` refers to, in their given order; None if none."""
    if name == "auto":
        return "auto", list(deployments)
    members = groups.get(name)
    if members is not None:
        found: list[Deployment] = []
        for member in members:
            resolved = _resolve_named(member, deployments)
            if resolved is None:
                rejected.append((member, f"member of group '{name}' that no deployment serves"))
            else:
                found.extend(d for d in resolved[1] if d not in found)
        return "group", found
    return _resolve_named(name, deployments)


def reachable(names: Sequence[str], deployments: Sequence[Deployment],
              groups: Mapping[str, list[str]]) -> Sequence[Deployment]:
    """The deployments a plan for any of ``names`` (a model and its fallbacks) can hold,
    in their order: planning over these gives the plan it gives over all, and only
    these need their breakers read (a workspace may hold hundreds of models)."""
    ids: set[str] = set()
    for name in names:
        resolved = _resolve(name, deployments, groups, [])
        if resolved is not None:
            if resolved[0] == "auto":
                return deployments
            ids.update(d.id for d in resolved[1])
    return [d for d in deployments if d.id in ids]


def _resolve_named(name: str, deployments: Sequence[Deployment]) -> tuple[Kind, list[Deployment]] | None:
    lowered = name.lower()
    provider, sep, model = lowered.partition("/")
    if sep and model == "*":  # "anthropic/*": that provider's deployments, best quality first
        best = sorted((d for d in deployments if d.provider == provider),
                      key=lambda d: (-(d.info.quality or 0.0), d.model))
        return ("group", best) if best else None
    if sep:
        explicit = [d for d in deployments if d.provider == provider and d.model.lower() == model]
        if explicit:
            return "explicit", explicit
    bare = [d for d in deployments if _matches_bare(d, lowered)]
    return ("bare", bare) if bare else None


def _exclusion(
    d: Deployment, needs: Needs, strict: bool, max_cost: Decimal | None, worst_cost: Decimal | None
) -> str | None:
    """Why ``d`` cannot serve the request, or None if it can."""
    info = d.info
    if "embeddings" in info.capabilities and "embeddings" not in needs.capabilities:
        return "an embedding model: it serves /v1/embeddings only"
    if info.described or strict:
        missing = needs.capabilities - info.capabilities
        if missing:
            what = "capabilities unknown (not in the catalog)" if not info.described else "lacks"
            return f"{what}: needs {', '.join(sorted(missing))}"
    if info.context_window is not None and needs.min_context > info.context_window:
        return (
            f"context window {info.context_window} tokens is below the ~{needs.min_context} "
            "this request needs (prompt + max_tokens)"
        )
    if strict:
        if not info.price_known:
            return "price unknown; used only when asked for by name"
        if info.quality is None:
            return "no quality score in the catalog; set `quality` on the credential's model to include it"
    if max_cost is not None:
        if worst_cost is None:
            return "price unknown, so max_cost_usd cannot be guaranteed"
        if worst_cost > max_cost:
            return f"estimated worst-case cost ${worst_cost:.6f} exceeds max_cost_usd ${max_cost}"
    return None


@dataclass(slots=True)
class _Scored:
    deployment: Deployment
    score: float
    effective_price: float | None
    health: Health
    worst_cost: Decimal | None = None


@dataclass(frozen=True, slots=True)
class _Context:
    """What the steps of one resolved name share, for their reasons."""

    kind: Kind
    label: str  # the model name, group or fallback the steps came from
    total: int
    is_fallback: bool
    level: Level
    prefer: Prefer


@dataclass(frozen=True, slots=True)
class _Weights:
    """Per-plan constants, computed once so scoring a deployment is a few float ops."""

    prefer: Prefer
    quality_weight: float
    quality_floor: float
    input_share: float  # of this request's tokens, for the effective price
    output_share: float


def _score(d: Deployment, w: _Weights, health: Health) -> _Scored:
    info = d.info
    quality = _UNKNOWN_QUALITY if info.quality is None else info.quality
    eff: float | None = None
    cheap = 0.0
    if info.input_rate is not None and info.output_rate is not None:
        eff = w.input_share * info.input_rate + w.output_share * info.output_rate
        if eff <= _PRICE_LO:
            cheap = 1.0
        else:
            cheap = 1.0 - (math.log10(eff) - _LOG_LO) / _LOG_SPAN
            cheap = cheap if cheap > 0.0 else 0.0
    shortfall = w.quality_floor - quality
    shortfall = shortfall if shortfall > 0.0 else 0.0
    qw = w.quality_weight
    value = qw * quality + (1 - qw) * cheap - 2 * shortfall
    latency = health.latency_ms
    prefer = w.prefer
    if prefer == "value":
        score = value
    elif prefer == "cost":
        score = 0.85 * cheap + 0.15 * quality - shortfall
    elif prefer == "quality":
        score = 0.95 * quality + 0.05 * cheap
    else:  # latency
        speed = 0.5 if latency is None else 1.0 - min(1.0, latency / _LATENCY_SCALE_MS)
        score = 0.7 * speed + 0.3 * value
    if latency is not None and prefer != "latency":
        score -= 0.1 * min(1.0, latency / _LATENCY_SCALE_MS)
    if health.error_rate:
        score -= _ERROR_PENALTY * health.error_rate
    return _Scored(d, score, eff, health)


def _describe(s: _Scored, ctx: _Context, index: int) -> str:
    level, prefer = ctx.level, ctx.prefer
    position = _position(ctx.kind, ctx.label, index, ctx.total, prefer, ctx.is_fallback)
    info = s.deployment.info
    parts = [position]
    parts.append("quality unrated" if info.quality is None else f"quality {info.quality:.2f}")
    if info.free:
        parts.append("free")
    elif s.effective_price is None:
        parts.append("price unknown")
    else:
        parts.append(f"about ${s.effective_price:.3g} per million tokens for this request")
    if ctx.kind in ("auto", "bare"):
        parts.append(f"{prefer} score {s.score:.3f} for a {level} request")
    h = s.health
    if h.error_rate > 0:
        parts.append(f"{h.error_rate:.0%} recent errors")
    if h.latency_ms is not None:
        parts.append(f"recent latency {h.latency_ms:.0f} ms")
    if h.breaker_open:
        parts.append("circuit breaker open, so tried last")
    elif h.probe:
        parts.append("recovering: its breaker's cooldown is over, one request probes it")
    return "; ".join(parts) + "."


def plan_route(
    req: ChatRequest | EmbeddingRequest,
    deployments: Sequence[Deployment],
    *,
    groups: Mapping[str, list[str]] | None = None,
    health: Mapping[str, Health] | None = None,
    options: RouteOptions | None = None,
    catalog: Catalog | None = None,
    max_fallback_cost_factor: float | None = None,
) -> RoutePlan:
    """Order the deployments to try for ``req``; raise if none can serve it.

    ``catalog`` is accepted for interface symmetry but not consulted: each
    deployment already carries its :class:`ModelInfo` (prices, limits, quality
    precomputed), which is what keeps a plan over hundreds of deployments cheap.
    ``max_fallback_cost_factor`` turns the cost guard on (the request's own
    ``options.max_fallback_cost_factor`` wins over it).
    """
    groups = groups or {}
    health = health or {}
    options = options or RouteOptions()
    if embedding := isinstance(req, EmbeddingRequest):
        sizes = estimate_input_tokens(req.inputs)
        input_tokens, ranking_output = sum(sizes), 0
        complexity = Complexity("simple", 0.0, ["an embedding request"])
        needs = Needs(frozenset({"embeddings"}), max(sizes, default=0), None)
    else:
        input_tokens = estimate_tokens(req)
        complexity = score_complexity(req, estimated_tokens=input_tokens)
        needs = needs_for(req, input_tokens)
        typical = TYPICAL_OUTPUT[complexity.level]
        ranking_output = min(typical, req.max_tokens or typical)
    level = complexity.level
    mix = max(input_tokens + ranking_output, 1)
    weights = _Weights(
        options.prefer, _QUALITY_WEIGHT[level], _QUALITY_FLOOR[level], input_tokens / mix, ranking_output / mix
    )
    rejected: list[tuple[str, str]] = []

    primary = _resolve(req.model, deployments, groups, rejected)
    if primary is None:
        raise NotFound(
            f"model '{req.model}' is not served by any of this workspace's provider keys "
            "(use 'auto', a model group, 'provider/model' or a model id from GET /v1/models)",
            code="model_not_found",
            param="model",
        )
    kind, _ = primary

    steps: list[PlanStep] = []
    first_choice: _Scored | None = None
    named: set[str] = set()  # deployments the request named as fallbacks: the guard lets them be
    seen: set[str] = set()
    chosen = [(primary, req.model, False)]
    for fallback in options.fallbacks:
        resolved = _resolve(fallback, deployments, groups, rejected)
        if resolved is None:
            rejected.append((fallback, "fallback not served by any deployment"))
        else:
            chosen.append((resolved, fallback, True))

    for (sub_kind, candidates), label, is_fallback in chosen:
        strict = sub_kind == "auto"
        scored: list[_Scored] = []
        for d in candidates:
            if d.id in seen:
                continue
            worst = None
            if options.max_cost_usd is not None:
                out = 0 if embedding else req.max_tokens or min(  # type: ignore[union-attr]
                    d.info.max_output or WORST_CASE_OUTPUT, WORST_CASE_OUTPUT)
                worst = _estimate(d.info, input_tokens, out)
            why = _exclusion(d, needs, strict, options.max_cost_usd, worst)
            if why is not None:
                rejected.append((d.id, why))
                continue
            seen.add(d.id)
            s = _score(d, weights, health.get(d.id, _HEALTHY))
            s.worst_cost = worst
            scored.append(s)
        if is_fallback and sub_kind == "explicit":
            named.update(d.id for d in candidates)
        if first_choice is None and scored:  # what the request gets when all is healthy
            ranked = sub_kind in ("auto", "bare")
            first_choice = min(scored, key=_score_key) if ranked else scored[0]
        if sub_kind in ("auto", "bare"):
            scored.sort(key=_rank_key)
        else:
            scored.sort(key=_breaker_key)  # stable: keeps the given order otherwise
        ctx = _Context(sub_kind, label, len(scored), is_fallback, level, options.prefer)
        steps.extend(
            PlanStep(s.deployment, s.score, s.worst_cost, (s, ctx, index))
            for index, s in enumerate(scored, start=1)
        )

    if not steps:
        detail = "; ".join(f"{who}: {why}" for who, why in rejected[:5])
        more = f" (and {len(rejected) - 5} more)" if len(rejected) > 5 else ""
        raise InvalidRequest(
            f"no deployment can serve this request for model '{req.model}'"
            + (f": {detail}{more}" if detail else ": " + NO_PROVIDER_KEYS),
            code="no_eligible_deployment",
            param="model",
        )
    guard = None
    factor = options.max_fallback_cost_factor
    factor = max_fallback_cost_factor if factor is None else factor
    if factor is not None and first_choice is not None:
        steps, guard = apply_cost_guard(steps, first_choice.deployment, factor, input_tokens,
                                        ranking_output, rejected, exempt=named)
    rejected = list(dict.fromkeys(rejected))  # a deployment seen again as a fallback
    return RoutePlan(req.model, kind, complexity, needs, steps, rejected, options.prefer, guard)


def _score_key(s: _Scored) -> tuple[float, str]:
    return -s.score, s.deployment.id


def _rank_key(s: _Scored) -> tuple[bool, float, str]:
    return s.health.breaker_open, -s.score, s.deployment.id


def _breaker_key(s: _Scored) -> bool:
    return s.health.breaker_open


def _position(kind: Kind, label: str, index: int, total: int, prefer: Prefer, is_fallback: bool) -> str:
    if kind in ("auto", "bare"):
        position = f"ranked {index} of {total} by {prefer}"
    elif kind == "group":
        position = f"in the order of group '{label}'"
    else:
        position = "requested by name"
    return f"fallback '{label}', {position}" if is_fallback else position

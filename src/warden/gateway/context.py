"""What a caller hands the gateway: who calls (``CallContext``) and how it wants
its request routed (``RouteOptions``, from the ``{"warden": {...}}`` extra body)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, get_args

from warden.errors import InvalidRequest

Prefer = Literal["value", "cost", "quality", "latency"]


@dataclass
class RouteOptions:
    prefer: Prefer = "value"
    fallbacks: list[str] = field(default_factory=list)
    max_cost_usd: Decimal | None = None
    # Failover's cost guard for this request: the most a fallback step may cost,
    # as a multiple of the first choice (inf: no guard); None: the gateway's default.
    max_fallback_cost_factor: float | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> RouteOptions:
        """From a request's ``{"warden": {...}}`` extra body; InvalidRequest if malformed."""
        if not raw:
            return cls()
        prefer = raw.get("prefer", "value")
        if prefer not in get_args(Prefer):
            raise InvalidRequest(
                f"warden.prefer must be one of {', '.join(get_args(Prefer))}", param="warden.prefer"
            )
        fallbacks = raw.get("fallbacks", [])
        if not isinstance(fallbacks, list) or not all(isinstance(f, str) and f for f in fallbacks):
            raise InvalidRequest("warden.fallbacks must be a list of model names", param="warden.fallbacks")
        max_cost = raw.get("max_cost_usd")
        if max_cost is not None:
            try:
                if isinstance(max_cost, bool):
                    raise InvalidOperation
                max_cost = Decimal(str(max_cost))
            except InvalidOperation:
                max_cost = None
            if max_cost is None or not max_cost.is_finite() or max_cost < 0:
                raise InvalidRequest(
                    "warden.max_cost_usd must be a non-negative number", param="warden.max_cost_usd"
                )
        return cls(prefer=prefer, fallbacks=list(fallbacks), max_cost_usd=max_cost,
                   max_fallback_cost_factor=_cost_factor(raw))


def _cost_factor(raw: Mapping[str, Any]) -> float | None:
    """``max_fallback_cost_factor`` (a number >= 1) or ``allow_pricier_fallback: true``."""
    allow = raw.get("allow_pricier_fallback", False)
    if not isinstance(allow, bool):
        raise InvalidRequest("warden.allow_pricier_fallback must be a boolean",
                             param="warden.allow_pricier_fallback")
    factor = raw.get("max_fallback_cost_factor")
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, int | float)
                               or math.isnan(factor) or factor < 1):
        raise InvalidRequest("warden.max_fallback_cost_factor must be a number >= 1",
                             param="warden.max_fallback_cost_factor")
    if allow:
        return math.inf
    return None if factor is None else float(factor)


@dataclass(slots=True)
class CallContext:
    workspace_id: str
    api_key_id: str | None
    request_id: str
    options: RouteOptions = field(default_factory=RouteOptions)
    agent_id: str | None = None
    started: float = field(default_factory=time.perf_counter)
    # The calling API key's own rate limits (from its principal); None: unlimited.
    key_rpm_limit: int | None = None
    key_tpm_limit: int | None = None
    # Filled in by the gateway as the call goes, for the access log: upstream
    # attempts so far, and the call's ``CallInfo`` once a deployment answered.
    attempts: int = 0
    served: Any = None
    # The client's own session id (Claude Code's X-Claude-Code-Session-Id), on the spend row.
    session_id: str | None = None
    # The request's span (``warden.tracing.RequestTrace``) while tracing is on, else None.
    trace: Any = None

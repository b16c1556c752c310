"""What a call cost and how it went: ``CallInfo`` (returned to the caller, sent in
the ``x-warden-*`` headers) and the spend rows the ledger records for each call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from warden.gateway.context import CallContext
from warden.gateway.errors import ProviderError
from warden.gateway.limits import RateSnapshot
from warden.gateway.types import Usage


@dataclass(slots=True)
class CallInfo:
    provider: str
    model: str
    deployment_id: str
    credential_id: str | None
    attempts: int
    cost_usd: Decimal | None
    overhead_ms: float
    usage: Usage = field(default_factory=Usage)
    ttft_ms: float | None = None
    rate: RateSnapshot | None = None  # rate limits after this call (x-ratelimit-* headers)
    fallback: bool = False  # served by a step other than the plan's first choice
    cost_factor: float | None = None  # a pricier fallback: its estimate / the first choice's


def spend_row(ctx: CallContext, info: CallInfo, status: str, *, latency_ms: float) -> dict[str, Any]:
    """The ledger row of a call that reached a deployment (it may have failed mid-stream)."""
    u = info.usage
    return {
        "request_id": ctx.request_id, "workspace_id": ctx.workspace_id,
        "api_key_id": ctx.api_key_id, "agent_id": ctx.agent_id, "provider": info.provider,
        "model": info.model, "credential_id": info.credential_id,
        "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens,
        "reasoning_tokens": u.reasoning_tokens, "cost_usd": info.cost_usd,
        "latency_ms": round(latency_ms, 3),
        "ttft_ms": None if info.ttft_ms is None else round(info.ttft_ms, 3),
        "attempts": info.attempts, "status": status, "session_id": ctx.session_id,
    }


def failure_row(ctx: CallContext, attempts: int, error: ProviderError) -> dict[str, Any]:
    """The ledger row of a call that no deployment served: nothing billed."""
    return {
        "request_id": ctx.request_id, "workspace_id": ctx.workspace_id,
        "api_key_id": ctx.api_key_id, "agent_id": ctx.agent_id, "provider": error.provider,
        "model": None, "credential_id": None, "input_tokens": 0, "output_tokens": 0,
        "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0,
        "cost_usd": Decimal(0), "latency_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
        "ttft_ms": None, "attempts": attempts, "status": f"error:{error.code}"[:32],
        "session_id": ctx.session_id,
    }

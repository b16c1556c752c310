"""What a run ends with: its outcome, its usage and cost summed over its steps,
and the error body it is stored and streamed with."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from warden.errors import WardenError
from warden.gateway.types import Usage


@dataclass(slots=True)
class RunOutcome:
    run_id: str
    session_id: str
    status: str
    message: dict[str, Any] | None = None  # the final assistant message {id, role, content}
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: str | None = None
    provider: str | None = None
    model: str | None = None
    error: dict[str, Any] | None = None


def error_body(exc: BaseException) -> dict[str, Any]:
    """The error of a run or a WebSocket message: the envelope's type, code and message
    (without ``param``, as stored runs have it) and the HTTP status. A failure that is
    not a WardenError is told as a generic server error, never by its own message."""
    err = exc if isinstance(exc, WardenError) else WardenError("internal error during the run")
    body = err.envelope()["error"]
    return {"type": body["type"], "code": body["code"], "message": body["message"], "status": err.status}


def usage_dict(u: Usage) -> dict[str, int]:
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "cache_read_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens,
            "reasoning_tokens": u.reasoning_tokens, "total_tokens": u.total_tokens}


def sum_steps(steps: list[dict[str, Any]]) -> tuple[Usage, Decimal | None]:
    """The usage of all steps, and their cost: None unless every step's cost is known."""
    usage, cost = Usage(), Decimal(0)
    cost_known = bool(steps)
    for st in steps:
        u = st["usage"]
        usage.input_tokens += u["input_tokens"]
        usage.output_tokens += u["output_tokens"]
        usage.cache_read_tokens += u["cache_read_tokens"]
        usage.cache_write_tokens += u["cache_write_tokens"]
        usage.reasoning_tokens += u["reasoning_tokens"]
        if st["cost_usd"] is None:
            cost_known = False
        else:
            cost += Decimal(st["cost_usd"])
    return usage, cost if cost_known else None

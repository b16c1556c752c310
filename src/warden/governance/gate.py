"""The decision point for tool calls that Warden does not run itself: an external
agent's MCP calls through ``/mcp``, its own tools through ``POST
/api/governance/decide`` and the ``warden hook`` commands.

INTERFACE DRAFT (issue 17): the names and signatures below are the contract the
MCP gateway, the hook commands and the HTTP route code against; the bodies are
filled in by the governed-calls work.

- The decision is the same pure one hosted runs get (``agents/policy.py``): the
  agent's tier, the call's risk level, the workspace policy.
- Every call is recorded (a row per action and a ``governance.decision`` audit
  event with the hash of its arguments, never the arguments' secrets).
- ``approve`` creates (or joins) a pending approval and *holds* the caller up to
  ``hold_s``: a decision by a human on any instance releases it (state-store
  channel, with a database poll as the safety net). Past the hold the caller gets
  ``pending`` with the approval id; the same call (same agent, tool and
  arguments) made again after approval is allowed exactly once.
- Outcomes (``finished``) feed the agent's maturity as a hosted run's do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["mcp", "api", "hook:claude-code", "hook:codex"]
VerdictOutcome = Literal["allow", "deny", "pending"]


@dataclass(frozen=True, slots=True)
class GovernedCall:
    """One tool call an external agent wants to make."""

    tool: str  # the name the agent calls it by ("server__tool" through /mcp, "Bash" from a hook)
    arguments: Any  # a JSON value
    level: int | None  # the caller's claim; an admin override (agent.tool_levels) wins; None and no override: 3
    source: Source


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: VerdictOutcome  # allow / deny now, or pending: held past the hold time (ask again later)
    reason: str  # readable by the model: why, and which rule
    rule: str  # e.g. "matrix:student:3", "policy:tool:x", "approval:apr_…" (approved by a human)
    level: int
    action_id: str  # the recorded action: report its outcome with ``Gate.finished``
    approval_id: str | None = None
    note: str | None = None  # the human's note when an approval decided it
    decided_by: str | None = None


# Called every few seconds while a call is held (the MCP gateway sends a progress notification).
OnHold = Callable[[float, str], Awaitable[None]]  # (seconds held so far, approval id)

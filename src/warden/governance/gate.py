"""The decision point for tool calls that Warden does not run itself: an external
agent's MCP calls through ``/mcp``, its own tools through ``POST
/api/governance/decide`` and the ``warden hook`` commands.

The names and signatures below are the contract the MCP gateway, the hook
commands and the HTTP route code against (issue 17).

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
- ``decide(defer=True)``: a call allowed at once at level 1 or 2 (read, draft) is
  not written yet: ``finished`` records its decision and outcome in one
  transaction (same row, same two audit events) after it ran, and the caller
  awaits that before it answers, so an answered call is on the ledger. A call
  that is held, denied, approved by a human or of level 3+ is written before it
  runs, as always (issue 19: one transaction per call instead of two).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from warden.agents.agent_cache import AgentCache
from warden.agents.policy import LEVELS, Decision, decide
from warden.agents.registry import require_bound_agent
from warden.agents.secrets_mask import mask_arguments
from warden.errors import Conflict, Forbidden, NotFound, ValidationFailed
from warden.governance.approvals import Approvals, approval_event
from warden.governance.holds import Holds
from warden.governance.maturity import Maturity, MoveDue, find_agent
from warden.governance.policy_store import PolicyStore
from warden.store import audit
from warden.store.agent_models import Agent
from warden.store.base import new_id, utcnow
from warden.store.db import Database
from warden.store.gate_models import GovernedCallRow
from warden.store.governance_models import Approval
from warden.tenancy import webhooks
from warden.tenancy.accounts import Principal

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
    # Set by ``decide(defer=True)`` when nothing is written yet: hand the verdict to ``finished``.
    deferred: Deferred | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Deferred:
    """What ``finished`` needs to write an allowed call's decision with its outcome."""

    principal: Principal
    agent: Agent
    call: GovernedCall
    level: int
    decision: Decision
    args_hash: str


DEFER_MAX_LEVEL = 2  # read and draft: a call of these lost to a crash mid-call changed nothing


# Called every few seconds while a call is held (the MCP gateway sends a progress notification).
OnHold = Callable[[float, str], Awaitable[None]]  # (seconds held so far, approval id)


def arguments_hash(arguments: Any) -> str:
    """sha256 of the canonical JSON of a call's arguments (sorted keys): what the ledger keeps."""
    return hashlib.sha256(orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)).hexdigest()


def call_hash(agent_id: str, tool: str, args_hash: str) -> str:
    """The identity of "the same call": same agent, tool and arguments."""
    return hashlib.sha256(f"{agent_id}\n{tool}\n{args_hash}".encode()).hexdigest()


def level_of(agent: Agent, call: GovernedCall) -> int:
    """An admin's override for the tool wins over the caller's claim; neither: 3 (mutate)."""
    override = (agent.tool_levels or {}).get(call.tool)
    level = override if override is not None else (call.level if call.level is not None else 3)
    if not isinstance(level, int) or isinstance(level, bool) or level not in LEVELS:
        raise ValidationFailed("level: must be an integer from 1 to 4", param="level")
    return level


_REFUSED = {"rejected": "a human rejected it", "expired": "nobody approved it in time, so its approval expired",
            "cancelled": "its approval was cancelled"}


class Gate:
    def __init__(self, db: Database, policies: PolicyStore, maturity: Maturity, approvals: Approvals,
                 holds: Holds, *, hold_s: float = 120.0, approval_ttl_s: float = 86400.0,
                 agents: AgentCache | None = None) -> None:
        self.db = db
        self.agents = agents or AgentCache(db)  # the bound agent of every call, cached
        self.policies = policies
        self.maturity = maturity
        self.approvals = approvals
        self.holds = holds
        self.hold_s = hold_s
        self.approval_ttl_s = approval_ttl_s
        approvals.release_external = self.settled

    # --- who is calling -------------------------------------------------------------

    async def agent_for(self, principal: Principal, ref: str | None) -> Agent:
        bound = principal.agent_id
        if bound is not None:
            agent = await self.agents.get(bound)
            if agent is None or agent.workspace_id != principal.workspace_id:
                raise NotFound("the agent this key is bound to no longer exists", code="agent_not_found")
            if ref is not None and ref not in (agent.id, agent.name):
                async with self.db.session() as s:
                    require_bound_agent(principal, await find_agent(s, principal.workspace_id, ref))
            return agent
        if not principal.is_admin:
            raise Forbidden("governed calls need a key bound to an agent (warden keys create --agent NAME)",
                            code="agent_key_required")
        if ref is None:
            raise ValidationFailed("agent: an admin key not bound to an agent must name one", param="agent")
        async with self.db.session() as s:
            return await find_agent(s, principal.workspace_id, ref)

    # --- the decision -------------------------------------------------------------------

    async def decide(self, principal: Principal, agent: Agent, call: GovernedCall, *,
                     hold_s: float | None = None, on_hold: OnHold | None = None,
                     defer: bool = False) -> Verdict:
        if not call.tool or len(call.tool) > 128:
            raise ValidationFailed("tool: 1 to 128 characters", param="tool")
        level = level_of(agent, call)
        d = decide(agent.tier, level, await self.policies.policy_for(agent.workspace_id),
                   tool=call.tool, agent_id=agent.id)
        args_hash = arguments_hash(call.arguments)
        if defer and d.outcome == "allow" and level <= DEFER_MAX_LEVEL:
            return Verdict("allow", d.reason, d.rule, level, new_id("act"),
                           deferred=Deferred(principal, agent, call, level, d, args_hash))
        first = await self.db.run_tx(lambda s: self._record(s, principal, agent, call, level, d, args_hash))
        if first.outcome != "pending" or first.approval_id is None:
            return first
        wait = self.hold_s if hold_s is None else max(0.0, hold_s)
        if wait > 0 and await self.holds.wait(first.approval_id, wait, on_hold):
            return await self._after_decision(first)
        return first

    async def _record(self, s: AsyncSession, principal: Principal, agent: Agent, call: GovernedCall,
                      level: int, d: Decision, args_hash: str, action_id: str | None = None,
                      ended: tuple[str, str, bool] | None = None) -> Verdict:
        """``ended``: (status, result hash, is_error) of a deferred call, written with its decision."""
        action_id = action_id or new_id("act")
        outcome: VerdictOutcome = "allow" if d.outcome == "allow" else "deny"
        status, rule, reason, approval_id = ("allowed" if outcome == "allow" else "denied"), d.rule, d.reason, None
        note = decided_by = None
        if d.outcome == "approve":
            chash = call_hash(agent.id, call.tool, args_hash)
            approved = await self._consume_any(s, agent.id, chash)
            if approved is not None:
                status, outcome, approval_id = "allowed", "allow", approved.id
                rule, note, decided_by = f"approval:{approved.id}", approved.note, approved.decided_by
                reason = f"{d.reason}; approved by {approved.decided_by or 'a human'}"
            else:
                approval = await self._pending_or_new(s, principal, agent, call, level, d, chash)
                status, outcome, approval_id = "held", "pending", approval.id
                reason = self._pending_reason(d.reason, approval.id)
        row, event = _call_row(principal, agent, call, level, d, args_hash, action_id, status, rule, reason,
                               approval_id, ended)
        s.add(row)
        await audit.append(s, **event)
        return Verdict(outcome, reason, rule, level, action_id, approval_id, note, decided_by)

    async def _consume_any(self, s: AsyncSession, agent_id: str, chash: str) -> Approval | None:
        """Use an approved, unused approval of this very call: exactly once across instances."""
        ids = (await s.execute(select(Approval.id).where(
            Approval.agent_id == agent_id, Approval.call_hash == chash, Approval.status == "approved",
            Approval.consumed_at.is_(None)).order_by(Approval.decided_at))).scalars().all()
        for approval_id in ids:
            if await self._consume(s, approval_id):
                return await s.get(Approval, approval_id, populate_existing=True)
        return None

    @staticmethod
    async def _consume(s: AsyncSession, approval_id: str) -> bool:
        moved = await s.execute(update(Approval).where(
            Approval.id == approval_id, Approval.status == "approved", Approval.consumed_at.is_(None)
        ).values(consumed_at=utcnow()).execution_options(synchronize_session=False))
        return moved.rowcount == 1

    async def _pending_or_new(self, s: AsyncSession, principal: Principal, agent: Agent, call: GovernedCall,
                              level: int, d: Decision, chash: str) -> Approval:
        pending = (await s.execute(select(Approval).where(
            Approval.agent_id == agent.id, Approval.call_hash == chash, Approval.status == "pending",
            Approval.expires_at > utcnow()).order_by(Approval.requested_at))).scalars().first()
        if pending is not None:
            return pending  # the same call asked again while a human decides: join it
        now = utcnow()
        approval = Approval(id=new_id("apr"), workspace_id=agent.workspace_id, run_id=None, session_id=None,
                            tool_call_id=None, agent_id=agent.id, api_key_id=principal.key_id, tool=call.tool,
                            arguments=orjson.dumps(mask_arguments(call.arguments)).decode(), risk_level=level,
                            reason=d.reason, rule=d.rule[:64], status="pending", requested_at=now,
                            expires_at=now + timedelta(seconds=self.approval_ttl_s), applied=False,
                            source=call.source, call_hash=chash)
        s.add(approval)
        await s.flush()
        await self.maturity.approvals_asked(s, agent, 1)
        await webhooks.emit(s, agent.workspace_id, "approval.required", approval_event(approval))
        return approval

    def _pending_reason(self, reason: str, approval_id: str) -> str:
        return (f"{reason}. It was NOT run: it waits for a human's decision (approval {approval_id}). "
                "Once it is approved, make exactly the same call again (same tool and arguments) and it will run.")

    async def _after_decision(self, held: Verdict) -> Verdict:
        """A held caller woke up: consume the approval, or carry the refusal back."""
        assert held.approval_id is not None
        approval_id = held.approval_id

        async def tx(s: AsyncSession) -> Verdict:
            a = await s.get(Approval, approval_id)
            assert a is not None
            row = await s.get(GovernedCallRow, held.action_id)
            assert row is not None
            if a.status == "approved" and await self._consume(s, approval_id):
                verdict = Verdict("allow", f"approved by {a.decided_by or 'a human'}"
                                  f"{f': {a.note}' if a.note else ''}", f"approval:{a.id}", held.level,
                                  held.action_id, a.id, a.note, a.decided_by)
                row.status = "allowed"
            elif a.status == "approved":
                verdict = Verdict("deny", f"approval {a.id} was already used by an identical call; this one was "
                                  "NOT run. Send it again to ask anew.", f"approval:{a.id}:used", held.level,
                                  held.action_id, a.id, a.note, a.decided_by)
                row.status = "denied"
            else:
                why = _REFUSED.get(a.status, f"its approval is {a.status}")
                verdict = Verdict("deny", f"refused: {why}{f' (note: {a.note})' if a.note else ''}. "
                                  "It was NOT run; continue without it.", f"approval:{a.id}:{a.status}",
                                  held.level, held.action_id, a.id, a.note, a.decided_by)
                row.status = a.status if a.status in ("rejected", "expired") else "denied"
            row.rule = verdict.rule[:200]
            row.reason = verdict.reason
            await audit.append(s, workspace_id=a.workspace_id, actor=f"agent:{a.agent_id}",
                               action="governance.released", target=held.action_id, data={
                                   "approval_id": a.id, "status": a.status, "outcome": verdict.outcome,
                                   "decided_by": a.decided_by or "", "tool": a.tool})
            return verdict

        return await self.db.run_tx(tx)

    async def settled(self, approval_id: str) -> None:
        """An external approval was decided (here, by a sweep, or by a management command):
        its held calls that nobody is waiting for take its status; every holder wakes up."""
        async with self.db.transaction() as s:
            a = await s.get(Approval, approval_id)
            if a is not None and a.status != "pending":
                await s.execute(update(GovernedCallRow).where(
                    GovernedCallRow.approval_id == approval_id, GovernedCallRow.status == "held"
                ).values(status=a.status if a.status in ("approved", "rejected", "expired") else "denied",
                         ended_at=utcnow()).execution_options(synchronize_session=False))
        await self.holds.announce(approval_id)

    # --- outcomes -------------------------------------------------------------------------

    async def finished(self, principal: Principal, action_id: str, *, ok: bool, result: Any,
                       verdict: Verdict | None = None, interrupted: bool = False) -> None:
        """The allowed call ran: record how it went (once), and count it toward the agent's
        maturity as one hosted run (ok: completed, else failed; clean: it was not refused).
        ``verdict``: a deferred one (``decide(defer=True)``) is written here first, in the
        same transaction. ``interrupted``: the client left mid-call; recorded, but it says
        nothing about the agent (maturity ignores it, as a cancelled hosted run)."""
        result_hash = arguments_hash(result)
        status = "interrupted" if interrupted else "completed" if ok else "failed"
        deferred = verdict.deferred if verdict is not None and verdict.action_id == action_id else None

        if deferred is not None and self.db.one_hop_writes:
            try:  # a SQLite file: the whole transaction in one thread hop (store/db.py run_sync_tx)
                await self.db.run_sync_tx(lambda s: self._finished_sync(s, deferred, action_id, status,
                                                                        result_hash, ok))
                return
            except MoveDue:
                pass  # rolled back; the async transaction below counts the run and makes the move

        async def tx(s: AsyncSession) -> None:
            if deferred is not None:  # its row goes in whole: nothing to read back or update
                await self._record(s, deferred.principal, deferred.agent, deferred.call, deferred.level,
                                   deferred.decision, deferred.args_hash, action_id, (status, result_hash, not ok))
                ws_id, agent_id, tool, source = (deferred.agent.workspace_id, deferred.agent.id,
                                                 deferred.call.tool, deferred.call.source)
                args_hash = deferred.args_hash
            else:
                row = await own_call(s, principal, action_id)
                if row.status != "allowed":
                    raise Conflict(f"action '{action_id}' is {row.status}: only an allowed call has an outcome",
                                   code="action_not_open")
                moved = await s.execute(update(GovernedCallRow).where(
                    GovernedCallRow.id == action_id, GovernedCallRow.status == "allowed"
                ).values(status=status, result_hash=result_hash, is_error=not ok, ended_at=utcnow())
                    .execution_options(synchronize_session=False))
                if moved.rowcount != 1:
                    raise Conflict(f"action '{action_id}' already has an outcome", code="action_not_open")
                ws_id, agent_id, tool, source, args_hash = (row.workspace_id, row.agent_id, row.tool, row.source,
                                                            row.arguments_hash)
            await audit.append(s, **_outcome_event(ws_id, agent_id, tool, source, action_id, status, result_hash,
                                                   args_hash))
            await self.maturity.run_ended(s, agent_id, status, clean=True)

        await self.db.run_tx(tx)

    def _finished_sync(self, s: Session, deferred: Deferred, action_id: str, status: str, result_hash: str,
                       ok: bool) -> None:
        """The deferred branch of ``finished``'s transaction on a synchronous session: same rows,
        same two events, same counting (``MoveDue`` when the count would move the agent's tier)."""
        agent, call = deferred.agent, deferred.call
        d = deferred.decision
        row, event = _call_row(deferred.principal, agent, call, deferred.level, d, deferred.args_hash, action_id,
                               "allowed", d.rule, d.reason, None, (status, result_hash, not ok))
        s.add(row)
        audit.append_sync(s, **event)
        audit.append_sync(s, **_outcome_event(agent.workspace_id, agent.id, call.tool, call.source, action_id,
                                              status, result_hash, deferred.args_hash))
        self.maturity.run_ended_sync(s, agent.id, status, clean=True)

    async def action(self, principal: Principal, action_id: str) -> dict[str, Any]:
        """One recorded call, with the status of its approval (for polling a pending one)."""
        async with self.db.session() as s:
            row = await own_call(s, principal, action_id)
            a = await s.get(Approval, row.approval_id) if row.approval_id else None
            return {"action_id": row.id, "agent_id": row.agent_id, "source": row.source, "tool": row.tool,
                    "arguments_hash": row.arguments_hash, "level": row.level, "decision": row.decision,
                    "rule": row.rule, "reason": row.reason, "status": row.status, "approval_id": row.approval_id,
                    "approval": None if a is None else {
                        "status": a.status, "decided_by": a.decided_by, "note": a.note,
                        "consumed": a.consumed_at is not None, "expires_at": a.expires_at.isoformat()},
                    "result_hash": row.result_hash, "is_error": row.is_error,
                    "created_at": row.created_at.isoformat(),
                    "ended_at": row.ended_at.isoformat() if row.ended_at else None}


def _call_row(principal: Principal, agent: Agent, call: GovernedCall, level: int, d: Decision, args_hash: str,
              action_id: str, status: str, rule: str, reason: str, approval_id: str | None,
              ended: tuple[str, str, bool] | None) -> tuple[GovernedCallRow, dict[str, Any]]:
    """A decided call's row and its ``governance.decision`` event (``audit.append``'s arguments)."""
    row = GovernedCallRow(id=action_id, workspace_id=agent.workspace_id, agent_id=agent.id,
                          api_key_id=principal.key_id, source=call.source, tool=call.tool,
                          arguments_hash=args_hash, level=level, decision=d.outcome, rule=rule[:200],
                          reason=reason, status=status, approval_id=approval_id)
    if ended is not None:
        row.status, row.result_hash, row.is_error = ended
        row.ended_at = utcnow()
    return row, {"workspace_id": agent.workspace_id, "actor": f"agent:{agent.id}", "action": "governance.decision",
                 "target": action_id, "data": {
                     "agent_id": agent.id, "tier": agent.tier, "tool": call.tool, "level": level,
                     "decision": d.outcome, "rule": rule, "reason": reason, "arguments_hash": args_hash,
                     "source": call.source, "api_key_id": principal.key_id, "approval_id": approval_id or ""}}


def _outcome_event(ws_id: str, agent_id: str, tool: str, source: str, action_id: str, status: str,
                   result_hash: str, args_hash: str) -> dict[str, Any]:
    return {"workspace_id": ws_id, "actor": f"agent:{agent_id}", "action": "governance.outcome", "target": action_id,
            "data": {"agent_id": agent_id, "tool": tool, "status": status, "result_hash": result_hash,
                     "arguments_hash": args_hash, "source": source}}


async def own_call(s: AsyncSession, principal: Principal, action_id: str) -> GovernedCallRow:
    """A recorded call the caller may see: an admin any of the workspace's, a key its own."""
    row = await s.get(GovernedCallRow, action_id)
    if row is None or row.workspace_id != principal.workspace_id or (
            not principal.is_admin and row.api_key_id != principal.key_id):
        raise NotFound(f"no action '{action_id[:80]}'", code="action_not_found")
    return row

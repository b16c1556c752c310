"""The tool calls of one step: each judged (allow / approve / deny) by the agent's
tier and the workspace policy, recorded with the judgement, the allowed ones run
in parallel with a timeout, and the run paused when any needs a human."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from warden import tracing
from warden.agents.events import EventLog
from warden.agents.hooks import Action, RunHooks, ToolboxLike
from warden.agents.policy import Decision, WorkspacePolicy, decide
from warden.agents.runs.live import LeaseLost, LiveRuns
from warden.agents.sessions import NewMessage, Sessions
from warden.agents.tools.base import Tool, ToolContext, ToolResult, cap_text
from warden.gateway.types import ToolCall
from warden.store.agent_models import Agent, Run, ToolCallRecord
from warden.store.base import new_id, utcnow
from warden.store.db import Database

log = logging.getLogger("warden.agents")

Emit = Callable[[str, dict[str, Any]], Any]  # (event type, data): publish an event of the run


@dataclass(slots=True)
class Call:
    """One tool call of a step, from the model's request to its result."""

    call: ToolCall
    record_id: str = field(default_factory=lambda: new_id("tc"))
    level: int | None = None
    decision: Decision | None = None
    args: dict[str, Any] | None = None
    result: ToolResult | None = None
    status: str = "pending"
    # Named here, not by governance, so the run's approval.required event can carry it.
    approval_id: str = field(default_factory=lambda: new_id("apr"))
    decided_by: str | None = None  # who approved or rejected it, when a human did (for its span)

    def action(self, step: int) -> Action:
        d = self.decision
        outcome = d.outcome if d else "deny"
        return Action(self.record_id, self.call.id, self.call.name[:128], self.call.arguments, self.level,
                      outcome, d.reason if d else None, d.rule if d else None, step,
                      approval_id=self.approval_id if outcome == "approve" else None)


class Paused(Exception):
    """Raised inside the loop when a step needs a human before it can go on."""


class ToolActions:
    """Judges, records and runs the tool calls of a step; pauses the run for approvals."""

    def __init__(self, db: Database, hooks: RunHooks, live: LiveRuns) -> None:
        self.db = db
        self.hooks = hooks
        self.live = live

    async def take(self, agent: Agent, run: Run, events: EventLog, toolbox: ToolboxLike,
                   policy: WorkspacePolicy | None, step: int, tool_calls: list[ToolCall], text: str) -> None:
        """One step's tool calls; raises :class:`Paused` when some wait for a human."""
        calls = [Call(c) for c in tool_calls]
        for c in calls:
            judge(agent, toolbox, policy, c)
            events.emit("tool.call", {
                "tool_call_id": c.record_id, "call_id": c.call.id, "name": c.call.name,
                "arguments": c.call.arguments, "risk_level": c.level,
                "decision": c.decision.outcome if c.decision else None,
                "reason": c.decision.reason if c.decision else None,
                "rule": c.decision.rule if c.decision else None,
            })

        async def record(s: AsyncSession) -> None:
            await Sessions.append(s, run.session_id, [NewMessage(
                "assistant", text or None, run_id=run.id,
                tool_calls=[{"id": c.call.id, "name": c.call.name, "arguments": c.call.arguments} for c in calls])])
            for c in calls:
                s.add(_record(run, step, c))
            await self.hooks.decided(s, run, agent, [c.action(step) for c in calls])

        await self.db.run_tx(record)
        await events.flush()
        if tracing.TRACER is not None:  # the calls judged but not run here get their span now
            for c in calls:
                if c.status != "running":
                    tracing.TRACER.tool(c).ended(c)

        ctx = ToolContext(agent.workspace_id, agent.id, run.id, run.session_id)
        runnable = [c for c in calls if c.status == "running"]
        await asyncio.gather(*(self.run_tool(toolbox.tools[c.call.name], c, ctx, events.emit) for c in runnable))
        await self._save_results(run, [c for c in calls if c.result is not None])
        await events.flush()
        pending = [c for c in calls if c.status == "pending_approval"]
        if pending:
            await self._pause(run, agent, events, step, pending)

    async def run_tool(self, tool: Tool, c: Call, ctx: ToolContext, emit: Emit) -> None:
        timeout = self.live.config.tool_timeout_s
        span = None if tracing.TRACER is None else tracing.TRACER.tool(c)
        try:
            result = await asyncio.wait_for(tool.run(c.args or {}, ctx), timeout)
            c.status = "completed" if not result.is_error else "failed"
        except TimeoutError:
            result, c.status = ToolResult(f"error: the tool '{tool.name}' timed out after {timeout:g} s",
                                          is_error=True), "timeout"
        except Exception as exc:  # noqa: BLE001 - a tool's bug reaches the model as a tool error, never crashes the run
            log.warning("tool %s raised %s", tool.name, type(exc).__name__)
            result, c.status = ToolResult(f"error: the tool '{tool.name}' failed ({type(exc).__name__})",
                                          is_error=True), "failed"
        c.result = ToolResult(cap_text(result.content), result.is_error)
        if span is not None:
            span.ended(c)
        emit("tool.result", {"tool_call_id": c.record_id, "call_id": c.call.id, "name": tool.name,
                             "status": c.status, "is_error": c.result.is_error, "content": c.result.content})

    async def _save_results(self, run: Run, calls: Sequence[Call]) -> None:
        if not calls:
            return
        async with self.db.transaction() as s:
            await write_results(s, run, calls)

    async def _pause(self, run: Run, agent: Agent, events: EventLog, step: int, pending: list[Call]) -> None:
        async def pause(s: AsyncSession) -> None:
            # A paused run waits for a human, not for an instance: it gives up its lease.
            moved = await s.execute(update(Run).where(Run.id == run.id, Run.owner == self.live.instance_id).values(
                status="paused", resume_state={"step": step, "pending": [c.record_id for c in pending]},
                owner=None, lease_expires_at=None))
            if moved.rowcount != 1:
                raise LeaseLost()
            await self.hooks.paused(s, run, agent, [c.action(step) for c in pending])

        await self.db.run_tx(pause)
        # After the commit, so a client that reads an approval id here can decide it at once.
        for c in pending:
            assert c.decision is not None
            events.emit("approval.required", {
                "tool_call_id": c.record_id, "call_id": c.call.id, "name": c.call.name, "arguments": c.args,
                "risk_level": c.level, "reason": c.decision.reason, "rule": c.decision.rule,
                "approval_id": c.approval_id})
        events.emit("run.paused", {"pending": [c.record_id for c in pending],
                                   "approval_ids": [c.approval_id for c in pending]})
        await events.flush()
        self.live.hold(run.id)
        raise Paused()


def judge(agent: Agent, toolbox: ToolboxLike, policy: WorkspacePolicy | None, c: Call) -> None:
    """Decide ``c`` and set its status: running, pending_approval, or an error result for the model."""
    tool = toolbox.tools.get(c.call.name)
    if tool is None:
        c.decision = Decision("deny", f"the agent has no tool named '{c.call.name[:80]}'", "unknown_tool")
        c.status, c.result = "failed", ToolResult(
            f"error: there is no tool named '{c.call.name[:80]}'; available: {', '.join(toolbox.tools) or 'none'}",
            is_error=True)
        return
    c.level = int((agent.tool_levels or {}).get(tool.name, tool.risk_level))
    c.decision = decide(agent.tier, c.level, policy, tool=tool.name, agent_id=agent.id)
    try:
        args = orjson.loads(c.call.arguments or "{}")
    except orjson.JSONDecodeError as exc:
        args, problem = None, f"not valid JSON ({exc})"
    else:
        problem = None if isinstance(args, dict) else "not a JSON object"
    if problem is not None:
        c.status, c.result = "failed", ToolResult(
            f"error: the arguments for '{tool.name}' are {problem}; send a JSON object matching the schema",
            is_error=True)
        return
    c.args = args
    if c.decision.outcome == "deny":
        c.status, c.result = "denied", ToolResult(
            f"refused: {c.decision.reason}. The action was not taken; continue without it.", is_error=True)
    elif c.decision.outcome == "approve":
        c.status = "pending_approval"
    else:
        c.status = "running"


def _record(run: Run, step: int, c: Call) -> ToolCallRecord:
    d = c.decision
    return ToolCallRecord(
        id=c.record_id, run_id=run.id, workspace_id=run.workspace_id, step=step, call_id=c.call.id,
        name=c.call.name[:128], arguments=c.call.arguments, risk_level=c.level,
        decision=d.outcome if d else "deny", reason=d.reason if d else None, rule=d.rule if d else None,
        status=c.status, result=c.result.content if c.result else None,
        is_error=bool(c.result and c.result.is_error),
        ended_at=utcnow() if c.status in ("failed", "denied") else None)


async def write_results(s: AsyncSession, run: Run, calls: Sequence[Call]) -> None:
    """Tool results as session messages, and each action's outcome on its record."""
    if not calls:
        return
    await Sessions.append(s, run.session_id, [
        NewMessage("tool", c.result.content if c.result else "", tool_call_id=c.call.id,
                   name=c.call.name[:128], run_id=run.id) for c in calls])
    for c in calls:
        await s.execute(update(ToolCallRecord).where(ToolCallRecord.id == c.record_id).values(
            status=c.status, result=c.result.content if c.result else None,
            is_error=bool(c.result and c.result.is_error), ended_at=utcnow()))

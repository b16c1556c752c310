"""Governance joined to the run loop (the ``RunHooks`` of ``agents/hooks.py``):
every decision audited, approvals asked for when a run pauses, and each finished
run counted toward its agent's maturity."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warden.agents.hooks import Action, RunHooks
from warden.governance.approvals import request_approvals
from warden.governance.maturity import Maturity
from warden.store import audit
from warden.store.agent_models import Agent, Run
from warden.store.base import utcnow
from warden.store.governance_models import Approval


class GovernanceHooks(RunHooks):
    def __init__(self, maturity: Maturity, *, approval_ttl_s: float) -> None:
        self.maturity = maturity
        self.approval_ttl_s = approval_ttl_s

    async def decided(self, s: AsyncSession, run: Run, agent: Agent, actions: list[Action]) -> None:
        for a in actions:
            await audit.append(s, workspace_id=run.workspace_id, actor=f"agent:{agent.id}",
                               action="governance.decision", target=a.tool_call_id, data={
                                   "run_id": run.id, "agent_id": agent.id, "tier": agent.tier, "tool": a.name,
                                   "level": a.level, "decision": a.decision, "rule": a.rule,
                                   "reason": a.reason or ""})

    async def paused(self, s: AsyncSession, run: Run, agent: Agent, pending: list[Action]) -> None:
        await request_approvals(s, run, agent, pending, ttl_s=self.approval_ttl_s)
        await self.maturity.approvals_asked(s, agent, len(pending))

    async def ended(self, s: AsyncSession, run: Run, status: str) -> None:
        refused = (await s.execute(select(func.count(Approval.id)).where(
            Approval.run_id == run.id, Approval.status.in_(("rejected", "expired"))))).scalar()
        await self.maturity.run_ended(s, run.agent_id, status, clean=not refused)
        if status == "completed":
            return
        # A run that failed or was cancelled waits for nobody: its undecided approvals close with it.
        await s.execute(update(Approval).where(Approval.run_id == run.id, Approval.status == "pending").values(
            status="cancelled", decided_by="system", decided_at=utcnow(), note=f"the run was {status}", applied=True
        ).execution_options(synchronize_session=False))

    async def cancelled(self, s: AsyncSession, run: Run, actor: str, reason: str) -> None:
        await audit.append(s, workspace_id=run.workspace_id, actor=actor, action="run.cancelled", target=run.id,
                           data={"session_id": run.session_id, "agent_id": run.agent_id, "reason": reason})

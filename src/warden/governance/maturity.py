"""Maturity on evidence: counters per agent and tier, promotion, demotion, manual tiers.

Promotion to the next tier needs, at the current tier: a minimum number of
successful runs, an intervention rate ((rejected actions + corrections) / runs)
under the tier's threshold, and human feedback that is on balance not negative
(with at least ``min_feedback`` ratings, so volume without any human signal
never promotes). It is proposed for an admin to confirm, or applied at once
when the workspace policy enables ``auto_promote``. A streak of failed runs or
rejected actions demotes one tier. A manual tier change is sticky: automatic
moves (and proposals) stop until an admin changes the tier again.

``readiness`` is pure; :class:`Maturity` keeps the counters and applies moves
inside the caller's transaction, audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from warden.agents.agent_cache import AgentCache
from warden.agents.policy import TIERS
from warden.errors import Conflict, NotFound, ValidationFailed
from warden.governance.policy_store import PolicyStore
from warden.store import audit
from warden.store.agent_models import Agent
from warden.store.base import utcnow
from warden.store.db import Database, dialect_insert
from warden.store.governance_models import AgentMaturity, Feedback, TierProposal
from warden.tenancy import webhooks


@dataclass(frozen=True, slots=True)
class MaturityConfig:
    min_runs: Mapping[str, int] = field(default_factory=lambda: {"student": 10, "intern": 25, "supervised": 50})
    max_intervention: Mapping[str, float] = field(
        default_factory=lambda: {"student": 0.5, "intern": 0.2, "supervised": 0.05})
    min_feedback: int = 1
    demotion_streak: int = 3

    @classmethod
    def from_settings(cls, runs: str, rates: str, min_feedback: int, streak: int) -> MaturityConfig:
        lower = TIERS[:3]
        return cls(dict(zip(lower, (int(x) for x in runs.split(",")), strict=True)),
                   dict(zip(lower, (float(x) for x in rates.split(",")), strict=True)), min_feedback, streak)


@dataclass(slots=True)
class Counts:
    runs: int = 0
    successes: int = 0
    failures: int = 0
    approvals_asked: int = 0
    approvals_rejected: int = 0
    corrections: int = 0
    feedback_sum: float = 0.0
    feedback_count: int = 0
    streak: int = 0

    @property
    def intervention_rate(self) -> float:
        return (self.approvals_rejected + self.corrections) / self.runs if self.runs else 0.0


@dataclass(frozen=True, slots=True)
class Readiness:
    tier: str
    next_tier: str | None
    ready: bool
    needs: list[str]  # what is still missing, in words; empty when ready


def next_tier(tier: str) -> str | None:
    i = TIERS.index(tier) if tier in TIERS else len(TIERS)
    return TIERS[i + 1] if i + 1 < len(TIERS) else None


def previous_tier(tier: str) -> str | None:
    i = TIERS.index(tier) if tier in TIERS else 0
    return TIERS[i - 1] if i > 0 else None


def readiness(tier: str, c: Counts, cfg: MaturityConfig) -> Readiness:
    """Does the evidence at ``tier`` support promotion? Pure."""
    target = next_tier(tier)
    if target is None:
        return Readiness(tier, None, False, ["autonomous is the highest tier"])
    needs: list[str] = []
    if c.successes < cfg.min_runs[tier]:
        needs.append(f"{cfg.min_runs[tier] - c.successes} more successful run(s) at {tier} "
                     f"({c.successes} of {cfg.min_runs[tier]})")
    limit = cfg.max_intervention[tier]
    if c.intervention_rate >= limit:
        needs.append(f"intervention rate {c.intervention_rate:.0%} must fall below {limit:.0%} "
                     "(rejected actions and corrections per run)")
    if c.feedback_count < cfg.min_feedback:
        needs.append(f"{cfg.min_feedback - c.feedback_count} more feedback rating(s)")
    if c.feedback_sum < 0:
        needs.append("feedback is negative on balance")
    return Readiness(tier, target, not needs, needs)


class MoveDue(Exception):
    """``run_ended_sync``: the run's evidence calls for a promotion, a proposal or a demotion.
    The caller rolls back and counts it with ``run_ended``, which makes the move."""


def _bump_statements(s: AsyncSession | Session, workspace_id: str, agent_id: str, tier: str,
                     values: dict[str, Any]) -> tuple[Any, Any]:
    """The counter row (created at zero if missing), then its update: both sessions' one home."""
    create = dialect_insert(s, AgentMaturity).values(  # type: ignore[arg-type]
        agent_id=agent_id, tier=tier, workspace_id=workspace_id, runs=0, successes=0, failures=0,
        approvals_asked=0, approvals_rejected=0, streak=0, updated_at=utcnow()).on_conflict_do_nothing()
    return create, (update(AgentMaturity).where(AgentMaturity.agent_id == agent_id, AgentMaturity.tier == tier)
                    .values(updated_at=utcnow(), **values).execution_options(synchronize_session=False))


def _run_values(status: str, clean: bool) -> dict[str, Any]:
    M = AgentMaturity
    if status == "completed":
        return {"runs": M.runs + 1, "successes": M.successes + 1, "streak": 0 if clean else M.streak}
    return {"runs": M.runs + 1, "failures": M.failures + 1, "streak": M.streak + 1}


def _feedback_totals(agent_id: str, tier: str) -> Any:
    return select(
        func.coalesce(func.sum(Feedback.score), 0.0), func.count(Feedback.id),
        func.coalesce(func.sum(case((func.length(func.coalesce(Feedback.correction, "")) > 0, 1), else_=0)), 0),
    ).where(Feedback.agent_id == agent_id, Feedback.tier == tier)


def _counts_of(row: AgentMaturity | None, fb: Any) -> Counts:
    c = Counts(feedback_sum=float(fb[0]), feedback_count=int(fb[1]), corrections=int(fb[2]))
    if row is not None:
        c.runs, c.successes, c.failures = row.runs, row.successes, row.failures
        c.approvals_asked, c.approvals_rejected, c.streak = row.approvals_asked, row.approvals_rejected, row.streak
    return c


class Maturity:
    def __init__(self, db: Database, policies: PolicyStore, config: MaturityConfig | None = None, *,
                 agents: AgentCache | None = None) -> None:
        self.db = db
        self.policies = policies
        self.config = config or MaturityConfig()
        self.agents = agents  # told of tier moves at their commit: its copies go

    # --- counting (inside the caller's transaction) ------------------------------

    async def _bump(self, s: AsyncSession, workspace_id: str, agent_id: str, tier: str, **values: Any) -> None:
        for statement in _bump_statements(s, workspace_id, agent_id, tier, values):
            await s.execute(statement)

    async def run_ended(self, s: AsyncSession, agent_id: str, status: str, *, clean: bool) -> None:
        """Count a finished run. ``clean``: no action of it was rejected (resets the streak)."""
        if status not in ("completed", "failed"):
            return  # a cancelled run says nothing about the agent
        agent = await s.get(Agent, agent_id)
        if agent is None:
            return
        await self._bump(s, agent.workspace_id, agent.id, agent.tier, **_run_values(status, clean))
        if status == "completed":
            await self.reconsider(s, agent)
        else:
            await self._maybe_demote(s, agent, "failed runs")

    def run_ended_sync(self, s: Session, agent_id: str, status: str, *, clean: bool) -> None:
        """``run_ended`` on a synchronous session (store/db.py ``run_sync_tx``) for the common
        run that moves no tier; raises :class:`MoveDue` when ``run_ended`` would move or propose."""
        if status not in ("completed", "failed"):
            return
        agent = s.get(Agent, agent_id)
        if agent is None:
            return
        for statement in _bump_statements(s, agent.workspace_id, agent.id, agent.tier, _run_values(status, clean)):
            s.execute(statement)
        if agent.tier_sticky:
            return  # as reconsider and _maybe_demote: no automatic move
        row = s.get(AgentMaturity, (agent.id, agent.tier), populate_existing=True)
        if status == "completed":
            counts = _counts_of(row, s.execute(_feedback_totals(agent.id, agent.tier)).one())
            if readiness(agent.tier, counts, self.config).ready:
                raise MoveDue()
        elif row is not None and previous_tier(agent.tier) is not None and row.streak >= self.config.demotion_streak:
            raise MoveDue()

    async def approvals_asked(self, s: AsyncSession, agent: Agent, n: int) -> None:
        await self._bump(s, agent.workspace_id, agent.id, agent.tier,
                         approvals_asked=AgentMaturity.approvals_asked + n)

    async def rejected(self, s: AsyncSession, agent_id: str) -> None:
        """An action was rejected (or its approval expired)."""
        agent = await s.get(Agent, agent_id)
        if agent is None:
            return
        M = AgentMaturity
        await self._bump(s, agent.workspace_id, agent.id, agent.tier,
                         approvals_rejected=M.approvals_rejected + 1, streak=M.streak + 1)
        await self._maybe_demote(s, agent, "rejected actions")

    # --- reading ------------------------------------------------------------------

    async def counts(self, s: AsyncSession, agent_id: str, tier: str) -> Counts:
        row = await s.get(AgentMaturity, (agent_id, tier), populate_existing=True)
        return _counts_of(row, (await s.execute(_feedback_totals(agent_id, tier))).one())

    async def view(self, agent: Agent) -> dict[str, Any]:
        async with self.db.session() as s:
            counts = await self.counts(s, agent.id, agent.tier)
            proposal = await s.get(TierProposal, agent.id)
            history = {t: asdict(await self.counts(s, agent.id, t)) for t in TIERS if t != agent.tier}
        ready = readiness(agent.tier, counts, self.config)
        needs = list(ready.needs)
        if agent.tier_sticky and ready.next_tier is not None:
            needs.append("the tier was set by hand: automatic moves are paused until an admin changes it")
        return {
            "agent_id": agent.id, "tier": agent.tier, "sticky": agent.tier_sticky,
            "counts": {**asdict(counts), "intervention_rate": round(counts.intervention_rate, 4)},
            "next_tier": ready.next_tier, "ready": ready.ready and not agent.tier_sticky, "needs": needs,
            "thresholds": None if ready.next_tier is None else {
                "min_successful_runs": self.config.min_runs[agent.tier],
                "max_intervention_rate": self.config.max_intervention[agent.tier],
                "min_feedback": self.config.min_feedback},
            "demotion_streak": {"current": counts.streak, "limit": self.config.demotion_streak},
            "proposal": None if proposal is None else {
                "from": proposal.from_tier, "to": proposal.to_tier, "status": proposal.status,
                "created_at": proposal.created_at, "evidence": proposal.evidence},
            "other_tiers": {t: c for t, c in history.items() if c["runs"] or c["feedback_count"]},
        }

    # --- moving -------------------------------------------------------------------

    async def reconsider(self, s: AsyncSession, agent: Agent) -> None:
        """After new evidence: promote (auto) or propose, if the evidence supports it."""
        if agent.tier_sticky:
            return
        counts = await self.counts(s, agent.id, agent.tier)
        ready = readiness(agent.tier, counts, self.config)
        if not ready.ready or ready.next_tier is None:
            return
        evidence = {**asdict(counts), "intervention_rate": round(counts.intervention_rate, 4)}
        stored = await self.policies.load(s, agent.workspace_id)
        if stored.body.auto_promote:
            await self._move(s, agent, ready.next_tier, actor="system", manual=False,
                             reason="promoted on evidence", evidence=evidence)
            return
        proposal = await s.get(TierProposal, agent.id)
        if proposal is not None and proposal.from_tier == agent.tier:
            if proposal.status == "pending":
                return
            # Declined: propose again only after as many more runs as the tier asks for.
            if counts.runs < proposal.runs_at + self.config.min_runs[agent.tier]:
                return
        if proposal is None:
            proposal = TierProposal(agent_id=agent.id, workspace_id=agent.workspace_id)
            s.add(proposal)
        proposal.from_tier, proposal.to_tier, proposal.status = agent.tier, ready.next_tier, "pending"
        proposal.runs_at, proposal.evidence, proposal.created_at = counts.runs, evidence, utcnow()
        proposal.decided_at = proposal.decided_by = None
        await s.flush()
        await audit.append(s, workspace_id=agent.workspace_id, actor="system", action="agent.promotion_proposed",
                           target=agent.id, data={"from": agent.tier, "to": ready.next_tier, "evidence": evidence})

    async def _maybe_demote(self, s: AsyncSession, agent: Agent, what: str) -> None:
        if agent.tier_sticky:
            return
        row = await s.get(AgentMaturity, (agent.id, agent.tier), populate_existing=True)
        lower = previous_tier(agent.tier)
        if row is None or lower is None or row.streak < self.config.demotion_streak:
            return
        await self._move(s, agent, lower, actor="system", manual=False,
                         reason=f"{row.streak} {what} in a row", evidence={"streak": row.streak})

    async def _move(self, s: AsyncSession, agent: Agent, tier: str, *, actor: str, manual: bool, reason: str,
                    evidence: dict[str, Any] | None = None, sticky: bool | None = None) -> None:
        old = agent.tier
        agent.tier = tier
        if sticky is not None:
            agent.tier_sticky = sticky
        agent.updated_at = utcnow()
        if self.agents is not None:
            self.agents.on_commit(s, agent.id)
        await s.execute(delete(TierProposal).where(TierProposal.agent_id == agent.id))
        # The new tier's evidence starts without a streak (an old row may hold one).
        await s.execute(update(AgentMaturity).where(AgentMaturity.agent_id == agent.id, AgentMaturity.tier == tier)
                        .values(streak=0).execution_options(synchronize_session=False))
        await s.flush()
        await audit.append(s, workspace_id=agent.workspace_id, actor=actor, action="agent.tier_change",
                           target=agent.id, data={"from": old, "to": tier, "manual": manual, "reason": reason,
                                                  "sticky": agent.tier_sticky, **({"evidence": evidence} if evidence else {})})
        await webhooks.emit(s, agent.workspace_id, "agent.tier_changed", {
            "agent_id": agent.id, "agent": agent.name, "from": old, "to": tier, "manual": manual,
            "reason": reason, "actor": actor, "sticky": agent.tier_sticky})

    async def decide_promotion(self, workspace_id: str, agent_id: str, accept: bool, *, actor: str) -> dict[str, Any]:
        """An admin confirms or declines the pending proposal."""

        async def tx(s: AsyncSession) -> Agent:
            agent = await find_agent(s, workspace_id, agent_id)
            proposal = await s.get(TierProposal, agent.id)
            if proposal is None or proposal.status != "pending" or proposal.from_tier != agent.tier:
                raise Conflict("there is no pending promotion for this agent", code="no_pending_promotion")
            if accept:
                await self._move(s, agent, proposal.to_tier, actor=actor, manual=False,
                                 reason="promotion confirmed by an admin", evidence=proposal.evidence)
            else:
                proposal.status, proposal.decided_at, proposal.decided_by = "declined", utcnow(), actor
                await s.flush()
                await audit.append(s, workspace_id=workspace_id, actor=actor, action="agent.promotion_declined",
                                   target=agent.id, data={"from": proposal.from_tier, "to": proposal.to_tier})
            return agent

        return await self.view(await self.db.run_tx(tx))

    async def set_tier(self, workspace_id: str, agent_id: str, tier: str, *, reason: str, actor: str,
                       sticky: bool = True) -> dict[str, Any]:
        """A manual tier change: sticky (automatic moves stop) unless ``sticky`` is False."""
        if tier not in TIERS:
            raise ValidationFailed(f"tier: must be one of {', '.join(TIERS)}", param="tier")
        if not reason.strip():
            raise ValidationFailed("reason: say why the tier changes", param="reason")

        async def tx(s: AsyncSession) -> Agent:
            agent = await find_agent(s, workspace_id, agent_id)
            await self._move(s, agent, tier, actor=actor, manual=True, reason=reason, sticky=sticky)
            return agent

        return await self.view(await self.db.run_tx(tx))


async def find_agent(s: AsyncSession, workspace_id: str, ref: str) -> Agent:
    agent = (await s.execute(select(Agent).where(
        Agent.workspace_id == workspace_id, (Agent.id == ref) | (Agent.name == ref)))).scalars().first()
    if agent is None:
        raise NotFound(f"no agent '{ref[:80]}'", code="agent_not_found")
    return agent

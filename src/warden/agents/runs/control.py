"""What an admin does to runs: list them (with who holds each and why one looks
stuck) and cancel one, wherever it executes.

A cancel is written to the database first (the run ``cancelled``, its waiting
actions and approvals closed, a ``run.cancelled`` event, an audit event), so
the session is free at once. A run executing here is stopped before that; one
executing on another instance is told through the state store, and that
instance's heartbeat notices anyway (the run is no longer its own).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warden.agents.events import event_rows
from warden.agents.hooks import RunHooks
from warden.agents.runs.live import LiveRuns
from warden.agents.runs.loop import ACTIVE
from warden.agents.runs.paused import lease_alive
from warden.errors import Conflict, NotFound, ValidationFailed
from warden.store.agent_models import Run, RunEvent, ToolCallRecord
from warden.store.base import utcnow
from warden.store.db import Database
from warden.store.governance_models import Approval
from warden.tenancy.accounts import Principal

STATUSES = ("running", "paused", "completed", "failed", "cancelled")
CANCEL_TOPIC = "runs.cancel"  # key: a run id; the instance executing it stops it
DECIDED_TOPIC = "runs.decided"  # key: a run id with decisions to carry out (governance/approvals.py)
Publish = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RunSummary:
    id: str
    session_id: str
    agent_id: str
    status: str
    owner: str | None
    lease_expires_at: datetime | None
    takeovers: int
    started_at: datetime
    ended_at: datetime | None
    stuck_reason: str | None


class RunControl:
    def __init__(self, db: Database, live: LiveRuns, hooks: RunHooks, publish: Publish | None = None) -> None:
        self.db = db
        self.live = live
        self.hooks = hooks
        self.publish = publish

    async def list(self, principal: Principal, *, status: str | None = None, stuck: bool = False,
                   agent_id: str | None = None, limit: int = 50) -> list[RunSummary]:
        """The workspace's runs, newest first (a member: those of its own key). ``stuck``:
        only active runs nobody is carrying on (see :func:`stuck_reason`)."""
        if status is not None and status not in STATUSES:
            raise ValidationFailed(f"status: must be one of {', '.join(STATUSES)}", param="status")
        q = select(Run).where(Run.workspace_id == principal.workspace_id)
        if not principal.is_admin:
            q = q.where(Run.api_key_id == principal.key_id)
        if status is not None:
            q = q.where(Run.status == status)
        if stuck:
            q = q.where(Run.status.in_(ACTIVE))
        if agent_id is not None:
            q = q.where(Run.agent_id == agent_id)
        async with self.db.session() as s:
            runs = list((await s.execute(q.order_by(Run.started_at.desc(), Run.id).limit(
                limit if not stuck else 10_000))).scalars())
            decided = await self._decided_waiting(s, [r.id for r in runs if r.status == "paused"])
        now = utcnow()
        views = [summary(r, stuck_reason(r, now, decided.get(r.id), self.live.config.lease_s)) for r in runs]
        return [v for v in views if v.stuck_reason is not None][:limit] if stuck else views

    @staticmethod
    async def _decided_waiting(s: AsyncSession, run_ids: list[str]) -> dict[str, datetime]:
        """For paused runs: when the oldest decision nobody has carried out yet was made."""
        if not run_ids:
            return {}
        rows = await s.execute(select(Approval.run_id, func.min(Approval.decided_at)).where(
            Approval.run_id.in_(run_ids), Approval.status.in_(("approved", "rejected", "expired")),
            Approval.applied.is_(False)).group_by(Approval.run_id))
        return {run_id: at for run_id, at in rows.all() if at is not None}

    async def cancel(self, principal: Principal, run_id: str, reason: str | None = None) -> Run:
        """Cancel an active run of the principal's workspace (admins only: the API checks)."""
        async with self.db.session() as s:
            run = await s.get(Run, run_id)
        if run is None or run.workspace_id != principal.workspace_id:
            raise NotFound(f"no run '{run_id[:80]}'", code="run_not_found")
        if run.status == "cancelled":
            return run  # the same request again: the same result
        if run.status not in ACTIVE:
            raise Conflict(f"run '{run_id}' already ended ({run.status})", code="run_not_active")
        await self.live.lose(run_id)  # executing here: stop it before its end is written for it
        why = reason or "cancelled by an admin"

        async def tx(s: AsyncSession) -> Run:
            moved = await s.execute(update(Run).where(Run.id == run_id, Run.status.in_(ACTIVE)).values(
                status="cancelled", ended_at=utcnow(), resume_state=None, owner=None, lease_expires_at=None,
                error={"type": "conflict", "code": "run_cancelled", "message": why, "status": 409}
            ).execution_options(synchronize_session=False))
            if moved.rowcount != 1:
                raise Conflict(f"run '{run_id}' ended meanwhile", code="run_not_active")
            await s.execute(update(ToolCallRecord).where(
                ToolCallRecord.run_id == run_id, ToolCallRecord.status.in_(("running", "pending_approval"))
            ).values(status="cancelled", ended_at=utcnow()))
            last = (await s.execute(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run_id))).scalar() or 0
            await s.execute(insert(RunEvent), event_rows(run_id, last, [
                ("run.cancelled", {"by": principal.actor, "reason": why})]))
            fresh = (await s.execute(select(Run).where(Run.id == run_id)
                                     .execution_options(populate_existing=True))).scalar_one()
            await self.hooks.cancelled(s, fresh, principal.actor, why)
            await self.hooks.ended(s, fresh, "cancelled")
            return fresh

        ended = await self.db.run_tx(tx)
        if run.owner is not None and run.owner != self.live.instance_id and self.publish is not None:
            await self.publish(CANCEL_TOPIC, run_id)
        return ended

    async def on_message(self, topic: str, key: str) -> None:
        """Subscriber: a run executing here was cancelled on another instance."""
        if topic == CANCEL_TOPIC:
            await self.live.lose(key)


def summary(r: Run, stuck: str | None = None) -> RunSummary:
    return RunSummary(r.id, r.session_id, r.agent_id, r.status, r.owner, r.lease_expires_at, r.takeovers or 0,
                      r.started_at, r.ended_at, stuck)


def stuck_reason(run: Run, now: datetime, decided_at: datetime | None, grace_s: float) -> str | None:
    """Why an active run looks stuck, or None: a lease that ran out (its owner died and no
    instance took it over yet), a running run with no owner (from before leases), or a
    decision made more than ``grace_s`` ago that no instance has carried out."""
    if run.status not in ACTIVE:
        return None
    if run.owner is not None and not lease_alive(run, now):
        return f"the lease of {run.owner} expired at {_iso(run.lease_expires_at)}; not taken over yet"
    if run.status == "running" and run.owner is None:
        return "running with no owner (no instance holds a lease on it)"
    if run.status == "paused" and run.owner is None and decided_at is not None \
            and decided_at < now - timedelta(seconds=grace_s):
        return f"a decision of {_iso(decided_at)} has not been carried out"
    return None


def _iso(at: Any) -> str:
    return at.isoformat() if at is not None else "unknown"

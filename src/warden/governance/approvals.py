"""Approvals: the pending actions of paused runs, and the humans who settle them.

A decision is a conditional ``UPDATE … WHERE status = 'pending'``, so across any
number of instances exactly one decision wins; the same decision again returns
the same result (idempotent), a different one gets 409. The winner then resumes
the run (the tool runs, or the model reads the refusal). An approval nobody
decides expires after the TTL and counts as a rejection; expiries are swept
periodically and whenever approvals are read. Only a serving instance carries a
decision out, with its own settings: a process that is not one (a management
command on the database) records the decision and announces it through the
state store; every serving instance's sweep also applies any decision left
unapplied (``applied`` flag: a dead instance, a run that was busy, no message).
With the workspace policy's ``approvals.require_second_person``, the key that
started a run may not approve its actions (403, audited); rejecting stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warden.agents.hooks import Action
from warden.agents.runs import DECIDED_TOPIC, RunBusy, RunHandle, Runs
from warden.agents.runs.paused import lease_alive
from warden.errors import Conflict, Forbidden, NotFound, ValidationFailed
from warden.governance.maturity import Maturity
from warden.governance.policy_store import PolicyStore
from warden.store import audit
from warden.store.agent_models import Agent, Run
from warden.store.base import new_id, utcnow
from warden.store.db import Database
from warden.store.governance_models import Approval
from warden.tenancy import webhooks
from warden.tenancy.accounts import Principal

log = logging.getLogger("warden.governance")

STATUSES = ("pending", "approved", "rejected", "expired", "cancelled")  # cancelled: its run ended first
Decision = Literal["approve", "reject"]
_STATUS_OF = {"approve": "approved", "reject": "rejected"}


@dataclass(frozen=True, slots=True)
class ApprovalView:
    id: str
    run_id: str | None  # None: an external agent's governed call (governance/gate.py)
    session_id: str | None
    agent_id: str
    tool_call_id: str | None
    tool: str
    arguments: Any
    risk_level: int | None
    reason: str | None
    rule: str | None
    status: str
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str | None
    source: str = "run"  # run | mcp | api | hook:claude-code | hook:codex (age: from requested_at)

    @classmethod
    def of(cls, a: Approval) -> ApprovalView:
        try:
            args: Any = orjson.loads(a.arguments)
        except orjson.JSONDecodeError:
            args = a.arguments
        return cls(a.id, a.run_id, a.session_id, a.agent_id, a.tool_call_id, a.tool, args, a.risk_level, a.reason,
                   a.rule, a.status, a.requested_at, a.expires_at, a.decided_at, a.decided_by, a.note,
                   a.source or "run")


async def request_approvals(s: AsyncSession, run: Run, agent: Agent, pending: list[Action], *,
                            ttl_s: float) -> list[Approval]:
    """One pending approval per action, written in the transaction that pauses the run
    (under the id the runtime named, which its events carry), and its ``approval.required``
    webhook event. A function, not a method of ``Approvals``: the runs' hooks call it, and
    the runs are built (with their hooks) before the ``Approvals`` that resume them."""
    now = utcnow()
    rows = [Approval(id=a.approval_id or new_id("apr"), workspace_id=run.workspace_id, run_id=run.id,
                     session_id=run.session_id, tool_call_id=a.tool_call_id, agent_id=agent.id,
                     api_key_id=run.api_key_id, tool=a.name, arguments=a.arguments, risk_level=a.level,
                     reason=a.reason, rule=a.rule, status="pending", requested_at=now,
                     expires_at=now + timedelta(seconds=ttl_s), applied=False) for a in pending]
    s.add_all(rows)
    await s.flush()
    for row in rows:
        await webhooks.emit(s, row.workspace_id, "approval.required", approval_event(row))
    return rows


def approval_event(a: Approval) -> dict[str, Any]:
    """What a webhook is told of an approval: what ``GET /api/approvals`` shows of it."""
    view = ApprovalView.of(a)
    return {"approval_id": a.id, "status": a.status, "source": a.source or "run", "run_id": a.run_id, "session_id": a.session_id,
            "agent_id": a.agent_id, "tool_call_id": a.tool_call_id, "tool": a.tool, "arguments": view.arguments,
            "risk_level": a.risk_level, "reason": a.reason, "rule": a.rule,
            "requested_at": _iso(a.requested_at), "expires_at": _iso(a.expires_at),
            "decided_at": _iso(a.decided_at), "decided_by": a.decided_by, "note": a.note}


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


class Approvals:
    def __init__(self, db: Database, runs: Runs, maturity: Maturity, policies: PolicyStore, *,
                 ttl_s: float = 86400.0, sweep_s: float = 30.0, serving: bool = True,
                 publish: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self.db = db
        self.runs = runs
        self.maturity = maturity
        self.policies = policies
        self.ttl_s = ttl_s
        self.sweep_s = sweep_s
        self.serving = serving  # only a serving instance carries decisions out
        self.publish = publish
        # Set by the gate: a decided external approval (no run) releases the calls held on it.
        self.release_external: Callable[[str], Awaitable[None]] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- reading -------------------------------------------------------------------------

    async def list(self, principal: Principal, *, status: str | None = None, agent_id: str | None = None,
                   run_id: str | None = None, limit: int = 50) -> list[ApprovalView]:
        if status is not None and status not in STATUSES:
            raise ValidationFailed(f"status: must be one of {', '.join(STATUSES)}", param="status")
        await self.expire_due(principal.workspace_id)
        q = select(Approval).where(Approval.workspace_id == principal.workspace_id)
        if not principal.is_admin:
            q = q.where(Approval.api_key_id == principal.key_id)  # members see their own runs' actions
        if status is not None:
            q = q.where(Approval.status == status)
        if agent_id is not None:
            q = q.where(Approval.agent_id == agent_id)
        if run_id is not None:
            q = q.where(Approval.run_id == run_id)
        async with self.db.session() as s:
            rows = (await s.execute(q.order_by(Approval.requested_at.desc(), Approval.id).limit(limit))).scalars()
            return [ApprovalView.of(a) for a in rows]

    async def get(self, principal: Principal, approval_id: str) -> ApprovalView:
        await self.expire_due(principal.workspace_id)
        async with self.db.session() as s:
            a = await s.get(Approval, approval_id)
        if a is None or a.workspace_id != principal.workspace_id or (
                not principal.is_admin and a.api_key_id != principal.key_id):
            raise NotFound(f"no approval '{approval_id[:80]}'", code="approval_not_found")
        return ApprovalView.of(a)

    async def for_run(self, run_id: str) -> dict[str, Approval]:
        """The approvals of a run by tool call id (for explaining its actions)."""
        async with self.db.session() as s:
            rows = (await s.execute(select(Approval).where(Approval.run_id == run_id))).scalars()
            return {a.tool_call_id: a for a in rows}

    # --- deciding ---------------------------------------------------------------------

    async def decide(self, principal: Principal, approval_id: str, decision: str, *,
                     note: str | None = None, wait: bool = False) -> ApprovalView:
        """Approve or reject. ``wait``: return only once the resumed run ends or pauses
        again (the CLI, whose process exits afterwards); else the run goes on in the background."""
        if decision not in _STATUS_OF:
            raise ValidationFailed("decision: must be 'approve' or 'reject'", param="decision")
        current = await self.get(principal, approval_id)  # 404s, and sweeps expiries first
        wanted = _STATUS_OF[decision]
        if current.status != "pending":
            same = _same_or_conflict(current, wanted)
            await self._apply(approval_id)  # the same decision again carries it out if nobody did yet
            return same
        if decision == "approve":
            await self._check_second_person(principal, approval_id)
        won = await self._settle(approval_id, wanted, actor=principal.actor, note=note)
        if not won:  # someone decided it a moment ago, here or on another instance
            return _same_or_conflict(await self.get(principal, approval_id), wanted)
        handle = await self._apply(approval_id)
        if wait and handle is not None:
            await self.runs.wait(handle)
        return await self.get(principal, approval_id)

    async def _check_second_person(self, principal: Principal, approval_id: str) -> None:
        """Refuse (and audit) the run's own key approving its action, if the workspace says so."""
        if not (await self.policies.get(principal.workspace_id)).body.approvals.require_second_person:
            return

        async def tx(s: AsyncSession) -> bool:
            a = await s.get(Approval, approval_id)
            if a is None or a.api_key_id != principal.key_id:
                return False
            await audit.append(s, workspace_id=a.workspace_id, actor=principal.actor,
                               action="approval.self_approval_refused", target=a.id,
                               data={"run_id": a.run_id, "tool_call_id": a.tool_call_id, "tool": a.tool,
                                     "level": a.risk_level})
            return True

        if await self.db.run_tx(tx):
            raise Forbidden("this workspace requires a second person: the key that started the run "
                            "(or asked for the call) may not approve its actions", code="second_person_required")

    async def _settle(self, approval_id: str, status: str, *, actor: str, note: str | None) -> bool:
        """The conditional update; True if this call decided the approval."""

        async def tx(s: AsyncSession) -> bool:
            moved = await s.execute(update(Approval).where(Approval.id == approval_id, Approval.status == "pending")
                                    .values(status=status, decided_by=actor, decided_at=utcnow(), note=note)
                                    .execution_options(synchronize_session=False))
            if moved.rowcount != 1:
                return False
            a = await s.get(Approval, approval_id, populate_existing=True)
            assert a is not None
            await audit.append(s, workspace_id=a.workspace_id, actor=actor, action=f"approval.{status}",
                               target=a.id, data={"run_id": a.run_id, "tool_call_id": a.tool_call_id,
                                                  "agent_id": a.agent_id, "tool": a.tool, "level": a.risk_level,
                                                  "rule": a.rule, "note": note or ""})
            if status != "approved":
                await self.maturity.rejected(s, a.agent_id)
            await webhooks.emit(s, a.workspace_id, "approval.decided", approval_event(a))
            return True

        return await self.db.run_tx(tx)

    async def _apply(self, approval_id: str, *, retry: bool = True) -> RunHandle | None:
        """Bring a decided approval to its run: the tool runs, or the model reads the refusal.

        Claimed first (``applied`` False -> True, conditionally), so the action is
        applied at most once even when an instance's sweep races the decider. A process
        that is not serving leaves it to the servers, and tells them."""
        if not self.serving:
            async with self.db.session() as s:
                a = await s.get(Approval, approval_id)
            if a is not None and a.run_id is None:
                await self._release(approval_id)
            elif a is not None and self.publish is not None:
                await self.publish(DECIDED_TOPIC, a.run_id)
            return None
        async with self.db.transaction() as s:
            claimed = await s.execute(update(Approval).where(
                Approval.id == approval_id, Approval.status != "pending", Approval.applied.is_(False)
            ).values(applied=True).execution_options(synchronize_session=False))
            if claimed.rowcount != 1:
                return None
            a = await s.get(Approval, approval_id)
        assert a is not None
        if a.run_id is None:  # an external agent's call: no run to resume, its holders wake up
            await self._release(approval_id)
            return None
        try:
            return await self.runs.resume_run(
                a.run_id, "approve" if a.status == "approved" else "reject", tool_call_id=a.tool_call_id,
                note=a.note, actor=a.decided_by or "system", refusal=self._refusal(a))
        except RunBusy:
            # Another decision of the run is being carried out: this one waits for it to let go
            # (it announces that; the sweep is the safety net).
            await self._give_back(a.id)
            if retry and not await self._run_held(a.run_id):  # it let go before we gave this back
                return await self._apply(approval_id, retry=False)
            return None
        except (Conflict, NotFound) as exc:
            # The run no longer waits for this action (it ended, was deleted, or was settled).
            log.info("approval %s not applied: %s", a.id, exc.message)
            return None
        except BaseException:
            # Give it back to the sweep: the run still waits for this decision.
            await self._give_back(a.id)
            raise

    async def _release(self, approval_id: str) -> None:
        if self.release_external is not None:
            await self.release_external(approval_id)

    async def _run_held(self, run_id: str) -> bool:
        async with self.db.session() as s:
            run = await s.get(Run, run_id)
        return run is not None and lease_alive(run, utcnow())

    async def _give_back(self, approval_id: str) -> None:
        async with self.db.transaction() as s:
            await s.execute(update(Approval).where(Approval.id == approval_id).values(applied=False))

    def _refusal(self, a: Approval) -> str | None:
        if a.status != "expired":
            return None
        hours = self.ttl_s / 3600
        wait = f"{hours:g} h" if hours >= 1 else f"{self.ttl_s:g} s"
        return (f"refused: nobody approved this action within {wait}, so it expired and was not taken. "
                "Continue without it.")

    # --- expiry and recovery ---------------------------------------------------------------

    async def expire_due(self, workspace_id: str | None = None) -> int:
        """Expire pending approvals past their time (each counts as a rejection) and resume their runs."""
        q = select(Approval.id).where(Approval.status == "pending", Approval.expires_at <= utcnow())
        if workspace_id is not None:
            q = q.where(Approval.workspace_id == workspace_id)
        async with self.db.session() as s:
            due = list((await s.execute(q)).scalars())
        count = 0
        for approval_id in due:
            if await self._settle(approval_id, "expired", actor="system", note="expired"):
                count += 1
                await self._apply(approval_id)
        return count

    async def apply_unapplied(self) -> int:
        """Decisions an instance recorded but never brought to their run (it died in between)."""
        async with self.db.session() as s:
            ids = list((await s.execute(select(Approval.id).where(
                Approval.status != "pending", Approval.applied.is_(False)))).scalars())
        for approval_id in ids:
            await self._apply(approval_id)
        return len(ids)

    async def apply_for_run(self, run_id: str) -> int:
        """The decisions of one run nobody has carried out yet (announced by another process)."""
        async with self.db.session() as s:
            ids = list((await s.execute(select(Approval.id).where(
                Approval.run_id == run_id, Approval.status != "pending", Approval.applied.is_(False))
                .order_by(Approval.decided_at))).scalars())
        for approval_id in ids:
            await self._apply(approval_id)
        return len(ids)

    def on_message(self, topic: str, key: str) -> None:
        """State-store subscriber: a run has decisions to carry out (decided elsewhere, or
        a run that was busy let go). Off the delivery path, in its own task."""
        if topic != DECIDED_TOPIC or not self.serving:
            return
        task = asyncio.create_task(self._apply_quietly(key), name=f"warden-apply-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply_quietly(self, run_id: str) -> None:
        try:
            await self.apply_for_run(run_id)
        except Exception:  # the sweep tries again
            log.warning("applying the decisions of run %s failed", run_id, exc_info=True)

    async def sweep(self) -> None:
        await self.expire_due()
        await self.apply_unapplied()

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="warden-approvals-sweep")

    async def _sweep_forever(self) -> None:
        # Not at once: a process that starts only to migrate and exits carries nothing out.
        await asyncio.sleep(min(self.sweep_s, 1.0))
        while True:
            try:
                await self.sweep()
            except Exception:  # the database may be briefly away; try again next time
                log.warning("approval sweep failed", exc_info=True)
            await asyncio.sleep(self.sweep_s)

    async def close(self) -> None:
        for task in [self._sweeper, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _same_or_conflict(current: ApprovalView, wanted: str) -> ApprovalView:
    if current.status == wanted:
        return current  # the same decision again: the same result
    raise Conflict(f"approval '{current.id}' is already {current.status}"
                   f"{f' by {current.decided_by}' if current.decided_by else ''}", code="approval_already_decided")


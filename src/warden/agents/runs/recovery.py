"""Runs whose owner died: taken over once their lease expires.

Every active run that a serving instance works on carries that instance's id
and a lease (``runs.owner``, ``runs.lease_expires_at``), renewed by its
heartbeat. The sweep of every serving instance looks for leases that ran out
and takes such a run over by compare-and-set (``UPDATE … WHERE owner = <dead
one> AND lease_expires_at < now``: exactly one instance wins), then goes on
from what the database holds:

- a ``running`` run is continued from its next model call. Each tool call of
  its last step that has no answer yet gets one first: a tool that was
  ``running`` is reported to the model as interrupted and is **not run again**
  (at most once: it may have half-run, and an action that needed no human may
  still mutate); one that waited for an approval nobody was asked for is
  refused. The model call that was in flight is made again (at least once).
- a ``paused`` run whose decided actions were being carried out: an approved
  action whose tool never started (still ``pending_approval``) is carried out
  now; one marked ``running`` is reported interrupted, never run twice; a
  rejected one gets its refusal. Then the run goes on as after any decision.

A run taken over more than ``MAX_TAKEOVERS`` times (a tool that kills every
server it runs on) ends ``failed`` (``run_abandoned``) instead.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, insert, select, update

from warden.agents.events import EventLog, RunChannel, event_rows
from warden.agents.registry import Agents
from warden.agents.runs.actions import Call, write_results
from warden.agents.runs.live import LiveRuns, RunHandle
from warden.agents.runs.loop import ACTIVE, RunLoop
from warden.agents.runs.paused import INTERRUPTED, PausedRuns, Verdict, key_principal
from warden.agents.tools.base import ToolResult
from warden.errors import Forbidden, NotFound, WardenError
from warden.gateway.types import ToolCall
from warden.store.agent_models import Message, Run, RunEvent, ToolCallRecord
from warden.store.base import utcnow
from warden.store.db import Database
from warden.store.governance_models import Approval
from warden.tenancy.accounts import Principal

log = logging.getLogger("warden.agents")

MAX_TAKEOVERS = 3
NOT_ASKED = ("refused: this action needed a human's approval, and the server stopped before asking for it. "
             "It was not taken; continue without it.")


class Recovery:
    def __init__(self, db: Database, agents: Agents, *, loop: RunLoop, paused: PausedRuns, live: LiveRuns) -> None:
        self.db = db
        self.agents = agents
        self.loop = loop
        self.paused = paused
        self.live = live

    async def sweep(self) -> int:
        """Take over every active run whose owner's lease ran out. Returns how many."""
        async with self.db.session() as s:
            rows = (await s.execute(select(Run.id, Run.owner).where(
                Run.status.in_(ACTIVE), Run.owner.is_not(None), Run.lease_expires_at < utcnow()))).all()
        count = 0
        for row in rows:
            if row.id not in self.live and await self.take_over(row.id, row.owner) is not None:
                count += 1
        return count

    async def take_over(self, run_id: str, owner: str) -> RunHandle | None:
        """Claim ``run_id`` from ``owner`` if its lease is still expired, and go on with it."""
        async with self.db.transaction() as s:
            moved = await s.execute(update(Run).where(
                Run.id == run_id, Run.owner == owner, Run.status.in_(ACTIVE), Run.lease_expires_at < utcnow()
            ).values(owner=self.live.instance_id, lease_expires_at=self.live.config.lease_until(),
                     takeovers=Run.takeovers + 1, heartbeat_at=utcnow()).execution_options(synchronize_session=False))
            if moved.rowcount != 1:
                return None  # renewed, or another instance was faster
            run = (await s.execute(select(Run).where(Run.id == run_id))).scalar_one()
        log.warning("run %s: its owner %s stopped renewing its lease; taken over by %s (%d)",
                    run_id, owner, self.live.instance_id, run.takeovers)
        try:
            agent = await self.agents.get(run.workspace_id, run.agent_id)
        except NotFound:
            return None  # the agent (and with it the run) is being deleted
        if run.takeovers > MAX_TAKEOVERS:
            return await self._give_up(run, agent)
        if run.status == "paused":
            verdicts = await self._verdicts(run)
            async with self.db.transaction() as s:
                last = (await s.execute(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run.id))).scalar()
                await s.execute(insert(RunEvent), event_rows(run.id, last or 0, [self._recovered(
                    run, [k for k, v in verdicts.items() if v.decision == "interrupted"])]))
            return await self.paused.launch(run, agent, verdicts)
        return await self._go_on(run, agent)

    async def _verdicts(self, run: Run) -> dict[str, Verdict]:
        """What to do with each action the dead owner was carrying out."""
        settling: list[str] = list((run.resume_state or {}).get("settling", []))
        async with self.db.session() as s:
            records = {r.id: r for r in (await s.execute(select(ToolCallRecord).where(
                ToolCallRecord.id.in_(settling)))).scalars()}
            approvals = {a.tool_call_id: a for a in (await s.execute(select(Approval).where(
                Approval.tool_call_id.in_(settling)))).scalars()}
        verdicts: dict[str, Verdict] = {}
        for record_id in settling:
            record, a = records.get(record_id), approvals.get(record_id)
            if record is None or record.status != "pending_approval" or a is None or a.status == "pending":
                verdicts[record_id] = Verdict("interrupted")  # it may have started: never twice
            elif a.status == "approved":
                verdicts[record_id] = Verdict("approve", a.note, a.decided_by or "system")
            else:
                verdicts[record_id] = Verdict("reject", a.note, a.decided_by or "system")
        return verdicts

    async def _go_on(self, run: Run, agent: Any) -> RunHandle:
        """Answer the last step's unanswered tool calls, then continue with the next model call."""
        async with self.db.transaction() as s:
            calls = await _unanswered(s, run)
            await write_results(s, run, calls)
            last = (await s.execute(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run.id))).scalar() or 0
            produced = [self._recovered(run, [c.record_id for c in calls if c.status == "interrupted"])]
            produced += [("tool.result", {"tool_call_id": c.record_id, "call_id": c.call.id, "name": c.call.name,
                                          "status": c.status, "is_error": True,
                                          "content": c.result.content if c.result else ""})
                         for c in calls if c.status in ("interrupted", "cancelled")]
            await s.execute(insert(RunEvent), event_rows(run.id, last, produced))
        events = EventLog(self.db, run.id, run.session_id, RunChannel(), last_seq=last + len(produced))
        principal = await key_principal(self.db, run)
        refused = None if principal is not None else Forbidden(
            "the API key that started this run was revoked; the run cannot go on", code="api_key_revoked")
        return self.loop.launch(
            agent, run, events, principal or Principal(run.workspace_id, "", run.api_key_id or "", "member"),
            run.id, first_step=len(run.steps or []) + 1, refused=refused)

    def _recovered(self, run: Run, interrupted: list[str]) -> tuple[str, dict[str, Any]]:
        """The event that tells followers who carries the run on now, and what was cut."""
        return ("run.recovered", {"by": self.live.instance_id, "takeovers": run.takeovers,
                                  "interrupted": interrupted})

    async def _give_up(self, run: Run, agent: Any) -> RunHandle:
        async with self.db.session() as s:
            last = (await s.execute(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run.id))).scalar() or 0
        events = EventLog(self.db, run.id, run.session_id, RunChannel(), last_seq=last)
        error = WardenError(f"the servers executing this run stopped {run.takeovers} times before it finished; "
                            "it was not tried again", code="run_abandoned")
        return self.loop.launch(agent, run, events, Principal(run.workspace_id, "", run.api_key_id or "", "member"),
                                run.id, first_step=len(run.steps or []) + 1, refused=error)


async def _unanswered(s: Any, run: Run) -> list[Call]:
    """The tool calls of the run's last assistant message that have no tool message yet,
    each with the answer the model will read."""
    rows = list((await s.execute(select(Message).where(
        Message.run_id == run.id, Message.role.in_(("assistant", "tool"))).order_by(Message.seq))).scalars())
    asked = [i for i, m in enumerate(rows) if m.role == "assistant" and m.tool_calls]
    if not asked:
        return []
    answered = {m.tool_call_id for m in rows[asked[-1] + 1:] if m.role == "tool"}
    wanted = [tc for tc in rows[asked[-1]].tool_calls or [] if tc.get("id") not in answered]
    if not wanted:
        return []
    step = (await s.execute(select(func.max(ToolCallRecord.step)).where(ToolCallRecord.run_id == run.id))).scalar()
    records = {r.call_id: r for r in (await s.execute(select(ToolCallRecord).where(
        ToolCallRecord.run_id == run.id, ToolCallRecord.step == step))).scalars()}
    calls: list[Call] = []
    for tc in wanted:
        r = records.get(tc.get("id"))
        c = Call(ToolCall(tc.get("id") or "", tc.get("name") or "", tc.get("arguments") or "{}"))
        if r is not None:
            c.record_id = r.id
        if r is not None and r.status not in ("running", "pending_approval"):
            c.status, c.result = r.status, ToolResult(r.result or "", r.is_error)
        elif r is not None and r.status == "pending_approval":
            c.status, c.result = "cancelled", ToolResult(NOT_ASKED, is_error=True)
        else:
            c.status, c.result = "interrupted", ToolResult(INTERRUPTED, is_error=True)
        calls.append(c)
    return calls

"""Paused runs: settling their decided actions and continuing them.

The decided actions of one run are carried out by one serving instance at a
time: the one that claims the run. Each read-modify-write of the run's pending
state happens on the locked run row (``SELECT … FOR UPDATE`` on PostgreSQL;
SQLite has one writer). The claim moves the chosen actions from ``pending`` to
``settling`` and makes this instance the run's owner with a lease (a run
another instance holds a live lease on is busy: the decision waits, and is
applied when that instance lets go, which it announces). The settling itself
runs in the run's own task, after the toolbox is built, so a run whose toolbox
this server cannot build ends ``failed`` with that error instead of waiting
for ever. Each approved tool is marked ``running`` just before it starts, so a
takeover can tell a tool that never started (run it) from one that may have
half-run (never run again: recovery.py). Once their results are saved the
actions leave ``settling`` and their events are numbered and written in that
same transaction; the run goes on when nothing is left, else it lets go.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warden import tracing
from warden.agents.events import EventLog, RunChannel, event_rows
from warden.agents.hooks import ToolboxLike
from warden.agents.policy import Decision
from warden.agents.registry import Agents
from warden.agents.runs.actions import Call, Emit, ToolActions, write_results
from warden.agents.runs.live import LeaseLost, LiveRuns, RunHandle
from warden.agents.runs.loop import Prelude, RunLoop
from warden.agents.tools.base import ToolContext, ToolResult
from warden.errors import Conflict, Forbidden, NotFound
from warden.gateway.types import ToolCall
from warden.store.agent_models import Agent, Run, RunEvent, ToolCallRecord
from warden.store.base import utcnow
from warden.store.db import Database
from warden.store.models import ApiKey
from warden.tenancy.accounts import Principal

Released = Callable[[str], Awaitable[None]]  # a run was let go with decisions maybe waiting on it
INTERRUPTED = ("error: the server carrying out this action stopped before it finished, so it may or may "
               "not have taken effect. It was not run again; check its effect before trying another way.")


class RunBusy(Conflict):
    """Another instance (or another decision here) is carrying out actions of this run."""

    code = "run_busy"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one settling action: run its tool, refuse it, or report it interrupted."""

    decision: Literal["approve", "reject", "interrupted"]
    note: str | None = None
    actor: str = "system"
    refusal: str | None = None


class PausedRuns:
    """Settles the decided actions of paused runs and continues each run once none is left."""

    def __init__(self, db: Database, agents: Agents, *, actions: ToolActions, loop: RunLoop, live: LiveRuns,
                 released: Released | None = None) -> None:
        self.db = db
        self.agents = agents
        self.actions = actions
        self.loop = loop
        self.live = live
        self.released = released

    async def resume(self, run_id: str, decision: Literal["approve", "reject"], *,
                     tool_call_id: str | None = None, note: str | None = None,
                     actor: str = "system", refusal: str | None = None) -> RunHandle:
        """Claim pending action(s) of a paused run and settle them in the run's task, which
        continues the run once nothing is pending.

        ``approve`` runs the tool; ``reject`` gives the model a refusal it can read
        (``refusal`` replaces the default wording, e.g. for an expired approval).
        Without ``tool_call_id`` the decision applies to every pending action.
        Raises :class:`RunBusy` while another instance holds the run.
        """
        run, chosen = await self._claim(run_id, tool_call_id)
        verdict = Verdict(decision, note, actor, refusal)
        try:
            agent = await self.agents.get(run.workspace_id, run.agent_id)
            return await self.launch(run, agent, {c: verdict for c in chosen})
        except BaseException:
            await self._unclaim(run_id, chosen)
            raise

    async def launch(self, run: Run, agent: Agent, verdicts: dict[str, Verdict]) -> RunHandle:
        """Settle ``verdicts`` (this instance owns ``run`` now) in the run's task, then go on."""
        principal = await key_principal(self.db, run)
        async with self.db.session() as s:
            last = (await s.execute(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run.id))).scalar() or 0
        events = EventLog(self.db, run.id, run.session_id, RunChannel(), last_seq=last)
        refused = None if principal is not None else Forbidden(
            "the API key that started this run was revoked; the run cannot go on", code="api_key_revoked")
        if principal is None:  # no tool of it runs: every action is refused
            verdicts = {k: v if v.decision != "approve" else Verdict(
                "reject", actor=v.actor, refusal="refused: the API key that started this run was revoked. "
                "The action was not taken.") for k, v in verdicts.items()}
        return self.loop.launch(
            agent, run, events, principal or Principal(run.workspace_id, "", run.api_key_id or "", "member"),
            run.id, first_step=int((run.resume_state or {})["step"]) + 1, refused=refused,
            prelude=self._prelude(run, agent, verdicts))

    def _prelude(self, run: Run, agent: Agent, verdicts: dict[str, Verdict]) -> Prelude:
        async def prelude(toolbox: ToolboxLike | None, events: EventLog) -> bool:
            async with self.db.session() as s:
                records = list((await s.execute(select(ToolCallRecord).where(
                    ToolCallRecord.id.in_(list(verdicts))).order_by(ToolCallRecord.started_at))).scalars())
            produced: list[tuple[str, dict[str, Any]]] = []
            calls = await self._settle(run, agent, toolbox, records, verdicts,
                                       lambda type_, data: produced.append((type_, data)))
            last_seq, go_on = await self._finish(run, list(verdicts), calls, produced)
            events.seq = last_seq - len(produced)
            for type_, data in produced:
                events.record(type_, data)  # already written with the pending-state change
            if not go_on and self.released is not None:
                await self.released(run.id)
            return go_on

        return prelude

    async def _claim(self, run_id: str, tool_call_id: str | None) -> tuple[Run, list[str]]:
        """Atomically move the chosen pending action(s) to ``settling`` and take the run's lease."""
        async with self.db.transaction() as s:
            run = await locked_paused(s, run_id)
            if lease_alive(run, utcnow()):
                raise RunBusy(f"run '{run_id}' is being carried on by {run.owner}")
            state = dict(run.resume_state or {})
            pending: list[str] = list(state.get("pending", []))
            if tool_call_id is not None and tool_call_id not in pending:
                raise NotFound(f"no pending action '{tool_call_id[:80]}' in run '{run_id}'",
                               code="action_not_found")
            chosen = [tool_call_id] if tool_call_id is not None else pending
            if not chosen:
                raise Conflict(f"run '{run_id}' has no undecided action", code="action_not_found")
            state["pending"] = [p for p in pending if p not in chosen]
            state["settling"] = [*state.get("settling", []), *chosen]
            run.resume_state = state
            run.owner, run.lease_expires_at = self.live.instance_id, self.live.config.lease_until()
        return run, chosen

    async def _unclaim(self, run_id: str, chosen: list[str]) -> None:
        async with self.db.transaction() as s:
            run = await locked_paused(s, run_id)
            state = dict(run.resume_state or {})
            state["settling"] = [x for x in state.get("settling", []) if x not in chosen]
            state["pending"] = [*state.get("pending", []), *(x for x in chosen if x not in state.get("pending", []))]
            run.resume_state = state
            run.owner = run.lease_expires_at = None

    async def _finish(self, run: Run, chosen: list[str], calls: list[Call],
                      produced: list[tuple[str, dict[str, Any]]]) -> tuple[int, bool]:
        """Save the settled actions' results, take them out of ``settling`` and write
        their events, numbered after the run's last one, all on the locked row.
        Returns (the last event number, whether the run goes on now)."""
        async with self.db.transaction() as s:
            locked = await locked_paused(s, run.id)
            if locked.owner != self.live.instance_id:
                raise LeaseLost()
            state = dict(locked.resume_state or {})
            state["settling"] = [x for x in state.get("settling", []) if x not in chosen]
            go_on = not state.get("pending") and not state["settling"]
            await write_results(s, run, calls)
            last = (await s.execute(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run.id))).scalar() or 0
            if produced:
                await s.execute(insert(RunEvent), event_rows(run.id, last, produced))
            locked.resume_state = state
            if go_on:
                locked.status, locked.heartbeat_at = "running", utcnow()
                locked.lease_expires_at = self.live.config.lease_until()
            else:
                locked.owner = locked.lease_expires_at = None
        run.resume_state = state
        return last + len(produced), go_on

    async def _settle(self, run: Run, agent: Agent, toolbox: ToolboxLike | None, records: list[ToolCallRecord],
                      verdicts: dict[str, Verdict], emit: Emit) -> list[Call]:
        """Run each approved action's tool; give each refused one its refusal, each
        interrupted one the note that it may have half-run."""
        ctx = ToolContext(agent.workspace_id, agent.id, run.id, run.session_id)
        calls: list[Call] = []
        for r in records:
            v = verdicts[r.id]
            c = Call(ToolCall(r.call_id, r.name, r.arguments), record_id=r.id, level=r.risk_level,
                     decision=Decision(r.decision, r.reason or "", r.rule or ""),
                     decided_by=None if v.decision == "interrupted" else v.actor)
            c.args = orjson.loads(r.arguments or "{}")
            tool = toolbox.tools.get(r.name) if toolbox is not None else None
            if v.decision == "approve" and tool is not None:
                await self._mark_started(r.id)
                await self.actions.run_tool(tool, c, ctx, emit)
                calls.append(c)
                continue
            if v.decision == "interrupted":
                c.status, c.result = "interrupted", ToolResult(INTERRUPTED, is_error=True)
            else:
                why = f" ({v.note})" if v.note else ""
                c.status = "rejected"
                c.result = ToolResult(v.refusal or f"refused: a human rejected this action{why}. It was not taken; "
                                      "continue without it.", is_error=True)
            if tracing.TRACER is not None:
                tracing.TRACER.tool(c).ended(c)
            emit("tool.result", {"tool_call_id": c.record_id, "call_id": c.call.id, "name": r.name,
                                 "status": c.status, "is_error": True, "content": c.result.content,
                                 "decided_by": v.actor})
            calls.append(c)
        return calls

    async def _mark_started(self, record_id: str) -> None:
        """Committed before the tool starts: from here on it may have taken effect."""
        async with self.db.transaction() as s:
            await s.execute(update(ToolCallRecord).where(ToolCallRecord.id == record_id)
                            .values(status="running", started_at=utcnow()))


async def key_principal(db: Database, run: Run) -> Principal | None:
    """The principal of the key that started ``run``, read afresh; None once it is revoked
    or gone. Read from the store, not the accounts cache, so a revocation shows at once."""
    if not run.api_key_id:
        return None
    async with db.session() as s:
        key = (await s.execute(select(ApiKey).where(
            ApiKey.id == run.api_key_id, ApiKey.workspace_id == run.workspace_id))).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        return None
    role: Literal["admin", "member"] = "admin" if key.role == "admin" else "member"
    return Principal(run.workspace_id, "", key.id, role, key.rpm_limit, key.tpm_limit, key.agent_id)


async def locked_paused(s: AsyncSession, run_id: str) -> Run:
    """The run row, locked until the transaction ends (PostgreSQL; SQLite writers queue anyway)."""
    run = (await s.execute(select(Run).where(Run.id == run_id).with_for_update()
                           .execution_options(populate_existing=True))).scalar_one_or_none()
    if run is None:
        raise NotFound(f"no run '{run_id[:80]}'", code="run_not_found")
    if run.status != "paused" or not run.resume_state:
        raise Conflict(f"run '{run_id}' is {run.status}, not paused", code="run_not_paused")
    return run


def lease_alive(run: Run, now: datetime) -> bool:
    return run.owner is not None and run.lease_expires_at is not None and run.lease_expires_at > now

"""Paused runs: settling their pending actions and continuing them.

Several actions of one run may be settled at once, here or on other
instances. Each read-modify-write of the run's pending state happens on the
locked run row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has one
writer): first the chosen actions move from ``pending`` to ``settling`` (so
no other settler takes them), then, once their results are saved, they leave
``settling`` and their events are numbered and written in that same
transaction. Whoever leaves both lists empty continues the run, after every
other action's result is in the session.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

import orjson
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from warden.agents.events import EventLog, RunChannel, event_rows
from warden.agents.hooks import ToolboxFactory, ToolboxLike
from warden.agents.registry import Agents
from warden.agents.runs.actions import Call, Emit, ToolActions, write_results
from warden.agents.runs.live import RunHandle
from warden.agents.runs.loop import RunLoop
from warden.agents.tools.base import ToolContext, ToolResult
from warden.errors import Conflict, Forbidden, NotFound
from warden.gateway.types import ToolCall
from warden.store.agent_models import Agent, Run, RunEvent, ToolCallRecord
from warden.store.base import utcnow
from warden.store.db import Database
from warden.store.models import ApiKey
from warden.tenancy.accounts import Principal


class PausedRuns:
    """Settles the pending actions of paused runs and continues each run once none is left."""

    def __init__(self, db: Database, agents: Agents, *, toolbox_factory: ToolboxFactory,
                 actions: ToolActions, loop: RunLoop) -> None:
        self.db = db
        self.agents = agents
        self.toolbox_factory = toolbox_factory
        self.actions = actions
        self.loop = loop

    async def resume(self, run_id: str, decision: Literal["approve", "reject"], *,
                     tool_call_id: str | None = None, note: str | None = None,
                     actor: str = "system", refusal: str | None = None) -> RunHandle | None:
        """Settle pending action(s) of a paused run and continue it.

        ``approve`` runs the tool; ``reject`` gives the model a refusal it can read
        (``refusal`` replaces the default wording, e.g. for an expired approval).
        Without ``tool_call_id`` the decision applies to every pending action. The run
        continues (a new task, same event numbering) once nothing is pending; returns
        its handle then, else None.
        """
        run, chosen = await self._claim(run_id, tool_call_id)
        try:
            # The run goes on as its key is now: its role and rate limits, and not at all once revoked
            # (no tool of it runs; it fails once its actions are settled).
            principal = await self._key_principal(run)
            if principal is None:
                decision, refusal = "reject", ("refused: the API key that started this run was revoked. "
                                               "The action was not taken.")
            agent = await self.agents.get(run.workspace_id, run.agent_id)
            async with self.db.session() as s:
                records = list((await s.execute(select(ToolCallRecord).where(
                    ToolCallRecord.id.in_(chosen)))).scalars())
            produced: list[tuple[str, dict[str, Any]]] = []
            toolbox = await self.toolbox_factory(agent)
            try:
                calls = await self._settle(run, agent, toolbox, records, decision, note, actor,
                                           lambda type_, data: produced.append((type_, data)), refusal)
            finally:
                await toolbox.close()
            last_seq, go_on = await self._finish(run, chosen, calls, produced)
        except BaseException:
            # Hand the actions back: the decision can be applied again (the approvals sweep does).
            with contextlib.suppress(Exception):
                await asyncio.shield(self._unclaim(run_id, chosen))
            raise
        if not go_on:
            return None
        events = EventLog(self.db, run.id, run.session_id, RunChannel(), last_seq=last_seq - len(produced))
        for type_, data in produced:
            events.record(type_, data)  # already written with the pending-state change
        run.status = "running"
        refused = None if principal is not None else Forbidden(
            "the API key that started this run was revoked; the run cannot go on", code="api_key_revoked")
        return self.loop.launch(
            agent, run, events, principal or Principal(run.workspace_id, "", run.api_key_id or "", "member"),
            run.id, first_step=int((run.resume_state or {})["step"]) + 1, refused=refused)

    async def _key_principal(self, run: Run) -> Principal | None:
        """The principal of the key that started ``run``, read afresh; None once it is revoked
        or gone. Read from the store, not the accounts cache, so a revocation shows at once."""
        if not run.api_key_id:
            return None
        async with self.db.session() as s:
            key = (await s.execute(select(ApiKey).where(
                ApiKey.id == run.api_key_id, ApiKey.workspace_id == run.workspace_id))).scalar_one_or_none()
        if key is None or key.revoked_at is not None:
            return None
        role: Literal["admin", "member"] = "admin" if key.role == "admin" else "member"
        return Principal(run.workspace_id, "", key.id, role, key.rpm_limit, key.tpm_limit)

    async def _claim(self, run_id: str, tool_call_id: str | None) -> tuple[Run, list[str]]:
        """Atomically move the chosen pending action(s) to ``settling``."""
        async with self.db.transaction() as s:
            run = await _locked_run(s, run_id)
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
        return run, chosen

    async def _unclaim(self, run_id: str, chosen: list[str]) -> None:
        async with self.db.transaction() as s:
            run = await _locked_run(s, run_id)
            state = dict(run.resume_state or {})
            state["settling"] = [x for x in state.get("settling", []) if x not in chosen]
            state["pending"] = [*state.get("pending", []), *(x for x in chosen if x not in state.get("pending", []))]
            run.resume_state = state

    async def _finish(self, run: Run, chosen: list[str], calls: list[Call],
                      produced: list[tuple[str, dict[str, Any]]]) -> tuple[int, bool]:
        """Save the settled actions' results, take them out of ``settling`` and write
        their events, numbered after the run's last one, all on the locked row.
        Returns (the last event number, whether the run goes on now)."""
        async with self.db.transaction() as s:
            locked = await _locked_run(s, run.id)
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
        run.resume_state = state
        return last + len(produced), go_on

    async def _settle(self, run: Run, agent: Agent, toolbox: ToolboxLike, records: list[ToolCallRecord],
                      decision: str, note: str | None, actor: str, emit: Emit,
                      refusal: str | None = None) -> list[Call]:
        """Run each approved action's tool; give each rejected one its refusal."""
        ctx = ToolContext(agent.workspace_id, agent.id, run.id, run.session_id)
        calls: list[Call] = []
        for r in records:
            c = Call(ToolCall(r.call_id, r.name, r.arguments), record_id=r.id, level=r.risk_level)
            c.args = orjson.loads(r.arguments or "{}")
            tool = toolbox.tools.get(r.name)
            if decision == "approve" and tool is not None:
                await self.actions.run_tool(tool, c, ctx, emit)
            else:
                why = f" ({note})" if note else ""
                c.status = "rejected"
                c.result = ToolResult(refusal or f"refused: a human rejected this action{why}. It was not taken; "
                                      "continue without it.", is_error=True)
                emit("tool.result", {"tool_call_id": c.record_id, "call_id": c.call.id, "name": r.name,
                                     "status": c.status, "is_error": True, "content": c.result.content,
                                     "decided_by": actor})
            calls.append(c)
        return calls


async def _locked_run(s: AsyncSession, run_id: str) -> Run:
    """The run row, locked until the transaction ends (PostgreSQL; SQLite writers queue anyway)."""
    run = (await s.execute(select(Run).where(Run.id == run_id).with_for_update()
                           .execution_options(populate_existing=True))).scalar_one_or_none()
    if run is None:
        raise NotFound(f"no run '{run_id[:80]}'", code="run_not_found")
    if run.status != "paused" or not run.resume_state:
        raise Conflict(f"run '{run_id}' is {run.status}, not paused", code="run_not_paused")
    return run

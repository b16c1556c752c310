"""The run loop: one run is one agent turn.

model call (through the gateway, in-process, streamed) -> tool calls, each
judged (allow / approve / deny) -> allowed tools run in parallel with a timeout
-> results back to the model -> until a final answer or ``max_steps``.
Everything a run does is persisted as it happens: its messages (in the
session), its steps, tool calls and events, so a run can be replayed, followed
from another connection, resumed after an approval (even after a restart: the
loop rebuilds its state from the database) and explained.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warden import tracing
from warden.agents.events import EventLog, RunChannel
from warden.agents.hooks import PolicySource, RunHooks, ToolboxFactory, ToolboxLike
from warden.agents.registry import Agents, default_agent_ref, require_bound_agent, require_hosted
from warden.agents.runs.actions import Paused, ToolActions
from warden.agents.runs.live import LeaseLost, LiveRuns, RunHandle
from warden.agents.runs.outcome import RunOutcome, error_body, sum_steps, usage_dict
from warden.agents.sessions import (
    NewMessage,
    Sessions,
    estimate_message_tokens,
    to_model_messages,
    window,
)
from warden.errors import Conflict, ValidationFailed, WardenError
from warden.gateway.context import CallContext, RouteOptions
from warden.gateway.gateway import Gateway
from warden.gateway.types import (
    ChatRequest,
    ErrorEvent,
    FinishEvent,
    Message,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from warden.store.agent_models import Agent, Run, ToolCallRecord
from warden.store.base import new_id, utcnow
from warden.store.db import Database
from warden.store.models import SpendRow
from warden.tenancy.accounts import Principal

log = logging.getLogger("warden.agents")

MAX_MESSAGE_CHARS = 100_000
UNKNOWN_CONTEXT_TOKENS = 32_768  # a model whose window nobody knows (local models): stay modest
MAX_OUTPUT_RESERVE = 4_096
ACTIVE = ("running", "paused")
# Runs before the loop goes on: settles decided actions (paused.py, recovery.py) with the
# run's toolbox (None when the run is refused anyway); False when the run still waits.
Prelude = Callable[[ToolboxLike | None, EventLog], Awaitable[bool]]
_REQUEST_ID_WIDTH = SpendRow.__table__.c.request_id.type.length  # each model call's id is stored there


def step_request_id(request_id: str, run_id: str, step: int) -> str:
    """``<request id>:<step>``, within the spend table's column: a caller's long request id
    keeps its head and gets a short hash of the whole in place of its tail."""
    base, suffix = request_id or run_id, f":{step}"
    room = _REQUEST_ID_WIDTH - len(suffix)
    if len(base) > room:
        base = f"{base[:room - 13]}~{hashlib.sha256(base.encode()).hexdigest()[:12]}"
    return base + suffix


def check_message(text: str) -> str:
    if not text or not text.strip():
        raise ValidationFailed("message: must not be empty", param="message")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValidationFailed(f"message: longer than {MAX_MESSAGE_CHARS} characters", param="message")
    return text


class RunLoop:
    """Starts a turn and executes runs, step by step, to their end or a pause."""

    def __init__(self, db: Database, gateway: Gateway, agents: Agents, sessions: Sessions, *,
                 toolbox_factory: ToolboxFactory, policy_source: PolicySource, hooks: RunHooks,
                 live: LiveRuns, actions: ToolActions) -> None:
        self.db = db
        self.gateway = gateway
        self.agents = agents
        self.sessions = sessions
        self.toolbox_factory = toolbox_factory
        self.policy_source = policy_source
        self.hooks = hooks
        self.live = live
        self.actions = actions

    async def start(self, principal: Principal, message: str, *, agent_ref: str | None = None,
                    session_id: str | None = None, request_id: str = "") -> RunHandle:
        """Record the user's message and a new run, then execute the run as its own task."""
        check_message(message)
        if session_id is not None:
            session = await self.sessions.get(principal, session_id)
            agent = await self.agents.get(principal.workspace_id, session.agent_id)
            require_bound_agent(principal, agent)
            require_hosted(agent)
            if agent_ref is not None and agent_ref not in (agent.id, agent.name):
                raise ValidationFailed("agent_id: the session belongs to another agent", param="agent_id")
        else:
            agent = await self.agents.get(principal.workspace_id, default_agent_ref(principal, agent_ref))
            session = await self.sessions.create(principal, agent.id)  # refuses another agent of a bound key
        run = Run(id=new_id("run"), workspace_id=principal.workspace_id, session_id=session.id,
                  agent_id=agent.id, api_key_id=principal.key_id, status="running", steps=[],
                  owner=self.live.instance_id, lease_expires_at=self.live.config.lease_until())

        async with self.db.transaction() as s:
            busy = (await s.execute(select(Run.id, Run.status).where(
                Run.session_id == session.id, Run.status.in_(ACTIVE)))).first()
            if busy is not None:
                raise Conflict(f"the session already has a {busy.status} run ({busy.id})", code="session_busy")
            s.add(run)
            rows = await Sessions.append(s, session.id, [NewMessage("user", message, run_id=run.id)])
            run.user_message_id = rows[0].id
        events = EventLog(self.db, run.id, session.id, RunChannel())
        events.emit("run.started", {"agent_id": agent.id, "agent": agent.name,
                                    "user_message_id": run.user_message_id})
        return self.launch(agent, run, events, principal, request_id, first_step=1)

    def launch(self, agent: Agent, run: Run, events: EventLog, principal: Principal, request_id: str, *,
               first_step: int, refused: WardenError | None = None, prelude: Prelude | None = None) -> RunHandle:
        """Execute ``run`` from ``first_step`` as its own task, known to this process while it runs.
        The run's row must name this instance as its owner (a fresh lease)."""
        execute = self._execute(agent, run, events, principal, request_id, first_step=first_step,
                                refused=refused, prelude=prelude)
        if tracing.TRACER is not None:  # the run's span, current in its task
            execute = tracing.TRACER.run(agent, run, execute, first_step=first_step)
        task = asyncio.create_task(execute, name=f"run-{run.id}")
        return self.live.add(RunHandle(run.id, run.session_id, events.channel, task))

    async def _execute(self, agent: Agent, run: Run, events: EventLog, principal: Principal,
                       request_id: str, *, first_step: int, refused: WardenError | None,
                       prelude: Prelude | None) -> RunOutcome:
        """The loop; ``refused`` fails the run before anything runs (e.g. its key was revoked).
        Whatever stops a run before its first model call (its toolbox cannot be built here,
        e.g. an MCP command this server does not allow) ends it ``failed`` with that error."""
        outcome = RunOutcome(run.id, run.session_id, "running")
        steps: list[dict[str, Any]] = list(run.steps or [])
        partial: list[str] = []
        toolbox: ToolboxLike | None = None
        try:
            await events.flush()
            if refused is None:
                toolbox = await self.toolbox_factory(agent)
            if prelude is not None and not await prelude(toolbox, events):
                outcome.status = "paused"  # other actions of the run still wait for a human
                return outcome
            if refused is not None:
                raise refused
            assert toolbox is not None
            policy = await self.policy_source(agent.workspace_id)
            for step in range(first_step, agent.max_steps + 1):
                partial = []
                calls, text, info = await self._model_call(agent, run, events, principal, request_id,
                                                           toolbox, step, partial)
                steps.append(info)
                await self._save_steps(run.id, steps, info)
                if not calls:
                    return await self._end(run, events, "completed", steps, text, None, outcome)
                await self.actions.take(agent, run, events, toolbox, policy, step, calls, text)
            raise WardenError(f"the agent reached its limit of {agent.max_steps} steps without a final answer",
                              code="max_steps_exceeded", status=422)
        except Paused:
            outcome.status = "paused"
            return outcome
        except LeaseLost:
            outcome.status = "lost"
            return outcome
        except asyncio.CancelledError:
            if self.live.is_lost(run.id):  # cancelled elsewhere, or taken over: not ours to end
                outcome.status = "lost"
                return outcome
            with contextlib.suppress(Exception):
                await asyncio.shield(self._end(run, events, "cancelled", steps, "".join(partial), None, outcome))
            return outcome
        except Exception as exc:
            if not isinstance(exc, WardenError):
                log.error("run %s failed", run.id, exc_info=exc)
            with contextlib.suppress(LeaseLost):
                await self._end(run, events, "failed", steps, "".join(partial), error_body(exc), outcome)
            return outcome
        finally:
            if toolbox is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(toolbox.close())
            events.channel.close()
            self.live.drop(run.id)

    async def _model_call(self, agent: Agent, run: Run, events: EventLog, principal: Principal,
                          request_id: str, toolbox: ToolboxLike, step: int,
                          partial: list[str]) -> tuple[list[ToolCall], str, dict[str, Any]]:
        ctx = CallContext(workspace_id=agent.workspace_id, api_key_id=principal.key_id,
                          key_rpm_limit=principal.rpm_limit, key_tpm_limit=principal.tpm_limit,
                          request_id=step_request_id(request_id, run.id, step), agent_id=agent.id,
                          options=RouteOptions(fallbacks=list((agent.model_policy or {}).get("fallbacks", []))))
        req, complexity = await self._request(agent, run.session_id, toolbox, ctx)
        stream = await self.gateway.open_stream(req, ctx)
        pieces: dict[int, ToolCall] = {}
        finish = "stop"
        try:
            async for ev in stream:
                if isinstance(ev, TextDelta):
                    partial.append(ev.text)
                    events.emit("message.delta", {"text": ev.text})
                    if events.needs_flush:
                        await events.flush()
                elif isinstance(ev, ToolCallDelta):
                    call = pieces.get(ev.index)
                    if call is None:
                        call = pieces[ev.index] = ToolCall(id=ev.id or "", name=ev.name or "", arguments="")
                    call.id = call.id or ev.id or ""
                    call.name = call.name or ev.name or ""
                    call.arguments += ev.arguments
                elif isinstance(ev, FinishEvent):
                    finish = ev.reason
                elif isinstance(ev, ErrorEvent):
                    raise ev.error
                # a UsageEvent needs nothing here: the stream keeps the usage in its info
        finally:
            await stream.aclose()
        info = stream.info
        calls = [ToolCall(id=c.id or f"call_{i}", name=c.name, arguments=c.arguments or "{}")
                 for i, c in sorted(pieces.items())]
        return calls, "".join(partial), {
            "step": step, "provider": info.provider, "model": info.model, "attempts": info.attempts,
            "usage": usage_dict(info.usage),
            "cost_usd": None if info.cost_usd is None else format(info.cost_usd, "f"),
            "finish_reason": finish, "tool_calls": len(calls), "complexity": complexity,
        }

    async def _request(self, agent: Agent, session_id: str, toolbox: ToolboxLike,
                       ctx: CallContext) -> tuple[ChatRequest, str]:
        """The model request of a step: as much of the session's history as fits the window."""
        specs = toolbox.specs()
        system = [Message.text("system", agent.instructions)] if agent.instructions else []
        history = to_model_messages(await self.sessions.history(session_id))
        model = (agent.model_policy or {}).get("model") or "auto"
        # Plan with the newest turn only, to learn which models may serve it and so
        # how much history fits the smallest of their windows (failover may use any).
        newest = window(history, 0)
        probe = ChatRequest(model=model, messages=system + newest, tools=specs, temperature=agent.temperature)
        plan = await self.gateway.plan(probe, ctx)
        windows = [s.deployment.info.context_window for s in plan.steps]
        context = min((w for w in windows if w), default=UNKNOWN_CONTEXT_TOKENS)
        reserve = min(MAX_OUTPUT_RESERVE, context // 4)
        fixed = plan.needs.input_tokens - sum(estimate_message_tokens(m) for m in newest)
        budget = max(context - reserve - fixed, 0)
        return ChatRequest(model=model, messages=system + window(history, budget), tools=specs,
                           temperature=agent.temperature), plan.complexity.level

    async def _save_steps(self, run_id: str, steps: list[dict[str, Any]], info: dict[str, Any]) -> None:
        async with self.db.transaction() as s:
            moved = await s.execute(update(Run).where(Run.id == run_id, Run.owner == self.live.instance_id).values(
                steps=list(steps), provider=info["provider"], model=info["model"], heartbeat_at=utcnow(),
                lease_expires_at=self.live.config.lease_until()))
            if moved.rowcount != 1:
                raise LeaseLost()

    async def _end(self, run: Run, events: EventLog, status: str, steps: list[dict[str, Any]], text: str,
                   error: dict[str, Any] | None, outcome: RunOutcome) -> RunOutcome:
        """Record the run's final status, its last text and totals, and tell the followers."""
        self.live.mark_ending(run.id)
        usage, cost = sum_steps(steps)
        last = steps[-1] if steps else {}
        outcome.status, outcome.error = status, error
        outcome.usage, outcome.cost_usd = usage_dict(usage), None if cost is None else format(cost, "f")
        outcome.provider, outcome.model = last.get("provider"), last.get("model")

        async def end(s: AsyncSession) -> None:
            # Only while the run is still this instance's (not cancelled or taken over meanwhile).
            moved = await s.execute(update(Run).where(Run.id == run.id, Run.owner == self.live.instance_id).values(
                status=status, steps=list(steps), error=error, usage=outcome.usage, cost_usd=cost,
                provider=outcome.provider, model=outcome.model, ended_at=utcnow(), heartbeat_at=utcnow(),
                resume_state=None, owner=None, lease_expires_at=None))
            if moved.rowcount != 1:
                raise LeaseLost()
            if text or status == "completed":
                rows = await Sessions.append(s, run.session_id, [NewMessage(
                    "assistant", text, run_id=run.id, tokens=(last.get("usage") or {}).get("output_tokens"))])
                outcome.message = {"id": rows[0].id, "role": "assistant", "content": text}
            if status != "completed":
                await s.execute(update(ToolCallRecord).where(
                    ToolCallRecord.run_id == run.id, ToolCallRecord.status.in_(("running", "pending_approval"))
                ).values(status="cancelled", ended_at=utcnow()))
            await self.hooks.ended(s, run, status)

        await self.db.run_tx(end)
        summary = {"usage": outcome.usage, "cost_usd": outcome.cost_usd, "provider": outcome.provider,
                   "model": outcome.model, "message": outcome.message}
        if status == "completed":
            events.emit("run.completed", summary)
        elif status == "failed":
            events.emit("run.failed", {"error": error, **summary})
        else:
            events.emit("run.cancelled", summary)
        await events.flush()
        return outcome

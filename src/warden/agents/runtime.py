"""The agent runtime: one run is one agent turn.

model call (through the gateway, in-process, streamed) -> tool calls, each
decided by governance (allow / approve / deny) -> allowed tools run in parallel
with a timeout -> results back to the model -> until a final answer or
``max_steps``. Everything a run does is persisted as it happens: its messages
(in the session), its steps, tool calls and events, so a run can be replayed,
followed from another connection, resumed after an approval (even after a
restart: the loop rebuilds its state from the database) and explained.

A run executes as its own task, not inside the HTTP request, so a paused run
holds no worker and followers can come and go. The client that started a
streamed turn owns it: when that client leaves a non-paused run, the run is
cancelled (upstream call closed, partial text kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

import orjson
from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warden.tenancy.accounts import Principal
from warden.agents.events import STOPS_STREAM, TERMINAL, EventLog, RunChannel, event_rows, from_row
from warden.agents.registry import Agents
from warden.agents.sessions import (
    NewMessage,
    Sessions,
    estimate_message_tokens,
    to_model_messages,
    window,
)
from warden.agents.tools.base import Tool, ToolContext, ToolResult, cap_text
from warden.errors import Conflict, Forbidden, NotFound, ValidationFailed, WardenError
from warden.gateway.gateway import Gateway
from warden.gateway.context import CallContext
from warden.gateway.context import RouteOptions
from warden.gateway.types import (
    ChatRequest,
    ErrorEvent,
    FinishEvent,
    Message,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageEvent,
)
from warden.agents.policy import Decision, WorkspacePolicy, decide
from warden.store.agent_models import Agent, ChatSession, Run, RunEvent, ToolCallRecord
from warden.store.db import Database
from warden.store.models import ApiKey, SpendRow
from warden.store.base import new_id, utcnow

log = logging.getLogger("warden.agents")

MAX_MESSAGE_CHARS = 100_000
UNKNOWN_CONTEXT_TOKENS = 32_768  # a model whose window nobody knows (local models): stay modest
MAX_OUTPUT_RESERVE = 4_096
ACTIVE = ("running", "paused")
_REQUEST_ID_WIDTH = SpendRow.__table__.c.request_id.type.length  # each model call's id is stored there


def step_request_id(request_id: str, run_id: str, step: int) -> str:
    """``<request id>:<step>``, within the spend table's column: a caller's long request id
    keeps its head and gets a short hash of the whole in place of its tail."""
    base, suffix = request_id or run_id, f":{step}"
    room = _REQUEST_ID_WIDTH - len(suffix)
    if len(base) > room:
        base = f"{base[:room - 13]}~{hashlib.sha256(base.encode()).hexdigest()[:12]}"
    return base + suffix


# --- what the runtime needs from its surroundings ----------------------------


class ToolboxLike(Protocol):
    tools: dict[str, Tool]

    def specs(self) -> list[ToolSpec]: ...

    async def close(self) -> None: ...


ToolboxFactory = Callable[[Agent], Awaitable[ToolboxLike]]
PolicySource = Callable[[str], Awaitable[WorkspacePolicy | None]]
Emit = Callable[[str, dict[str, Any]], Any]  # (event type, data): publish an event of the run


async def _no_policy(_: str) -> WorkspacePolicy | None:
    return None


@dataclass(frozen=True, slots=True)
class Action:
    """One governed tool call as the governance hooks see it."""

    tool_call_id: str
    call_id: str
    name: str
    arguments: str
    level: int | None
    decision: str
    reason: str | None
    rule: str | None
    step: int


class RunHooks:
    """Where governance joins a run. Each hook runs inside the transaction that
    records the moment (so its rows and audit events commit or roll back with
    it, and the transaction is retried as a whole if the audit chain moved).
    The defaults do nothing."""

    async def decided(self, s: AsyncSession, run: Run, agent: Agent, actions: list[Action]) -> None:
        """Tool calls of a step were judged (allow / approve / deny)."""

    async def paused(self, s: AsyncSession, run: Run, agent: Agent, pending: list[Action]) -> None:
        """The run stops here until a human settles ``pending``."""

    async def ended(self, s: AsyncSession, run: Run, status: str) -> None:
        """The run reached a final status (completed, failed or cancelled)."""


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    tool_timeout_s: float = 30.0
    heartbeat_s: float = 10.0
    stale_after_s: float = 60.0  # a running run whose heartbeat is older is abandoned
    sweep_every_s: float = 30.0
    # An SSE stream of a run sends a comment this often when it has nothing else to
    # send (a paused or quiet run), so proxies do not cut the idle connection.
    keepalive_s: float = 15.0


# --- results -------------------------------------------------------------------


@dataclass(slots=True)
class RunOutcome:
    run_id: str
    session_id: str
    status: str
    message: dict[str, Any] | None = None  # the final assistant message {id, role, content}
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: str | None = None
    provider: str | None = None
    model: str | None = None
    error: dict[str, Any] | None = None


@dataclass(slots=True)
class RunHandle:
    run_id: str
    session_id: str
    channel: RunChannel
    task: asyncio.Task[RunOutcome]


@dataclass(slots=True)
class _Live:
    channel: RunChannel
    task: asyncio.Task[RunOutcome] | None = None
    cancellable: bool = True


@dataclass(slots=True)
class _Call:
    """One tool call of a step, from the model's request to its result."""

    call: ToolCall
    record_id: str = field(default_factory=lambda: new_id("tc"))
    level: int | None = None
    decision: Decision | None = None
    args: dict[str, Any] | None = None
    result: ToolResult | None = None
    status: str = "pending"


class _Paused(Exception):
    """Raised inside the loop when a step needs a human before it can go on."""


def _add_usage(total: Usage, u: Usage) -> None:
    total.input_tokens += u.input_tokens
    total.output_tokens += u.output_tokens
    total.cache_read_tokens += u.cache_read_tokens
    total.cache_write_tokens += u.cache_write_tokens
    total.reasoning_tokens += u.reasoning_tokens


def _usage_dict(u: Usage) -> dict[str, int]:
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "cache_read_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens,
            "reasoning_tokens": u.reasoning_tokens, "total_tokens": u.total_tokens}


def _error_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, WardenError):
        return {"type": exc.type, "code": exc.code, "message": exc.message, "status": exc.status}
    return {"type": "server_error", "code": "internal_error", "message": "internal error during the run",
            "status": 500}


def check_message(text: str) -> str:
    if not text or not text.strip():
        raise ValidationFailed("message: must not be empty", param="message")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValidationFailed(f"message: longer than {MAX_MESSAGE_CHARS} characters", param="message")
    return text


class Runs:
    """Starts, executes, follows, cancels and resumes runs; sweeps abandoned ones."""

    def __init__(self, db: Database, gateway: Gateway, agents: Agents, sessions: Sessions, *,
                 toolbox_factory: ToolboxFactory, policy_source: PolicySource = _no_policy,
                 config: RuntimeConfig | None = None, hooks: RunHooks | None = None) -> None:
        self.db = db
        self.gateway = gateway
        self.agents = agents
        self.sessions = sessions
        self.toolbox_factory = toolbox_factory
        self.policy_source = policy_source
        self.config = config or RuntimeConfig()
        self.hooks = hooks or RunHooks()
        self._live: dict[str, _Live] = {}
        self._background: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------

    async def start_background(self) -> None:
        """Sweep abandoned runs now, then keep heartbeats and sweeps going."""
        await self.sweep_stale()
        self._background = asyncio.create_task(self._maintain(), name="warden-runs-maintenance")

    async def _maintain(self) -> None:
        since_sweep = 0.0
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            since_sweep += self.config.heartbeat_s
            try:
                await self._beat()
                if since_sweep >= self.config.sweep_every_s:
                    since_sweep = 0.0
                    await self.sweep_stale()
            except Exception:  # the database may be briefly away; try again next beat
                log.warning("run maintenance failed", exc_info=True)

    async def _beat(self) -> None:
        ids = [rid for rid, live in self._live.items() if live.task is not None and not live.task.done()]
        if ids:
            async with self.db.transaction() as s:
                await s.execute(update(Run).where(Run.id.in_(ids), Run.status == "running")
                                .values(heartbeat_at=utcnow()))

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        for run_id in list(self._live):
            await self.cancel(run_id)

    async def sweep_stale(self) -> int:
        """Mark runs left ``running`` by a process that died (stale heartbeat) as failed."""
        cutoff = utcnow() - timedelta(seconds=self.config.stale_after_s)
        async with self.db.session() as s:
            stale = list((await s.execute(select(Run).where(
                Run.status == "running", Run.heartbeat_at < cutoff))).scalars())
        count = 0
        for run in stale:
            if run.id in self._live:
                continue
            error = {"type": "server_error", "code": "run_abandoned", "status": 500,
                     "message": "the server executing this run stopped before it finished"}
            async with self.db.transaction() as s:
                moved = await s.execute(update(Run).where(Run.id == run.id, Run.status == "running")
                                        .values(status="failed", error=error, ended_at=utcnow()))
                if moved.rowcount != 1:
                    continue  # finished or taken over meanwhile
                await s.execute(update(ToolCallRecord).where(
                    ToolCallRecord.run_id == run.id, ToolCallRecord.status == "running"
                ).values(status="cancelled", ended_at=utcnow()))
                seq = (await s.execute(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run.id))).scalar()
                s.add(RunEvent(run_id=run.id, seq=(seq or 0) + 1, type="run.failed", data={"error": error}))
            count += 1
        if count:
            log.warning("marked %d abandoned run(s) as failed", count)
        return count

    # --- starting a turn ------------------------------------------------------------

    async def start(self, principal: Principal, message: str, *, agent_ref: str | None = None,
                    session_id: str | None = None, request_id: str = "") -> RunHandle:
        """Record the user's message and a new run, then execute the run as its own task."""
        check_message(message)
        if session_id is not None:
            session = await self.sessions.get(principal, session_id)
            agent = await self.agents.get(principal.workspace_id, session.agent_id)
            if agent_ref is not None and agent_ref not in (agent.id, agent.name):
                raise ValidationFailed("agent_id: the session belongs to another agent", param="agent_id")
        else:
            agent = await self.agents.get(principal.workspace_id, agent_ref or "assistant")
            session = await self.sessions.create(principal, agent.id)
        run = Run(id=new_id("run"), workspace_id=principal.workspace_id, session_id=session.id,
                  agent_id=agent.id, api_key_id=principal.key_id, status="running", steps=[])

        async def tx(s: AsyncSession) -> None:
            busy = (await s.execute(select(Run.id, Run.status).where(
                Run.session_id == session.id, Run.status.in_(ACTIVE)))).first()
            if busy is not None:
                raise Conflict(f"the session already has a {busy.status} run ({busy.id})", code="session_busy")
            s.add(run)
            rows = await Sessions.append(s, session.id, [NewMessage("user", message, run_id=run.id)])
            run.user_message_id = rows[0].id

        async with self.db.transaction() as s:
            await tx(s)
        channel = RunChannel()
        events = EventLog(self.db, run.id, session.id, channel)
        events.emit("run.started", {"agent_id": agent.id, "agent": agent.name,
                                    "user_message_id": run.user_message_id})
        task = asyncio.create_task(self._execute(agent, run, events, principal, request_id, first_step=1),
                                   name=f"run-{run.id}")
        self._live[run.id] = _Live(channel, task)
        return RunHandle(run.id, session.id, channel, task)

    async def wait(self, handle: RunHandle) -> RunOutcome:
        return await asyncio.shield(handle.task)

    # --- the loop ---------------------------------------------------------------------

    async def _execute(self, agent: Agent, run: Run, events: EventLog, principal: Principal,
                       request_id: str, *, first_step: int, refused: WardenError | None = None) -> RunOutcome:
        """The loop; ``refused`` fails the run before anything runs (e.g. its key was revoked)."""
        outcome = RunOutcome(run.id, run.session_id, "running")
        steps: list[dict[str, Any]] = list(run.steps or [])
        partial: list[str] = []
        toolbox: ToolboxLike | None = None
        try:
            await events.flush()
            if refused is not None:
                raise refused
            toolbox = await self.toolbox_factory(agent)
            policy = await self.policy_source(agent.workspace_id)
            for step in range(first_step, agent.max_steps + 1):
                partial = []
                calls, text, info = await self._model_call(agent, run, events, principal, request_id,
                                                           toolbox, step, partial)
                steps.append(info)
                await self._save_steps(run.id, steps, info)
                if not calls:
                    return await self._complete(run, events, text, steps, outcome)
                await self._act(agent, run, events, toolbox, policy, step, calls, text)
            raise WardenError(f"the agent reached its limit of {agent.max_steps} steps without a final answer",
                              code="max_steps_exceeded", status=422)
        except _Paused:
            outcome.status = "paused"
            return outcome
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._end(run, events, "cancelled", steps, "".join(partial), None, outcome))
            return outcome
        except Exception as exc:
            if not isinstance(exc, WardenError):
                log.error("run %s failed", run.id, exc_info=exc)
            await self._end(run, events, "failed", steps, "".join(partial), _error_dict(exc), outcome)
            return outcome
        finally:
            if toolbox is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(toolbox.close())
            events.channel.close()
            self._live.pop(run.id, None)

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
                elif isinstance(ev, UsageEvent):
                    pass  # the stream keeps the usage in its info
        finally:
            await stream.aclose()
        info = stream.info
        calls = [self._normalise_call(c, i) for i, c in sorted(pieces.items())]
        return calls, "".join(partial), {
            "step": step, "provider": info.provider, "model": info.model, "attempts": info.attempts,
            "usage": _usage_dict(info.usage),
            "cost_usd": None if info.cost_usd is None else format(info.cost_usd, "f"),
            "finish_reason": finish, "tool_calls": len(calls), "complexity": complexity,
        }

    @staticmethod
    def _normalise_call(call: ToolCall, index: int) -> ToolCall:
        return ToolCall(id=call.id or f"call_{index}", name=call.name, arguments=call.arguments or "{}")

    async def _request(self, agent: Agent, session_id: str, toolbox: ToolboxLike,
                       ctx: CallContext) -> tuple[ChatRequest, str]:
        specs = toolbox.specs()
        system = [Message.text("system", agent.instructions)] if agent.instructions else []
        history = to_model_messages(await self.sessions.history(session_id))
        model = (agent.model_policy or {}).get("model") or "auto"
        # Plan with the newest turn only, to learn which models may serve it and so
        # how much history fits the smallest of their windows (failover may use any).
        newest = window(history, 0)
        probe = ChatRequest(model=model, messages=system + newest, tools=specs, temperature=agent.temperature)
        plan, _ = await self.gateway.plan(probe, ctx)
        windows = [s.deployment.info.context_window for s in plan.steps]
        context = min((w for w in windows if w), default=UNKNOWN_CONTEXT_TOKENS)
        reserve = min(MAX_OUTPUT_RESERVE, context // 4)
        fixed = plan.needs.input_tokens - sum(estimate_message_tokens(m) for m in newest)
        budget = max(context - reserve - fixed, 0)
        return ChatRequest(model=model, messages=system + window(history, budget), tools=specs,
                           temperature=agent.temperature), plan.complexity.level

    async def _save_steps(self, run_id: str, steps: list[dict[str, Any]], info: dict[str, Any]) -> None:
        async with self.db.transaction() as s:
            await s.execute(update(Run).where(Run.id == run_id).values(
                steps=list(steps), provider=info["provider"], model=info["model"], heartbeat_at=utcnow()))

    # --- tools ------------------------------------------------------------------------

    async def _act(self, agent: Agent, run: Run, events: EventLog, toolbox: ToolboxLike,
                   policy: WorkspacePolicy | None, step: int, tool_calls: list[ToolCall], text: str) -> None:
        calls = [_Call(c) for c in tool_calls]
        for c in calls:
            self._judge(agent, toolbox, policy, c)
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
                s.add(self._record(run, step, c))
            await self.hooks.decided(s, run, agent, [_action(c, step) for c in calls])

        await self.db.run_tx(record)
        await events.flush()

        ctx = ToolContext(agent.workspace_id, agent.id, run.id, run.session_id)
        runnable = [c for c in calls if c.status == "running"]
        await asyncio.gather(*(self._run_tool(toolbox.tools[c.call.name], c, ctx, events.emit) for c in runnable))
        await self._save_results(run, [c for c in calls if c.result is not None])
        await events.flush()
        pending = [c for c in calls if c.status == "pending_approval"]
        if pending:
            await self._pause(run, agent, events, step, pending)

    def _judge(self, agent: Agent, toolbox: ToolboxLike, policy: WorkspacePolicy | None, c: _Call) -> None:
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

    @staticmethod
    def _record(run: Run, step: int, c: _Call) -> ToolCallRecord:
        d = c.decision
        return ToolCallRecord(
            id=c.record_id, run_id=run.id, workspace_id=run.workspace_id, step=step, call_id=c.call.id,
            name=c.call.name[:128], arguments=c.call.arguments, risk_level=c.level,
            decision=d.outcome if d else "deny", reason=d.reason if d else None, rule=d.rule if d else None,
            status=c.status, result=c.result.content if c.result else None,
            is_error=bool(c.result and c.result.is_error),
            ended_at=utcnow() if c.status in ("failed", "denied") else None)

    async def _run_tool(self, tool: Tool, c: _Call, ctx: ToolContext, emit: Emit) -> None:
        timeout = self.config.tool_timeout_s
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
        emit("tool.result", {"tool_call_id": c.record_id, "call_id": c.call.id, "name": tool.name,
                             "status": c.status, "is_error": c.result.is_error, "content": c.result.content})

    async def _save_results(self, run: Run, calls: Sequence[_Call]) -> None:
        if not calls:
            return
        async with self.db.transaction() as s:
            await self._write_results(s, run, calls)

    @staticmethod
    async def _write_results(s: AsyncSession, run: Run, calls: Sequence[_Call]) -> None:
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

    async def _pause(self, run: Run, agent: Agent, events: EventLog, step: int, pending: list[_Call]) -> None:
        for c in pending:
            assert c.decision is not None
            events.emit("approval.required", {
                "tool_call_id": c.record_id, "call_id": c.call.id, "name": c.call.name, "arguments": c.args,
                "risk_level": c.level, "reason": c.decision.reason, "rule": c.decision.rule})
        async def pause(s: AsyncSession) -> None:
            await s.execute(update(Run).where(Run.id == run.id).values(
                status="paused", resume_state={"step": step, "pending": [c.record_id for c in pending]}))
            await self.hooks.paused(s, run, agent, [_action(c, step) for c in pending])

        await self.db.run_tx(pause)
        events.emit("run.paused", {"pending": [c.record_id for c in pending]})
        await events.flush()
        live = self._live.get(run.id)
        if live is not None:
            live.cancellable = False
        raise _Paused()

    # --- endings ------------------------------------------------------------------------

    async def _complete(self, run: Run, events: EventLog, text: str, steps: list[dict[str, Any]],
                        outcome: RunOutcome) -> RunOutcome:
        return await self._end(run, events, "completed", steps, text, None, outcome)

    async def _end(self, run: Run, events: EventLog, status: str, steps: list[dict[str, Any]], text: str,
                   error: dict[str, Any] | None, outcome: RunOutcome) -> RunOutcome:
        usage, cost = Usage(), Decimal(0)
        cost_known = bool(steps)
        for st in steps:
            u = st["usage"]
            _add_usage(usage, Usage(u["input_tokens"], u["output_tokens"], u["cache_read_tokens"],
                                    u["cache_write_tokens"], u["reasoning_tokens"]))
            if st["cost_usd"] is None:
                cost_known = False
            else:
                cost += Decimal(st["cost_usd"])
        last = steps[-1] if steps else {}
        outcome.status, outcome.error = status, error
        outcome.usage, outcome.cost_usd = _usage_dict(usage), format(cost, "f") if cost_known else None
        outcome.provider, outcome.model = last.get("provider"), last.get("model")
        async def end(s: AsyncSession) -> None:
            if text or status == "completed":
                rows = await Sessions.append(s, run.session_id, [NewMessage(
                    "assistant", text, run_id=run.id, tokens=(last.get("usage") or {}).get("output_tokens"))])
                outcome.message = {"id": rows[0].id, "role": "assistant", "content": text}
            if status != "completed":
                await s.execute(update(ToolCallRecord).where(
                    ToolCallRecord.run_id == run.id, ToolCallRecord.status.in_(("running", "pending_approval"))
                ).values(status="cancelled", ended_at=utcnow()))
            await s.execute(update(Run).where(Run.id == run.id).values(
                status=status, steps=list(steps), error=error, usage=outcome.usage,
                cost_usd=cost if cost_known else None, provider=outcome.provider, model=outcome.model,
                ended_at=utcnow(), heartbeat_at=utcnow(), resume_state=None))
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

    # --- control ----------------------------------------------------------------------

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run executing in this process (not a paused one). True if it was cancelled."""
        live = self._live.get(run_id)
        if live is None or live.task is None or live.task.done() or not live.cancellable:
            return False
        live.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(live.task)
        return True

    async def delete_session(self, principal: Principal, session_id: str) -> ChatSession:
        """Delete a session (its messages and runs); a run executing in it is cancelled first."""
        session = await self.sessions.get(principal, session_id)
        for run_id, live in list(self._live.items()):
            if live.channel.history and live.channel.history[0]["session_id"] == session.id:
                live.cancellable = True
                await self.cancel(run_id)
        return await self.sessions.delete(principal, session.id)

    async def abandon(self, run_id: str) -> None:
        """The client that owns a streamed turn went away: cancel unless the run waits for a human."""
        await self.cancel(run_id)

    async def resume_run(self, run_id: str, decision: Literal["approve", "reject"], *,
                         tool_call_id: str | None = None, note: str | None = None,
                         actor: str = "system", refusal: str | None = None) -> RunHandle | None:
        """Seam for approvals: settle pending action(s) of a paused run and continue it.

        ``approve`` runs the tool; ``reject`` gives the model a refusal it can read
        (``refusal`` replaces the default wording, e.g. for an expired approval).
        Without ``tool_call_id`` the decision applies to every pending action. The run
        continues (a new task, same event numbering) once nothing is pending; returns
        its handle then, else None.

        Several actions of one run may be settled at once, here or on other
        instances. Each read-modify-write of the run's pending state happens on the
        locked run row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has one
        writer): first the chosen actions move from ``pending`` to ``settling``
        (so no other settler takes them), then, once their results are saved,
        they leave ``settling`` and their events are numbered and written in that
        same transaction. Whoever leaves both lists empty continues the run, after
        every other action's result is in the session.
        """
        run, chosen = await self._claim_actions(run_id, tool_call_id)
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
            last_seq, go_on = await self._finish_actions(run, chosen, calls, produced)
        except BaseException:
            # Hand the actions back: the decision can be applied again (the approvals sweep does).
            with contextlib.suppress(Exception):
                await asyncio.shield(self._unclaim_actions(run_id, chosen))
            raise
        if not go_on:
            return None
        channel = RunChannel()
        events = EventLog(self.db, run.id, run.session_id, channel, last_seq=last_seq - len(produced))
        for type_, data in produced:
            events.record(type_, data)  # already written with the pending-state change
        run.status = "running"
        refused = None if principal is not None else Forbidden(
            "the API key that started this run was revoked; the run cannot go on", code="api_key_revoked")
        task = asyncio.create_task(self._execute(
            agent, run, events, principal or Principal(run.workspace_id, "", run.api_key_id or "", "member"),
            run.id, first_step=int((run.resume_state or {})["step"]) + 1, refused=refused))
        self._live[run.id] = _Live(channel, task)
        return RunHandle(run.id, run.session_id, channel, task)

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

    @staticmethod
    async def _locked_run(s: AsyncSession, run_id: str) -> Run:
        """The run row, locked until the transaction ends (PostgreSQL; SQLite writers queue anyway)."""
        run = (await s.execute(select(Run).where(Run.id == run_id).with_for_update()
                               .execution_options(populate_existing=True))).scalar_one_or_none()
        if run is None:
            raise NotFound(f"no run '{run_id[:80]}'", code="run_not_found")
        if run.status != "paused" or not run.resume_state:
            raise Conflict(f"run '{run_id}' is {run.status}, not paused", code="run_not_paused")
        return run

    async def _claim_actions(self, run_id: str, tool_call_id: str | None) -> tuple[Run, list[str]]:
        """Atomically move the chosen pending action(s) to ``settling``."""
        async with self.db.transaction() as s:
            run = await self._locked_run(s, run_id)
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

    async def _unclaim_actions(self, run_id: str, chosen: list[str]) -> None:
        async with self.db.transaction() as s:
            run = await self._locked_run(s, run_id)
            state = dict(run.resume_state or {})
            state["settling"] = [x for x in state.get("settling", []) if x not in chosen]
            state["pending"] = [*state.get("pending", []), *(x for x in chosen if x not in state.get("pending", []))]
            run.resume_state = state

    async def _finish_actions(self, run: Run, chosen: list[str], calls: list[_Call],
                              produced: list[tuple[str, dict[str, Any]]]) -> tuple[int, bool]:
        """Save the settled actions' results, take them out of ``settling`` and write
        their events, numbered after the run's last one, all on the locked row.
        Returns (the last event number, whether the run goes on now)."""
        async with self.db.transaction() as s:
            locked = await self._locked_run(s, run.id)
            state = dict(locked.resume_state or {})
            state["settling"] = [x for x in state.get("settling", []) if x not in chosen]
            go_on = not state.get("pending") and not state["settling"]
            await self._write_results(s, run, calls)
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
                      refusal: str | None = None) -> list[_Call]:
        ctx = ToolContext(agent.workspace_id, agent.id, run.id, run.session_id)
        calls: list[_Call] = []
        for r in records:
            c = _Call(ToolCall(r.call_id, r.name, r.arguments), record_id=r.id, level=r.risk_level)
            c.args = orjson.loads(r.arguments or "{}")
            tool = toolbox.tools.get(r.name)
            if decision == "approve" and tool is not None:
                await self._run_tool(tool, c, ctx, emit)
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

    # --- reading ------------------------------------------------------------------------

    async def get(self, principal: Principal, run_id: str) -> tuple[Run, list[ToolCallRecord]]:
        async with self.db.session() as s:
            run = await s.get(Run, run_id)
            if run is not None and run.workspace_id == principal.workspace_id:
                owner = (await s.execute(select(ChatSession.api_key_id).where(
                    ChatSession.id == run.session_id))).scalar()
                if principal.is_admin or owner == principal.key_id:
                    calls = list((await s.execute(select(ToolCallRecord).where(ToolCallRecord.run_id == run_id)
                                                  .order_by(ToolCallRecord.step, ToolCallRecord.started_at))).scalars())
                    return run, calls
        raise NotFound(f"no run '{run_id[:80]}'", code="run_not_found")

    async def follow(self, principal: Principal, run_id: str, after: int = 0, *,
                     until: frozenset[str] = TERMINAL, poll_s: float = 0.25) -> AsyncIterator[dict[str, Any]]:
        """Replay a run's events after ``after`` from the database, then follow it live.

        Live events come from this process's channel when the run executes here,
        else from polling the database (another instance, or a paused run).
        """
        run, _ = await self.get(principal, run_id)
        last = after
        while True:
            # The live channel is looked up before the database is read: whatever was
            # written before the channel appeared is then in ``rows`` (no gap between).
            live = self._live.get(run_id)
            async with self.db.session() as s:
                rows = list((await s.execute(select(RunEvent).where(
                    RunEvent.run_id == run_id, RunEvent.seq > last).order_by(RunEvent.seq))).scalars())
                ended = not rows and live is None and (await s.execute(select(exists().where(
                    RunEvent.run_id == run_id, RunEvent.type.in_(TERMINAL))))).scalar()
            if ended:
                return  # the caller already has the run's last event
            for row in rows:
                event = from_row(row, run.session_id)
                last = row.seq
                yield event
                if event["type"] in until:
                    return
            if live is not None:
                async for event in live.channel.follow(last):
                    last = event["seq"]
                    yield event
                    if event["type"] in until:
                        return
                continue  # the channel closed: anything unflushed is in the database now
            await asyncio.sleep(poll_s)


def _action(c: _Call, step: int) -> Action:
    d = c.decision
    return Action(c.record_id, c.call.id, c.call.name[:128], c.call.arguments, c.level,
                  d.outcome if d else "deny", d.reason if d else None, d.rule if d else None, step)


async def stream_turn(handle: RunHandle) -> AsyncIterator[dict[str, Any]]:
    """The events of a turn its starter sees: from ``run.started`` to the end or a pause."""
    async for event in handle.channel.follow(0):
        yield event
        if event["type"] in STOPS_STREAM:
            return

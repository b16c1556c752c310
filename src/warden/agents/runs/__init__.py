"""The agent runtime behind one object, :class:`Runs`: it starts, executes,
follows, cancels and resumes runs, and takes over the ones whose owner died.

Each part is its own module, built once here and handed what it needs: the
loop (``loop``), a step's tool calls (``actions``), settling paused runs
(``paused``), taking over runs whose lease expired (``recovery``), listing and
cancelling (``control``), reading and following (``reading``), heartbeat and
sweeps (``upkeep``), all sharing the registry of runs executing in this process
(``live``). The client that started a streamed turn owns it: when that client
leaves a non-paused run, the run is cancelled (upstream call closed, partial
text kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

from warden.agents.events import TERMINAL
from warden.agents.hooks import PolicySource, RunHooks, ToolboxFactory
from warden.agents.registry import Agents
from warden.agents.runs.actions import ToolActions
from warden.agents.runs.control import DECIDED_TOPIC, Publish, RunControl, RunSummary
from warden.agents.runs.live import LiveRuns, RunHandle, RuntimeConfig, stream_turn
from warden.agents.runs.loop import MAX_MESSAGE_CHARS, RunLoop, step_request_id
from warden.agents.runs.outcome import RunOutcome, error_body
from warden.agents.runs.paused import PausedRuns, RunBusy
from warden.agents.runs.reading import RunReader
from warden.agents.runs.recovery import Recovery
from warden.agents.runs.upkeep import Upkeep
from warden.agents.sessions import Sessions
from warden.gateway.gateway import Gateway
from warden.store.agent_models import ChatSession, Run, ToolCallRecord
from warden.store.db import Database
from warden.tenancy.accounts import Principal

__all__ = ["DECIDED_TOPIC", "MAX_MESSAGE_CHARS", "RunBusy", "RunHandle", "RunOutcome", "RunSummary", "Runs",
           "RuntimeConfig", "error_body", "step_request_id", "stream_turn"]


class Runs:
    """The one object callers hold; each call goes to the part that does the work."""

    def __init__(self, db: Database, gateway: Gateway, agents: Agents, sessions: Sessions, *,
                 toolbox_factory: ToolboxFactory, policy_source: PolicySource, hooks: RunHooks,
                 config: RuntimeConfig | None = None, publish: Publish | None = None) -> None:
        self.sessions = sessions
        self.live = LiveRuns(config or RuntimeConfig())
        actions = ToolActions(db, hooks, self.live)
        self.loop = RunLoop(db, gateway, agents, sessions, toolbox_factory=toolbox_factory,
                            policy_source=policy_source, hooks=hooks, live=self.live, actions=actions)

        async def released(run_id: str) -> None:  # decisions that found the run busy go on now
            if publish is not None:
                await publish(DECIDED_TOPIC, run_id)

        self.paused = PausedRuns(db, agents, actions=actions, loop=self.loop, live=self.live, released=released)
        self.recovery = Recovery(db, agents, loop=self.loop, paused=self.paused, live=self.live)
        self.control = RunControl(db, self.live, hooks, publish)
        self.reader = RunReader(db, self.live)
        self.upkeep = Upkeep(db, self.live, self.recovery)

    @property
    def instance_id(self) -> str:
        return self.live.instance_id

    @property
    def config(self) -> RuntimeConfig:
        return self.live.config

    @config.setter
    def config(self, config: RuntimeConfig) -> None:
        # Tests shorten the timings of a running process; every part reads them from ``live``.
        self.live.config = config

    # --- turns ----------------------------------------------------------------------

    async def start(self, principal: Principal, message: str, *, agent_ref: str | None = None,
                    session_id: str | None = None, request_id: str = "") -> RunHandle:
        """Record the user's message and a new run, then execute the run as its own task."""
        return await self.loop.start(principal, message, agent_ref=agent_ref, session_id=session_id,
                                     request_id=request_id)

    @staticmethod
    async def wait(handle: RunHandle) -> RunOutcome:
        return await asyncio.shield(handle.task)

    async def resume_run(self, run_id: str, decision: Literal["approve", "reject"], *,
                         tool_call_id: str | None = None, note: str | None = None,
                         actor: str = "system", refusal: str | None = None) -> RunHandle:
        """Seam for approvals: settle pending action(s) of a paused run in its task, which
        continues the run once nothing is pending (see :meth:`PausedRuns.resume`)."""
        return await self.paused.resume(run_id, decision, tool_call_id=tool_call_id, note=note,
                                        actor=actor, refusal=refusal)

    # --- control --------------------------------------------------------------------

    async def cancel(self, run_id: str) -> bool:
        """Cancel a run executing in this process (not a paused one). True if it was cancelled."""
        return await self.live.cancel(run_id)

    async def cancel_run(self, principal: Principal, run_id: str, reason: str | None = None) -> Run:
        """An admin cancels an active run, wherever it executes or waits; its session is free."""
        return await self.control.cancel(principal, run_id, reason)

    async def list(self, principal: Principal, *, status: str | None = None, stuck: bool = False,
                   agent_id: str | None = None, limit: int = 50) -> list[RunSummary]:
        return await self.control.list(principal, status=status, stuck=stuck, agent_id=agent_id, limit=limit)

    async def abandon(self, run_id: str) -> None:
        """The client that owns a streamed turn went away: cancel unless the run waits for a human."""
        await self.live.cancel(run_id)

    async def delete_session(self, principal: Principal, session_id: str) -> ChatSession:
        """Delete a session (its messages and runs); a run executing in it is cancelled first."""
        session = await self.sessions.get(principal, session_id)
        for run_id in self.live.in_session(session.id):
            await self.live.cancel(run_id, even_held=True)
        return await self.sessions.delete(principal, session.id)

    # --- reading --------------------------------------------------------------------

    async def get(self, principal: Principal, run_id: str) -> tuple[Run, list[ToolCallRecord]]:
        return await self.reader.get(principal, run_id)

    def follow(self, principal: Principal, run_id: str, after: int = 0, *,
               until: frozenset[str] = TERMINAL, poll_s: float = 0.25) -> AsyncIterator[dict[str, Any]]:
        return self.reader.follow(principal, run_id, after, until=until, poll_s=poll_s)

    # --- lifecycle ------------------------------------------------------------------

    async def start_background(self) -> None:
        """Sweep abandoned runs now, then keep heartbeats and sweeps going."""
        await self.upkeep.start()

    async def sweep_stale(self) -> int:
        """Both sweeps: take over runs whose lease expired, fail ownerless stale ones."""
        return await self.upkeep.sweep()

    async def on_message(self, topic: str, key: str) -> None:
        """State-store subscriber (serving instances): a run here was cancelled elsewhere."""
        await self.control.on_message(topic, key)

    async def close(self) -> None:
        """Stop; the runs executing here are handed over, not ended (see :meth:`Upkeep.release`)."""
        await self.upkeep.stop()
        await self.upkeep.release(await self.live.release_all())

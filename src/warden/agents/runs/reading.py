"""Reading runs: one run with its tool calls, and following a run's events
(replayed from the database, then live) from any connection or instance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import exists, select

from warden.agents.events import TERMINAL, from_row
from warden.agents.runs.live import LiveRuns
from warden.errors import NotFound
from warden.store.agent_models import ChatSession, Run, RunEvent, ToolCallRecord
from warden.store.db import Database
from warden.tenancy.accounts import Principal


class RunReader:
    def __init__(self, db: Database, live: LiveRuns) -> None:
        self.db = db
        self.live = live

    async def get(self, principal: Principal, run_id: str) -> tuple[Run, list[ToolCallRecord]]:
        """The run and its tool calls; 404 unless the caller's workspace holds it and
        the caller is an admin or owns its session."""
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
            channel = self.live.channel(run_id)
            async with self.db.session() as s:
                rows = list((await s.execute(select(RunEvent).where(
                    RunEvent.run_id == run_id, RunEvent.seq > last).order_by(RunEvent.seq))).scalars())
                ended = not rows and channel is None and (await s.execute(select(exists().where(
                    RunEvent.run_id == run_id, RunEvent.type.in_(TERMINAL))))).scalar()
            if ended:
                return  # the caller already has the run's last event
            for row in rows:
                event = from_row(row, run.session_id)
                last = row.seq
                yield event
                if event["type"] in until:
                    return
            if channel is not None:
                async for event in channel.follow(last):
                    last = event["seq"]
                    yield event
                    if event["type"] in until:
                        return
                continue  # the channel closed: anything unflushed is in the database now
            await asyncio.sleep(poll_s)

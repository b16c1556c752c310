"""Keeping runs honest across processes: a heartbeat for every run executing
here, and a sweep that fails the runs a dead process left ``running``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlalchemy import func, select, update

from warden.agents.runs.live import LiveRuns
from warden.agents.runs.outcome import error_body
from warden.errors import WardenError
from warden.store.agent_models import Run, RunEvent, ToolCallRecord
from warden.store.base import utcnow
from warden.store.db import Database

log = logging.getLogger("warden.agents")


class Upkeep:
    def __init__(self, db: Database, live: LiveRuns) -> None:
        self.db = db
        self.live = live
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Sweep abandoned runs now, then keep heartbeats and sweeps going."""
        await self.sweep_stale()
        self._task = asyncio.create_task(self._maintain(), name="warden-runs-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _maintain(self) -> None:
        since_sweep = 0.0
        while True:
            config = self.live.config
            await asyncio.sleep(config.heartbeat_s)
            since_sweep += config.heartbeat_s
            try:
                await self._beat()
                if since_sweep >= config.sweep_every_s:
                    since_sweep = 0.0
                    await self.sweep_stale()
            except Exception:  # the database may be briefly away; try again next beat
                log.warning("run maintenance failed", exc_info=True)

    async def _beat(self) -> None:
        ids = self.live.executing()
        if ids:
            async with self.db.transaction() as s:
                await s.execute(update(Run).where(Run.id.in_(ids), Run.status == "running")
                                .values(heartbeat_at=utcnow()))

    async def sweep_stale(self) -> int:
        """Mark runs left ``running`` by a process that died (stale heartbeat) as failed."""
        cutoff = utcnow() - timedelta(seconds=self.live.config.stale_after_s)
        async with self.db.session() as s:
            stale = list((await s.execute(select(Run).where(
                Run.status == "running", Run.heartbeat_at < cutoff))).scalars())
        error = error_body(WardenError("the server executing this run stopped before it finished",
                                       code="run_abandoned"))
        count = 0
        for run in stale:
            if run.id in self.live:
                continue
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

"""Keeping runs honest across processes: a heartbeat for every run executing
here (renewing this instance's lease on it, and stopping the ones it lost), and
a sweep that takes over the runs whose owner's lease expired (recovery.py) and
fails the ones a process from before leases left ``running`` with no owner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlalchemy import func, select, update

from warden.agents.runs.live import LiveRuns
from warden.agents.runs.recovery import Recovery
from warden.agents.runs.outcome import error_body
from warden.errors import WardenError
from warden.store.agent_models import Run, RunEvent, ToolCallRecord
from warden.store.base import utcnow
from warden.store.db import Database

log = logging.getLogger("warden.agents")


class Upkeep:
    def __init__(self, db: Database, live: LiveRuns, recovery: Recovery) -> None:
        self.db = db
        self.live = live
        self.recovery = recovery
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fail ownerless stale runs now; take over expired leases from the first heartbeat
        on (a process that starts only to migrate and exits, as ``warden serve`` does
        before its workers, takes nothing over), then keep heartbeats and sweeps going."""
        await self.sweep_stale()
        self._task = asyncio.create_task(self._maintain(), name="warden-runs-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _maintain(self) -> None:
        since_sweep = self.live.config.sweep_every_s  # the first beat sweeps
        while True:
            config = self.live.config
            await asyncio.sleep(config.heartbeat_s)
            since_sweep += config.heartbeat_s
            try:
                await self._beat()
                if since_sweep >= config.sweep_every_s:
                    since_sweep = 0.0
                    await self.sweep()
            except Exception:  # the database may be briefly away; try again next beat
                log.warning("run maintenance failed", exc_info=True)

    async def _beat(self) -> None:
        """Renew the lease of every run executing here; stop the ones no longer ours: taken
        over by another instance, or cancelled by an admin."""
        ids = self.live.executing()
        if not ids:
            return
        me = self.live.instance_id
        async with self.db.transaction() as s:
            await s.execute(update(Run).where(Run.id.in_(ids), Run.owner == me, Run.status.in_(("running", "paused")))
                            .values(heartbeat_at=utcnow(), lease_expires_at=self.live.config.lease_until()))
            rows = (await s.execute(select(Run.id, Run.owner, Run.status).where(Run.id.in_(ids)))).all()
        for row in rows:
            taken = row.status in ("running", "paused") and row.owner is not None and row.owner != me
            if taken or (row.status == "cancelled" and not self.live.is_ending(row.id)):
                log.warning("run %s is no longer this instance's (%s); stopping it", row.id,
                            "taken over" if taken else "cancelled")
                await self.live.lose(row.id)

    async def release(self, ids: list[str]) -> None:
        """Expire this instance's leases on ``ids`` now: the next sweep anywhere takes them over."""
        if not ids:
            return
        with contextlib.suppress(Exception):  # the database may be gone already: they expire anyway
            async with self.db.transaction() as s:
                await s.execute(update(Run).where(Run.id.in_(ids), Run.owner == self.live.instance_id)
                                .values(lease_expires_at=utcnow()))

    async def sweep(self) -> int:
        """Both sweeps; returns how many runs they moved."""
        return await self.sweep_stale() + await self.recovery.sweep()

    async def sweep_stale(self) -> int:
        """Mark runs left ``running`` with no owner (by a process from before leases) and a
        stale heartbeat as failed."""
        cutoff = utcnow() - timedelta(seconds=self.live.config.stale_after_s)
        async with self.db.session() as s:
            stale = list((await s.execute(select(Run).where(
                Run.status == "running", Run.owner.is_(None), Run.heartbeat_at < cutoff))).scalars())
        error = error_body(WardenError("the server executing this run stopped before it finished",
                                       code="run_abandoned"))
        count = 0
        for run in stale:
            if run.id in self.live:
                continue
            async with self.db.transaction() as s:
                moved = await s.execute(update(Run).where(Run.id == run.id, Run.status == "running",
                                                          Run.owner.is_(None))
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

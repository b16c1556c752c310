"""Spend rows, written in batches off the request path.

The gateway hands each finished request's row to :meth:`SpendWriter.record`
(no I/O, no await); a background task inserts whatever has queued up every
``interval`` seconds or as soon as ``batch_size`` rows wait. ``close`` flushes
what is left, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import insert

from warden.store.db import Database
from warden.store.models import SpendRow

log = logging.getLogger("warden.spend")


class SpendWriter:
    def __init__(self, db: Database, *, batch_size: int = 500, interval: float = 1.0,
                 max_pending: int = 100_000) -> None:
        self.db = db
        self.batch_size = batch_size
        self.interval = interval
        self.max_pending = max_pending
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spend-writer")

    def record(self, row: dict[str, Any]) -> None:
        if len(self._pending) >= self.max_pending:
            # The database has been down for a long time: keep memory bounded.
            self.dropped += 1
            return
        self._pending.append(row)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> int:
        """Write everything queued now; rows stay queued if the database refuses."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, []
        try:
            async with self.db.transaction() as s:
                await s.execute(insert(SpendRow), batch)
        except Exception:
            log.warning("spend flush failed; %d rows kept for the next try", len(batch))
            self._pending[:0] = batch
            return 0
        return len(batch)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()

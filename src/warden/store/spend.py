"""Spend rows, group-committed before the response that incurred them ends.

The gateway hands each finished request's row to :meth:`SpendWriter.record`
(no I/O, no await). With ``commit_wait`` > 0 (the default, setting
``WARDEN_SPEND_COMMIT_WAIT``) ``record`` wakes the writer task at once and
returns an awaitable that resolves when the row's batch has been committed:
the gateway awaits it before a completed response (or a stream's last frame)
leaves, so a response the client received whole has its row in the database
and a ``kill -9`` loses none. Rows that arrive while a batch is being written
form the next batch (group commit: under load one transaction carries many
rows). The wait is bounded by ``commit_wait``: with the database down the
response still ends and the rows stay queued, as below. With ``commit_wait``
= 0 the writer inserts every ``interval`` seconds or as soon as ``batch_size``
rows wait (the old batched writer: a kill -9 loses what was queued).
``close`` flushes what is left, so a clean shutdown loses nothing.

One bad row must never hold the others back: ``record`` cuts string fields to
their column widths (PostgreSQL refuses longer ones), and when a batch insert
fails its rows are tried one at a time; a row that still fails is set aside
(logged, counted in ``dropped``) while the rest are written, provided the
database is up (another row got in, or this one was refused for its values).
Otherwise the database itself is the trouble: the rows stay queued for the
next try.

:func:`spent_pico` reads the ledger back, summed per scope, for the budget
counters a process without Redis rebuilds at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, ColumnElement, String, cast, func, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from warden.store.db import Database
from warden.store.models import SpendRow

log = logging.getLogger("warden.spend")

# Column name -> width, for every bounded string column of the spend table.
STRING_WIDTHS: dict[str, int] = {
    c.name: c.type.length for c in SpendRow.__table__.columns
    if isinstance(c.type, String) and c.type.length is not None
}


def _fit(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with over-long strings cut to their columns (a copy only when one is)."""
    fitted = row
    for name, width in STRING_WIDTHS.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > width:
            if fitted is row:
                fitted = dict(row)
            fitted[name] = value[:width]
    return fitted


def _refused_for_its_data(exc: Exception) -> bool:
    """The database (or the driver, before sending) refused the row's values, not the connection."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    # A StatementError that is not a DBAPIError was raised while binding the values.
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


class SpendWriter:
    def __init__(self, db: Database, *, batch_size: int = 500, interval: float = 1.0,
                 max_pending: int = 100_000, commit_wait: float = 0.0) -> None:
        self.db = db
        self.batch_size = batch_size
        self.interval = interval
        self.max_pending = max_pending
        self.commit_wait = commit_wait
        self._pending: list[dict[str, Any]] = []
        self._committed: asyncio.Future[bool] | None = None  # of the rows in _pending
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._down = False  # the last flush found the database unavailable
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spend-writer")

    def record(self, row: dict[str, Any]) -> asyncio.Future[bool] | None:
        """Queue ``row``. With ``commit_wait``, returns a future that turns True once the
        row is committed, False when its batch could not be written or ``commit_wait``
        passed first (the row stays queued); it never raises, so nobody has to await
        it. Without ``commit_wait``: ``None``."""
        if len(self._pending) >= self.max_pending:
            # The database has been down for a long time: keep memory bounded.
            self.dropped += 1
            return None
        self._pending.append(_fit(row))
        if not self.commit_wait:
            if len(self._pending) >= self.batch_size:
                self._wake.set()
            return None
        self._wake.set()
        if self._committed is None:
            loop = asyncio.get_running_loop()
            self._committed = committed = loop.create_future()
            loop.call_later(self.commit_wait, _resolve, committed, False)
        return self._committed

    async def flush(self) -> int:
        """Write everything queued now; returns how many rows were written. Rows stay queued
        if the database is unavailable; a row it refuses for its data is dropped."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, []
        committed, self._committed = self._committed, None
        try:
            await self._insert(batch)
        except Exception:  # noqa: BLE001 - any failure: find the bad rows, or keep all if the database is down
            written = await self._insert_one_by_one(batch)
        else:
            written = len(batch)
            self._down = False
        if committed is not None:
            _resolve(committed, written == len(batch))
        return written

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        await self.db.insert_rows(SpendRow, rows)

    async def _insert_one_by_one(self, batch: list[dict[str, Any]]) -> int:
        written = 0
        failed: list[tuple[dict[str, Any], Exception]] = []
        for row in batch:
            try:
                await self._insert([row])
            except Exception as exc:  # noqa: BLE001 - sorted below: a bad row or an unavailable database
                failed.append((row, exc))
            else:
                written += 1
        # Once a row got in, the database is up: whatever it still refuses is the rows' fault.
        refused = [(r, e) for r, e in failed if written or _refused_for_its_data(e)]
        kept = [r for r, e in failed if not (written or _refused_for_its_data(e))]
        for row, exc in refused:
            log.error("spend row set aside, the database refused it: request_id=%s error=%s",
                      str(row.get("request_id"))[:64], type(exc).__name__)
        if kept:
            log.warning("spend flush failed; %d rows kept for the next try", len(kept))
        self.dropped += len(refused)
        self._pending[:0] = kept
        self._down = bool(kept)
        return written

    async def _run(self) -> None:
        while not self._closing:
            try:
                # A timeout scope, not wait_for: 3.11's wait_for wraps the wait in a new task,
                # one more turn of the loop before a row that woke us is written.
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
            if self._down:  # do not spin on the wake-ups of new rows while the database is down
                await asyncio.sleep(self.interval)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()


def _resolve(committed: asyncio.Future[bool], ok: bool) -> None:
    if not committed.done():
        committed.set_result(ok)


LedgerScope = Literal["workspace_id", "api_key_id", "agent_id"]
_PICO = 10**12
_IN_CHUNK = 500  # ids per query: far below every driver's bound-parameter limit


def pico_sum(db: Database) -> ColumnElement[Any]:
    """SUM(cost_usd) in whole pico-USD, exact on both databases (see :func:`spent_pico`)."""
    if db.is_sqlite:
        return func.sum(cast(func.round(SpendRow.cost_usd * _PICO), BigInteger))
    return func.sum(SpendRow.cost_usd * _PICO)


async def spent_pico(db: Database, column: LedgerScope, ids: Collection[str],
                     since: datetime | None) -> dict[tuple[str, str], int]:
    """Spend of each of ``ids`` (a workspace, key or agent id, by ``column``) since
    ``since`` (``None``: ever), in pico-USD, keyed by ``(workspace_id, id)``.

    Exact on both databases: PostgreSQL sums the NUMERIC column itself; SQLite
    stores it as REAL, so each row is rounded to a whole pico-USD (exact for the
    column's 12 decimals) before an integer sum. A row whose cost is unknown
    (NULL) adds nothing.
    """
    scope = getattr(SpendRow, column)
    amount = pico_sum(db)
    wanted = sorted(set(ids))
    out: dict[tuple[str, str], int] = {}
    async with db.session() as s:
        for i in range(0, len(wanted), _IN_CHUNK):
            q = (select(SpendRow.workspace_id, scope, amount)
                 .where(scope.in_(wanted[i:i + _IN_CHUNK]), SpendRow.cost_usd.is_not(None))
                 .group_by(SpendRow.workspace_id, scope))
            if since is not None:
                q = q.where(SpendRow.ts >= since)
            for workspace_id, scope_id, total in (await s.execute(q)).all():
                out[(workspace_id, scope_id)] = int(total or 0)
    return out

"""Seals the spend ledger into the audit chain after the fact, off the request path.

The spend writer (store/spend.py) commits rows with ``audit_seq`` NULL: the commit
a reply's last byte waits for stays a plain insert, and it never takes the audit
head's row lock, which every instance of a cluster shares. :class:`SpendSealer`,
started and stopped with the services like the checkpointer, every ``interval``
seconds takes the oldest unsealed rows (by id, at most ``batch``) and in ONE
transaction appends, per workspace among them, a ``spend.sealed`` event (the
:func:`~warden.store.spend_seal.summary` of the rows as stored) and stamps its
seq on them. Rows written before migration 0016 are sealed by the first runs like
any others. An idle run is one indexed query.

Several instances: on PostgreSQL the rows are claimed ``FOR UPDATE SKIP LOCKED``,
so two sealers take disjoint rows; the stamp touches only rows still unsealed, and
the head's compare-and-set (store/audit.py) keeps the chain linear. Losing either
race costs a retry of the transaction, never a second seal or a fork. Until a run
reaches them, rows are the ledger's unsealed tail (``verify`` counts them), as the
events after the latest checkpoint are the chain's unanchored one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from warden.store import audit, spend_seal
from warden.store.audit import AuditConflict
from warden.store.db import Database
from warden.store.models import AuditHead, SpendRow

log = logging.getLogger("warden.audit")

# Rows per transaction; a backlog (rows from before 0016) goes in runs back to back. SQLite's
# one writer waits for each run (~45 µs a row), so its runs are shorter.
BATCH, SQLITE_BATCH = 5000, 1000
_CHUNK = 500  # ids per stamp: far below every driver's bound-parameter limit
_HEAD = select(AuditHead.seq).where(AuditHead.id == 1)
_STAMP = (update(SpendRow).where(SpendRow.id.in_(bindparam("ids", expanding=True)), SpendRow.audit_seq.is_(None))
          .values(audit_seq=bindparam("seq")))


class SpendSealer:
    """Seals unsealed spend rows every ``interval`` seconds (:meth:`seal_once`)."""

    def __init__(self, db: Database, *, interval: float, batch: int | None = None) -> None:
        self.db, self.interval = db, interval
        self.batch = batch or (SQLITE_BATCH if db.is_sqlite else BATCH)
        # Oldest first; ix_spend_audit_seq (audit_seq, id) serves both the filter and the order.
        self._claim = (select(SpendRow.id, *spend_seal.COLUMNS).where(SpendRow.audit_seq.is_(None))
                       .order_by(SpendRow.id).limit(self.batch).with_for_update(skip_locked=True))
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spend-sealer")

    async def close(self) -> None:
        """Stop the loop and seal what this process's spend writer flushed last."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        try:
            await self.seal_pending()
        except Exception:  # noqa: BLE001 - the database may be gone at shutdown
            log.warning("spend seal at close failed", exc_info=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.seal_pending()
            except Exception:  # noqa: BLE001 - a database outage must not end the loop
                log.warning("spend seal failed; retrying in %gs", self.interval, exc_info=True)

    async def seal_pending(self) -> int:
        """Seal until a run finds less than a full batch: every row committed before it."""
        total = 0
        while True:
            n = await self.seal_once()
            total += n
            if n < self.batch:
                return total
            await asyncio.sleep(0)  # a backlog: let the event loop breathe between batches

    async def seal_once(self) -> int:
        """Seal the oldest unsealed rows (at most ``batch``) in one transaction; how many."""
        async with self._lock:
            if not self.db.one_hop_writes:
                return await self.db.run_core_tx(self._seal)
            # A SQLite file has one writer, and every reply's spend commit waits for it:
            # the rows are read and digested first, apart, and the write transaction
            # holds it only for the stamps and the events (~4x shorter).
            claimed = await self.db.read_core(self._claimed)
            if not claimed:
                return 0
            try:
                return await self.db.run_core_tx(lambda conn: self._stamp(conn, claimed, _Taken))
            except _Taken:  # another process sealed some of them since: the next run rereads
                return 0

    def _claimed(self, conn: Connection) -> list[_Group]:
        """The oldest unsealed rows, by workspace, each group with its seal's data."""
        groups: dict[str, list[Any]] = {}
        for r in conn.execute(self._claim).mappings().all():
            groups.setdefault(r["workspace_id"], []).append(r)
        return [(ws, [r["id"] for r in rows], spend_seal.summary(rows)) for ws, rows in groups.items()]

    def _seal(self, conn: Connection) -> int:
        return self._stamp(conn, self._claimed(conn), AuditConflict)

    def _stamp(self, conn: Connection, claimed: list[_Group], taken: type[Exception]) -> int:
        """Stamp the claimed rows with the seqs their events take, then append the events.
        A row sealed by another since it was claimed raises ``taken``."""
        if not claimed:
            return 0
        # Stamp first with the seqs the events will take, so the head's row lock (one
        # for the whole cluster) is held only from the appends to the commit.
        first = int(conn.execute(_HEAD).scalar_one()) + 1
        for seq, (_, ids, _) in enumerate(claimed, first):
            stamped = sum(conn.execute(_STAMP, {"ids": ids[i:i + _CHUNK], "seq": seq}).rowcount
                          for i in range(0, len(ids), _CHUNK))
            if stamped != len(ids):  # another sealer got some first (SQLite: another process)
                raise taken()
        for seq, (workspace_id, _, data) in enumerate(claimed, first):
            event = audit.append_sync(conn, workspace_id=workspace_id, actor=spend_seal.ACTOR,
                                      action=spend_seal.ACTION, data=data)
            if event["seq"] != seq:  # the head moved since it was read: the stamps are wrong
                raise AuditConflict()
        return sum(len(ids) for _, ids, _ in claimed)


# (workspace id, the rows' ids, the seal's data)
_Group = tuple[str, list[int], dict[str, Any]]


class _Taken(Exception):
    """Rows read for a seal were sealed by another process before the stamp."""

"""Reading the audit log: filtered pages for the API, a full export (signed, with
its checkpoints, for a third party), and the check behind ``warden audit verify``:
the chain walked and held against every signed checkpoint (appending lives in
store/audit.py, checkpoints in store/checkpoints.py, spend seals in store/spend_sealer.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import select

from warden.store import audit, checkpoints
from warden.store.checkpoints import Checkpointer, CheckpointError
from warden.store.db import Database
from warden.store.spend_sealer import SpendSealer
from warden.store.models import AuditEvent

MAX_PAGE = 1000


def event_view(ev: AuditEvent) -> dict[str, Any]:
    return {"seq": ev.seq, "ts": ev.ts.isoformat(timespec="microseconds"), "workspace_id": ev.workspace_id,
            "actor": ev.actor, "action": ev.action, "target": ev.target, "data": ev.data,
            "prev_hash": ev.prev_hash, "hash": ev.hash}


class AuditLog:
    def __init__(self, db: Database, signer: Checkpointer, sealer: SpendSealer) -> None:
        self.db = db
        self.signer = signer
        self.sealer = sealer

    @property
    def public_key(self) -> str:
        return checkpoints.public_key_text(self.signer.public)

    async def page(self, workspace_id: str, *, action: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, limit: int = 100,
                   cursor: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """Events of one workspace in chain order after ``cursor`` (a seq); returns the next cursor."""
        q = select(AuditEvent).where(AuditEvent.workspace_id == workspace_id)
        if action:
            # "approval." matches a family of actions; anything else is exact.
            q = q.where(AuditEvent.action.startswith(action) if action.endswith(".") else AuditEvent.action == action)
        if since is not None:
            q = q.where(AuditEvent.ts >= since)
        if until is not None:
            q = q.where(AuditEvent.ts < until)
        if cursor is not None:
            q = q.where(AuditEvent.seq > cursor)
        limit = max(1, min(limit, MAX_PAGE))
        async with self.db.session() as s:
            rows = list((await s.execute(q.order_by(AuditEvent.seq).limit(limit + 1))).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return [event_view(e) for e in rows], (rows[-1].seq if more else None)

    async def export(self, workspace_id: str | None = None, batch: int = 1000) -> AsyncIterator[dict[str, Any]]:
        """Every event (of one workspace, or all) in chain order."""
        last = 0
        while True:
            q = select(AuditEvent).where(AuditEvent.seq > last)
            if workspace_id is not None:
                q = q.where(AuditEvent.workspace_id == workspace_id)
            async with self.db.session() as s:
                rows = list((await s.execute(q.order_by(AuditEvent.seq).limit(batch))).scalars())
            if not rows:
                return
            for ev in rows:
                yield event_view(ev)
            last = rows[-1].seq

    async def signed_export(self) -> AsyncIterator[bytes]:
        """Every event with the checkpoints that vouch for it, after signing the head now."""
        await self.signer.checkpoint(force=True)
        # Read before the events: the chain only grows, so each one is in the export.
        known = checkpoints.load(self.signer.path)
        async for line in checkpoints.export_lines(self.signer.public, known, self.export()):
            yield line

    async def verify(self, *, seal_first: bool = False) -> audit.VerifyResult:
        """``seal_first``: seal every spend row committed so far before checking, instead
        of reporting them as the unsealed tail (store/spend_sealer.py)."""
        if seal_first:
            await self.sealer.seal_pending()
        try:
            known = checkpoints.load(self.signer.path)
        except CheckpointError as exc:
            return audit.VerifyResult(False, 0, None, str(exc))
        return await checkpoints.verify_database(self.db, known, self.signer.public)

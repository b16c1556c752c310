"""The append-only, hash-chained audit log.

Each event's hash is SHA-256 over the previous hash and the event's canonical
JSON. Appends compare-and-swap the single ``audit_head`` row, so concurrent
writers on any number of instances still build one linear chain, and an append
commits or rolls back with the change it records (same transaction).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warden.store.models import AuditEvent, AuditHead
from warden.store.base import utcnow

GENESIS = "0" * 64


class AuditConflict(Exception):
    """Another writer moved the chain's head first; the caller's transaction must retry."""


def canonical(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, seq: int, ts: datetime, workspace_id: str, actor: str,
               action: str, target: str | None, data: dict[str, Any]) -> str:
    body = canonical({
        "seq": seq, "ts": ts.isoformat(timespec="microseconds"), "workspace_id": workspace_id,
        "actor": actor, "action": action, "target": target, "data": data,
    })
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


async def append(session: AsyncSession, *, workspace_id: str, actor: str, action: str,
                 target: str | None = None, data: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event inside the caller's transaction. Raises AuditConflict on a lost race."""
    data = data or {}
    # The head row is created by the first migration, so it always exists.
    row = (await session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).one()
    prev_seq, prev_hash = row.seq, row.hash
    seq = prev_seq + 1
    ts = utcnow()
    digest = chain_hash(prev_hash, seq, ts, workspace_id, actor, action, target, data)
    moved = await session.execute(
        update(AuditHead).where(AuditHead.id == 1, AuditHead.seq == prev_seq)
        .values(seq=seq, hash=digest).execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        raise AuditConflict()
    event = AuditEvent(seq=seq, ts=ts, workspace_id=workspace_id, actor=actor, action=action,
                       target=target, data=data, prev_hash=prev_hash, hash=digest)
    session.add(event)
    await session.flush()
    return event


@dataclass
class VerifyResult:
    ok: bool
    count: int
    broken_seq: int | None = None
    reason: str | None = None


async def verify(session: AsyncSession, batch: int = 1000) -> VerifyResult:
    """Walk the chain in order; report the first event whose link or hash is wrong."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    last = 0
    while True:
        rows = (await session.execute(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        )).scalars().all()
        if not rows:
            break
        for ev in rows:
            if ev.seq != expected_seq:
                return VerifyResult(False, count, expected_seq, "event missing")
            if ev.prev_hash != prev_hash:
                return VerifyResult(False, count, ev.seq, "link to previous event broken")
            digest = chain_hash(prev_hash, ev.seq, ev.ts, ev.workspace_id, ev.actor, ev.action,
                                ev.target, ev.data)
            if digest != ev.hash:
                return VerifyResult(False, count, ev.seq, "content does not match its hash")
            prev_hash, expected_seq, count, last = ev.hash, ev.seq + 1, count + 1, ev.seq
    head = (await session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).one()
    if head.seq != count or head.hash != prev_hash:
        return VerifyResult(False, count, count + 1, "events after the last one are missing")
    return VerifyResult(True, count)

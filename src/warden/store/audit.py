"""The append-only, hash-chained audit log.

Each event's hash is SHA-256 over the previous hash and the event's canonical
JSON. Appends compare-and-swap the single ``audit_head`` row, so concurrent
writers on any number of instances still build one linear chain, and an append
commits or rolls back with the change it records (same transaction).

The chain alone proves only its own consistency: whoever can write the database
can delete its tail or rewrite it and recompute the hashes. Signed checkpoints
of the head, kept outside the database (store/checkpoints.py), anchor it;
:class:`ChainWalk` is the one walk both the database and an export are checked with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
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


def chain_hash(prev_hash: str, seq: int, ts: datetime | str, workspace_id: str, actor: str,
               action: str, target: str | None, data: dict[str, Any]) -> str:
    """``ts``: the event's time, or its text as an export holds it (the same ISO form)."""
    if isinstance(ts, datetime):
        ts = ts.isoformat(timespec="microseconds")
    body = canonical({
        "seq": seq, "ts": ts, "workspace_id": workspace_id,
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
    # The hash of each watched seq the walk reached (what checkpoints are compared with).
    hashes: dict[int, str] = field(default_factory=dict, repr=False)
    # Set by the checkpoint check: how many signed checkpoints matched, and the latest one.
    checkpoints: int = 0
    anchored_seq: int = 0
    anchored_ts: str | None = None


class ChainWalk:
    """Checks events fed in chain order: each seq follows the last, links to its
    hash, and hashes to what it claims. Remembers the hashes at ``watch`` seqs."""

    def __init__(self, watch: Collection[int] = ()) -> None:
        self.watch = frozenset(watch)
        self.prev_hash = GENESIS
        self.count = 0
        self.hashes: dict[int, str] = {}

    def step(self, seq: int, ts: datetime | str, workspace_id: str, actor: str, action: str,
             target: str | None, data: dict[str, Any], prev_hash: str, hash: str) -> VerifyResult | None:
        """None when the event is sound, else the failed result naming it."""
        expected = self.count + 1
        if seq != expected:
            return self.broken(expected, "event missing" if seq > expected else "event out of order or repeated")
        if prev_hash != self.prev_hash:
            return self.broken(seq, "link to previous event broken")
        if chain_hash(self.prev_hash, seq, ts, workspace_id, actor, action, target, data) != hash:
            return self.broken(seq, "content does not match its hash")
        if seq in self.watch:
            self.hashes[seq] = hash
        self.prev_hash, self.count = hash, seq
        return None

    def broken(self, seq: int, reason: str) -> VerifyResult:
        return VerifyResult(False, self.count, seq, reason, hashes=self.hashes)

    def result(self) -> VerifyResult:
        return VerifyResult(True, self.count, hashes=self.hashes)


async def verify(session: AsyncSession, batch: int = 1000, watch: Collection[int] = ()) -> VerifyResult:
    """Walk the chain in order; report the first event whose link or hash is wrong."""
    walk = ChainWalk(watch)
    last = 0
    while True:
        rows = (await session.execute(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        )).scalars().all()
        if not rows:
            break
        for ev in rows:
            broken = walk.step(ev.seq, ev.ts, ev.workspace_id, ev.actor, ev.action, ev.target, ev.data,
                               ev.prev_hash, ev.hash)
            if broken is not None:
                return broken
        last = rows[-1].seq
    head = (await session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).one()
    if head.seq > walk.count:
        return walk.broken(walk.count + 1, "events after the last one are missing")
    if head.seq != walk.count or head.hash != walk.prev_hash:
        return walk.broken(head.seq, "the head row does not point at the last event")
    return walk.result()

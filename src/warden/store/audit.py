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
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from warden.store import spend_seal
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


def next_fields(prev_seq: int, prev_hash: str, *, workspace_id: str, actor: str, action: str,
                target: str | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The columns of the event that follows the head (``prev_seq``, ``prev_hash``): pure,
    no I/O. The one home of an event's hash and fields for both appends below."""
    data = data or {}
    seq, ts = prev_seq + 1, utcnow()
    digest = chain_hash(prev_hash, seq, ts, workspace_id, actor, action, target, data)
    return {"seq": seq, "ts": ts, "workspace_id": workspace_id, "actor": actor, "action": action,
            "target": target, "data": data, "prev_hash": prev_hash, "hash": digest}


def next_event(prev_seq: int, prev_hash: str, **event: Any) -> AuditEvent:
    """:func:`next_fields` as a mapped object (to add to a session)."""
    return AuditEvent(**next_fields(prev_seq, prev_hash, **event))


_HEAD = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)


def _move_head(event: AuditEvent) -> Any:
    """Compare-and-set of the head row: it moves only if nobody moved it since it was read."""
    return (update(AuditHead).where(AuditHead.id == 1, AuditHead.seq == event.seq - 1)
            .values(seq=event.seq, hash=event.hash).execution_options(synchronize_session=False))


async def append(session: AsyncSession, *, workspace_id: str, actor: str, action: str,
                 target: str | None = None, data: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event inside the caller's transaction. Raises AuditConflict on a lost race."""
    # The head row is created by the first migration, so it always exists.
    row = (await session.execute(_HEAD)).one()
    event = next_event(row.seq, row.hash, workspace_id=workspace_id, actor=actor, action=action,
                       target=target, data=data)
    if (await session.execute(_move_head(event))).rowcount != 1:
        raise AuditConflict()
    session.add(event)
    await session.flush()
    return event


# The compare-and-set and the insert, built once: the synchronous append is on the
# spend writer's commit, which every completed response waits for.
_MOVE = (update(AuditHead).where(AuditHead.id == 1, AuditHead.seq == bindparam("prev_seq"),
                                 AuditHead.hash == bindparam("prev_hash"))
         .values(seq=bindparam("new_seq"), hash=bindparam("new_hash")))
_INSERT = insert(AuditEvent)
_LAST_HEAD = "warden.audit.head"  # key in a DB-API connection's info: the head it last wrote


def append_sync(conn: Connection | Session, *, workspace_id: str, actor: str, action: str,
                target: str | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`append` in a synchronous transaction: a ``Session`` (a SQLite file's one-hop
    writes, store/db.py ``run_sync_tx``) or a Core ``Connection`` (``run_core_tx``: the
    spend writer's seals). Returns the event's columns. Core statements either way, no
    mapped object: the ORM's flush cost more than the rest of the append, and building
    an ``AuditEvent`` a quarter of what was left.

    The head is first taken to be the one this connection last wrote, which it usually
    still is (one read less on every seal); the compare-and-set matches seq and hash, so
    a stale guess costs one read, never a fork."""
    c = conn.connection() if isinstance(conn, Session) else conn
    head, fresh = c.info.get(_LAST_HEAD), False
    while True:
        if head is None:
            head, fresh = tuple(c.execute(_HEAD).one()), True
        event = next_fields(head[0], head[1], workspace_id=workspace_id, actor=actor, action=action,
                            target=target, data=data)
        moved = c.execute(_MOVE, {"prev_seq": head[0], "prev_hash": head[1], "new_seq": event["seq"],
                                  "new_hash": event["hash"]}).rowcount
        if moved == 1:
            break
        if fresh:
            raise AuditConflict()
        head = None
    c.execute(_INSERT, event)
    c.info[_LAST_HEAD] = (event["seq"], event["hash"])  # stale if this transaction rolls back: see above
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
    # The spend ledger (store/spend_seal.py): seals checked, rows they cover, rows older than seals.
    seals: int = 0
    sealed_rows: int = 0
    unsealed_rows: int = 0


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
    """Walk the chain in order; report the first event whose link or hash is wrong, or
    whose spend seal no longer matches the rows that carry it (store/spend_seal.py)."""
    walk = ChainWalk(watch)
    last = seals = sealed_rows = 0
    while True:
        rows = (await session.execute(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        )).scalars().all()
        if not rows:
            break
        broken, sealed = None, []
        for ev in rows:
            broken = walk.step(ev.seq, ev.ts, ev.workspace_id, ev.actor, ev.action, ev.target, ev.data,
                               ev.prev_hash, ev.hash)
            if broken is not None:
                break
            if ev.action == spend_seal.ACTION:
                sealed.append(ev)
        # A seal before the broken link is the first thing broken.
        bad_seal = await spend_seal.first_broken(session, sealed) if sealed else None
        if bad_seal is not None:
            seq, reason = bad_seal
            return VerifyResult(False, seq - 1, seq, reason, hashes=walk.hashes)
        if broken is not None:
            return broken
        seals += len(sealed)
        sealed_rows += sum(ev.data["rows"] for ev in sealed)
        last = rows[-1].seq
    head = (await session.execute(_HEAD)).one()
    if head.seq > walk.count:
        return walk.broken(walk.count + 1, "events after the last one are missing")
    if head.seq != walk.count or head.hash != walk.prev_hash:
        return walk.broken(head.seq, "the head row does not point at the last event")
    stray = await spend_seal.first_stray(session)
    if stray is not None:
        seq, n = stray
        return VerifyResult(False, walk.count, seq, f"spend seal broken: {n} spend row(s) carry seq {seq}, "
                            "which is no spend seal in the chain (forged rows)", hashes=walk.hashes)
    result = walk.result()
    result.seals, result.sealed_rows = seals, sealed_rows
    result.unsealed_rows = await spend_seal.unsealed(session)
    return result

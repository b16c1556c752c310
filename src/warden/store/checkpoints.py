"""Signed checkpoints of the audit chain's head: the chain's anchor outside the database.

Whoever can write the database can delete the chain's tail and move
``audit_head`` back, or rewrite an event and recompute every later hash; the
chain stays self-consistent. A checkpoint is the head's ``(seq, hash)`` and the
time, signed with Ed25519 by a key the database never holds (vault/keyring.py
keeps it like the master key). :class:`Checkpointer` signs one every
``interval`` seconds when the head moved, and as soon as ``every`` events
arrived, appends it as one JSON line to an append-only file in the data dir,
and logs the same line (logger ``warden.audit.checkpoint``), so a copy lives
wherever the logs go.

Checking a chain against its checkpoints (:func:`check`): every checkpoint's
signature must verify, its event must exist and carry the signed hash. A
deleted tail leaves a checkpoint beyond the chain's end; a rewrite (hashes
recomputed or not) changes the hash of every later event, so the first
checkpoint after it no longer matches. Only the events after the latest
checkpoint are unanchored. The signer also refuses to sign a head that
contradicts its latest checkpoint, so a tampered chain never gets a fresh
signature.

An export (:func:`export_lines`) holds a header with the public key, the
checkpoints, then the events; :func:`verify_export` checks it with the public
key alone (``warden audit verify --export FILE --public-key KEY``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select

from warden.errors import WardenError
from warden.store import audit
from warden.store.audit import ChainWalk, VerifyResult, canonical
from warden.store.base import utcnow
from warden.store.db import Database
from warden.store.models import AuditEvent, AuditHead

log = logging.getLogger("warden.audit")
# Its own logger: its lines hold only hashes and signatures, which the redactor
# would otherwise blank as "secret-shaped" (see logs.py).
checkpoint_log = logging.getLogger("warden.audit.checkpoint")

FORMAT = "warden-audit-checkpoint/1"
EXPORT_FORMAT = "warden-audit-export/1"
# Without new events the head is read this often; ``every`` events are signed within it.
_POLL_S = 2.0


class CheckpointError(WardenError):
    """A checkpoint file or key that is not what it claims to be."""

    code = "audit_checkpoint_invalid"


# --- keys ----------------------------------------------------------------------


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Base64 of the raw 32-byte public key: what a third party is given."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise CheckpointError("public key: must be the base64 of exactly 32 bytes "
                              "(as `warden audit public-key` prints it)")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key_text(key).encode()).hexdigest()[:16]


# --- one checkpoint --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    ts: str  # ISO 8601, UTC, when it was signed
    key_id: str
    sig: str  # base64 Ed25519 signature over payload()

    def payload(self) -> bytes:
        return canonical({"format": FORMAT, "seq": self.seq, "hash": self.hash, "ts": self.ts,
                          "key_id": self.key_id})

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "ts": self.ts, "key_id": self.key_id, "sig": self.sig}

    def line(self) -> bytes:
        return orjson.dumps(self.to_dict()) + b"\n"

    @classmethod
    def of(cls, value: Any) -> Checkpoint:
        if not isinstance(value, dict) or set(value) != {"seq", "hash", "ts", "key_id", "sig"}:
            raise CheckpointError("not a checkpoint")
        seq, fields = value["seq"], [value[k] for k in ("hash", "ts", "key_id", "sig")]
        if type(seq) is not int or seq < 1 or not all(isinstance(f, str) for f in fields):
            raise CheckpointError("not a checkpoint")
        return cls(seq, *fields)

    def signed_by(self, public: Ed25519PublicKey) -> bool:
        try:
            public.verify(base64.b64decode(self.sig, validate=True), self.payload())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def sign(key: Ed25519PrivateKey, seq: int, hash: str) -> Checkpoint:
    unsigned = Checkpoint(seq, hash, utcnow().isoformat(timespec="microseconds"), key_id(key), "")
    return replace(unsigned, sig=base64.b64encode(key.sign(unsigned.payload())).decode())


# --- the file ----------------------------------------------------------------------


def append(path: Path, cp: Checkpoint) -> None:
    """One line, one write, O_APPEND: workers sharing a data dir never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, cp.line())
        os.fsync(fd)
    finally:
        os.close(fd)


def latest(path: Path, key: Ed25519PrivateKey, tail_bytes: int = 65536) -> Checkpoint | None:
    """The highest checkpoint ``key`` signed among the file's last lines (the file only grows)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - tail_bytes))
            lines = f.read().splitlines()[1 if size > tail_bytes else 0:]  # the first may be cut
    except FileNotFoundError:
        return None
    own, found = key_id(key), None
    for line in lines:
        try:
            cp = Checkpoint.of(orjson.loads(line))
        except (orjson.JSONDecodeError, CheckpointError):
            continue  # `warden audit verify` names it; signing goes on
        if cp.key_id == own and (found is None or cp.seq > found.seq):
            found = cp
    return found


def load(path: Path) -> list[Checkpoint]:
    """Every checkpoint in the file (none when it does not exist), in file order."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Checkpoint.of(orjson.loads(line)))
        except (orjson.JSONDecodeError, CheckpointError):
            raise CheckpointError(f"{path} line {n} is not a checkpoint: the file was altered") from None
    return out


# --- checking a chain ------------------------------------------------------------


def check(walked: VerifyResult, checkpoints: list[Checkpoint], public: Ed25519PublicKey) -> VerifyResult:
    """``walked`` (a sound chain walk that watched every checkpoint's seq) against
    the checkpoints: the first one that fails names what happened."""
    if not walked.ok:
        return walked
    own_id = key_id(public)
    for cp in checkpoints:
        if cp.key_id != own_id or not cp.signed_by(public):
            signer = "this key" if cp.key_id == own_id else f"key {cp.key_id}, not this key ({own_id})"
            return replace(walked, ok=False, broken_seq=cp.seq, reason=(
                f"the checkpoint of event {cp.seq} (signed {cp.ts}) does not verify with {signer}: "
                "the checkpoints were altered or come from another signing key"))
    anchored_seq, anchored_ts = 0, None
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        if cp.seq > walked.count:
            top = max(checkpoints, key=lambda c: c.seq)
            return replace(walked, ok=False, broken_seq=walked.count + 1, reason=(
                f"events {walked.count + 1}..{top.seq} are missing: a checkpoint signed {top.ts} covers "
                f"event {top.seq}, but the chain ends at event {walked.count} (its tail was deleted)"))
        if walked.hashes.get(cp.seq) != cp.hash:
            first = anchored_seq + 1
            where = f"at event {cp.seq}" if first == cp.seq else f"within events {first}..{cp.seq}"
            # Only the events up to the last matching checkpoint are known sound.
            return replace(walked, ok=False, count=anchored_seq, broken_seq=cp.seq, reason=(
                f"event {cp.seq} does not match the checkpoint signed {cp.ts}: the chain was "
                f"rewritten {where} and its hashes recomputed"))
        anchored_seq, anchored_ts = cp.seq, cp.ts
    return replace(walked, checkpoints=len(checkpoints), anchored_seq=anchored_seq, anchored_ts=anchored_ts)


async def verify_database(db: Database, checkpoints: list[Checkpoint], public: Ed25519PublicKey) -> VerifyResult:
    async with db.session() as s:
        walked = await audit.verify(s, watch={cp.seq for cp in checkpoints})
    return check(walked, checkpoints, public)


# --- exports -------------------------------------------------------------------------


def export_lines(public: Ed25519PublicKey, checkpoints: list[Checkpoint],
                 events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """A self-contained export: header, checkpoints, then every event, one JSON line each."""

    async def lines() -> AsyncIterator[bytes]:
        yield orjson.dumps({"format": EXPORT_FORMAT, "public_key": public_key_text(public)}) + b"\n"
        for cp in checkpoints:
            yield orjson.dumps({"checkpoint": cp.to_dict()}) + b"\n"
        async for event in events:
            yield orjson.dumps(event) + b"\n"

    return lines()


_EVENT_FIELDS = ("seq", "ts", "workspace_id", "actor", "action", "target", "data", "prev_hash", "hash")


def verify_export(lines: Iterable[bytes | str], public: Ed25519PublicKey) -> VerifyResult:
    """Check an export of :func:`export_lines` with the public key alone.

    The key embedded in the header is never trusted: the one given must match it.
    An export without a checkpoint fails (nothing anchors it).
    """
    it = (line for line in lines if line.strip())
    try:
        header = orjson.loads(next(it))
    except (StopIteration, orjson.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        return VerifyResult(False, 0, None, "not a signed export (`warden audit export --checkpoints`)")
    if header.get("public_key") != public_key_text(public):
        return VerifyResult(False, 0, None, "the export names another public key than the one given")
    checkpoints: list[Checkpoint] = []
    walk: ChainWalk | None = None
    for n, line in enumerate(it, 2):
        try:
            item = orjson.loads(line)
            if walk is None and isinstance(item, dict) and set(item) == {"checkpoint"}:
                checkpoints.append(Checkpoint.of(item["checkpoint"]))
                continue
            if not isinstance(item, dict) or set(item) != set(_EVENT_FIELDS):
                raise CheckpointError
        except (orjson.JSONDecodeError, CheckpointError):
            return VerifyResult(False, walk.count if walk else 0, None, f"line {n} is neither a checkpoint "
                                "(before the events) nor an event")
        walk = walk or ChainWalk({cp.seq for cp in checkpoints})
        try:
            broken = walk.step(*(item[k] for k in _EVENT_FIELDS))
        except (TypeError, ValueError, AttributeError):
            broken = walk.broken(walk.count + 1, f"line {n} is not a well-formed event")
        if broken is not None:
            return broken
    if not checkpoints:
        return VerifyResult(False, walk.count if walk else 0, None, "the export holds no checkpoint: "
                            "nothing outside it vouches for its events")
    return check((walk or ChainWalk()).result(), checkpoints, public)


# --- the signer ---------------------------------------------------------------------


class Checkpointer:
    """Signs the chain's head into ``path`` and the logs: every ``interval`` seconds
    when the head moved, within a poll of ``every`` new events, and at close."""

    def __init__(self, db: Database, key: Ed25519PrivateKey, path: Path, *, interval: float,
                 every: int) -> None:
        self.db, self.key, self.path = db, key, path
        self.public = key.public_key()
        self.interval, self.every = interval, every
        self.latest = latest(path, key)
        self._signed_at = time.monotonic()
        self._refused: tuple[int, str] | None = None  # the head last refused, logged once
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-checkpoints")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.checkpoint(force=True)  # anchor what this process (a CLI command too) wrote
        except Exception:  # noqa: BLE001 - the database may be gone at shutdown
            log.warning("audit checkpoint at close failed", exc_info=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(min(self.interval, _POLL_S))
            try:
                await self.checkpoint()
            except Exception:  # noqa: BLE001 - a database outage must not end the loop
                log.warning("audit checkpoint failed; retrying", exc_info=True)

    async def checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the head if it moved and one is due (``force``: whenever it moved).

        Returns the latest checkpoint, or None when there is none (empty chain, or a
        head that contradicts the latest checkpoint: refused and logged).
        """
        async with self._lock:
            async with self.db.session() as s:
                head = (await s.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).one()
                last = self.latest
                if head.seq == 0 or (last is not None and (head.seq, head.hash) == (last.seq, last.hash)):
                    return last
                due = (force or last is None or head.seq - last.seq >= self.every
                       or time.monotonic() - self._signed_at >= self.interval)
                if not due:
                    return last
                if last is not None:
                    signed = (await s.execute(select(AuditEvent.hash).where(AuditEvent.seq == last.seq))
                              ).scalar_one_or_none()
                    if signed != last.hash:
                        self._refuse(head.seq, head.hash, last)
                        return None
            cp = sign(self.key, head.seq, head.hash)
            await asyncio.to_thread(append, self.path, cp)
            checkpoint_log.info("audit checkpoint %s", cp.line().decode().strip())
            self.latest, self._signed_at, self._refused = cp, time.monotonic(), None
            return cp

    def _refuse(self, seq: int, hash: str, last: Checkpoint) -> None:
        if self._refused != (seq, hash):
            log.error("audit chain contradicts the checkpoint of event %d signed %s (run `warden audit "
                      "verify`): not signing its head (event %d)", last.seq, last.ts, seq)
        self._refused = (seq, hash)

"""The spend ledger's seals in the audit chain: the pure part and verify's checks.

A ``spend.sealed`` event (actor ``warden``) seals spend rows of one workspace:
its data is the rows' :func:`summary` -- how many, their cost in pico-USD, a
SHA-256 over their canonical form -- and the rows carry its seq
(``spend.audit_seq``). The sealer (store/spend_sealer.py) writes seals after the
fact, over the rows as stored; ``verify`` (store/audit.py) recomputes each seal
from the rows that carry its seq, so a deleted row, an edited cost or token
count, a forged row (with a real seal's seq or a made-up one) or a row moved to
another seal breaks a seal the way an edited event breaks the chain. Rows no
run has sealed yet carry no seq and are only counted (``unsealed``).

The digest is over the fields that say who spent what, when: workspace, request,
key, agent, credential, provider, model, the five token counts, the cost, the
time, the status and the coding session; not the measurements (latency, TTFT,
attempts). Each row's form is a JSON list in a fixed order; the digest hashes the
sorted forms, so it does not depend on the order the database returns them in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from warden.store.models import AuditEvent, SpendRow

ACTION = "spend.sealed"
ACTOR = "warden"
_IN_CHUNK = 500  # seqs per query: far below every driver's bound-parameter limit
# What a row's form holds, in order (as the database gives it back); "cost_usd" and "ts" are normalized.
FIELDS = ("workspace_id", "request_id", "api_key_id", "agent_id", "credential_id", "provider", "model",
          "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
          "cost_usd", "ts", "status", "session_id")
COLUMNS = [getattr(SpendRow, f) for f in FIELDS]


def _pico(cost: Decimal | None) -> int | None:
    return None if cost is None else int(cost.scaleb(12).to_integral_value(ROUND_HALF_UP))


def _form(row: Mapping[str, Any]) -> tuple[bytes, int]:
    """One row's canonical bytes and its cost in pico-USD (0 when unknown)."""
    values = [row[f] for f in FIELDS]
    pico = _pico(values[12])
    values[12] = pico
    values[13] = row["ts"].astimezone(UTC).isoformat(timespec="microseconds")
    return orjson.dumps(values), pico or 0


def summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A seal's data: the rows' count, total cost (pico-USD, exact) and digest."""
    forms, total = [], 0
    for row in rows:
        form, pico = _form(row)
        forms.append(form)
        total += pico
    forms.sort()
    return {"rows": len(forms), "cost_pico": total, "digest": hashlib.sha256(b"\n".join(forms)).hexdigest()}


def _difference(sealed: Mapping[str, Any], found: dict[str, Any]) -> str:
    what = []
    if sealed.get("rows") != found["rows"]:
        what.append(f"{found['rows']} row(s) carry it, it sealed {sealed.get('rows')}")
    if sealed.get("cost_pico") != found["cost_pico"]:
        what.append(f"their cost is {found['cost_pico']} pico-USD, it sealed {sealed.get('cost_pico')}")
    if not what:
        what.append("their contents differ from what it sealed")
    return "spend seal broken: " + "; ".join(what)


async def first_broken(s: AsyncSession, seals: Sequence[AuditEvent]) -> tuple[int, str] | None:
    """The first of ``seals`` (``spend.sealed`` events, in chain order) whose rows no
    longer match it: its seq and what differs."""
    rows: dict[int, list[Any]] = {}
    seqs = [ev.seq for ev in seals]
    for i in range(0, len(seqs), _IN_CHUNK):
        q = select(SpendRow.audit_seq, *COLUMNS).where(SpendRow.audit_seq.in_(seqs[i:i + _IN_CHUNK]))
        for r in (await s.execute(q)).mappings():
            rows.setdefault(r["audit_seq"], []).append(r)
    for ev in seals:
        found = summary(rows.get(ev.seq, ()))
        if found != ev.data:
            return ev.seq, _difference(ev.data, found)
    return None


async def unsealed(s: AsyncSession) -> int:
    """How many spend rows carry no seal yet: the tail the sealer has not reached."""
    return int((await s.execute(select(func.count()).where(SpendRow.audit_seq.is_(None)))).scalar_one())


async def first_stray(s: AsyncSession) -> tuple[int, int] | None:
    """The lowest seq that spend rows carry but no ``spend.sealed`` event has, and how
    many rows carry it (rows forged with a made-up seal)."""
    q = (select(SpendRow.audit_seq, func.count())
         .outerjoin(AuditEvent, (AuditEvent.seq == SpendRow.audit_seq) & (AuditEvent.action == ACTION))
         .where(SpendRow.audit_seq.is_not(None), AuditEvent.seq.is_(None))
         .group_by(SpendRow.audit_seq).order_by(SpendRow.audit_seq).limit(1))
    found = (await s.execute(q)).first()
    return None if found is None else (int(found[0]), int(found[1]))

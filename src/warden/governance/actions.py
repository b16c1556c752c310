"""An agent's actions, explained (issue 17): one list, newest first, of everything an
agent did, whatever its kind: the tool calls an external agent asked the gate about
(``governed_calls``), the tool calls of its hosted runs (``tool_calls``), and its model
calls (the spend ledger, one row per gateway request) -- each tool call with its
level, decision, rule, the approval that held it and who decided it, its outcome and
the hashes of its arguments and result; each model call with its tokens and its cost
as the ledger stores it. Totals count the whole history, not the page.

Arguments are never shown raw: where Warden kept them (a hosted run's call, an
external call's approval) they pass ``mask_arguments``; otherwise only their hash.
An admin sees every row of the agent; any other key the rows it made itself.

Pages are a keyset over (time, source, id) across the three sources: each asks
every source for at most ``limit`` rows older than the cursor, and merges them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, case, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from warden.agents.secrets_mask import mask_arguments
from warden.errors import ValidationFailed
from warden.governance.gate import arguments_hash
from warden.governance.maturity import find_agent
from warden.state.base import from_pico
from warden.store.agent_models import Run, ToolCallRecord
from warden.store.db import Database
from warden.store.gate_models import GovernedCallRow
from warden.store.governance_models import Approval
from warden.store.models import SpendRow
from warden.store.spend import pico_sum
from warden.tenancy.accounts import Principal

MAX_PAGE = 200
REFUSED = ("denied", "rejected", "expired")  # statuses of a call that was not run because it was refused
# Sources, in the order they sort at the same instant (the cursor names one).
GOVERNED, HOSTED, MODEL = "g", "h", "m"
_Key = tuple[datetime, str, Any]


class ApprovalRef(BaseModel):
    id: str
    status: str  # pending | approved | rejected | expired | cancelled
    decided_by: str | None
    decided_at: datetime | None
    note: str | None


class ToolCallAction(BaseModel):
    kind: Literal["tool_call"] = "tool_call"
    id: str  # act_… (an external agent's governed call) or tc_… (a hosted run's)
    at: datetime
    source: str  # run (hosted) | mcp | api | hook:claude-code | hook:codex
    run_id: str | None
    tool: str
    level: int | None
    decision: str  # the policy's answer: allow | approve (a human decides) | deny
    status: str  # where the call ended
    rule: str | None
    reason: str | None
    approval: ApprovalRef | None
    outcome: Literal["ok", "error"] | None  # None: it did not run (yet)
    arguments_hash: str
    result_hash: str | None
    arguments: Any = None  # masked; None where only the hash was kept


class ModelCallAction(BaseModel):
    kind: Literal["model_call"] = "model_call"
    id: str  # "spend:<ledger row>"
    at: datetime
    request_id: str
    provider: str | None
    model: str | None
    status: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: str | None  # exact dollars, fixed-point, as the ledger stores them; None: no price known
    latency_ms: float | None
    audit_seq: int | None  # the audit event (spend.sealed) that seals this row; None: not sealed yet


Action = Annotated[ToolCallAction | ModelCallAction, Field(discriminator="kind")]


class ActionTotals(BaseModel):
    actions: int
    tool_calls: int
    model_calls: int
    held: int  # tool calls that waited for a human
    denied: int  # tool calls refused (by policy, a human, or an expired approval)
    cost_usd: str  # the model calls' cost, summed exactly (pico-USD), fixed-point


class ActionsPage(BaseModel):
    agent_id: str
    agent: str
    agent_kind: str
    actions: list[Action]
    totals: ActionTotals
    next_cursor: str | None  # pass as ``before`` for the next (older) page


def encode_cursor(key: _Key) -> str:
    at, source, ident = key
    return base64.urlsafe_b64encode(orjson.dumps([at.isoformat(), source, str(ident)])).decode().rstrip("=")


def decode_cursor(cursor: str) -> _Key:
    bad = ValidationFailed("before: not a cursor of this list (pass next_cursor back as it is)", param="before")
    try:
        at, source, ident = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(at)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        raise bad from None
    if when.tzinfo is None or source not in (GOVERNED, HOSTED, MODEL) or not isinstance(ident, str) or not ident:
        raise bad
    if source == MODEL:
        if not (ident.isascii() and ident.isdigit() and len(ident) <= 18):  # "²" is a digit; BIGINT fits 18
            raise bad
        return when, source, int(ident)
    return when, source, ident


def _older(ts: Any, ident: Any, source: str, cursor: _Key | None) -> ColumnElement[bool]:
    """Rows of ``source`` that sort after ``cursor`` in (time, source, id) descending order."""
    if cursor is None:
        return true()
    at, c_source, c_id = cursor
    if source < c_source:
        return ts <= at
    if source > c_source:
        return ts < at
    return or_(ts < at, and_(ts == at, ident < c_id))


def _usd(amount: Decimal) -> str:
    return f"{amount:f}"  # never exponent notation ("1.2E-11"): scripts and people read it


def _outcome(status: str, is_error: bool | None) -> Literal["ok", "error"] | None:
    if status in ("completed", "failed", "timeout", "interrupted"):
        return "error" if is_error or status != "completed" else "ok"
    return None


def _approval(a: Approval | None) -> ApprovalRef | None:
    return None if a is None else ApprovalRef(id=a.id, status=a.status, decided_by=a.decided_by,
                                              decided_at=a.decided_at, note=a.note)


def _parsed(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # the model sent malformed JSON: still text (hashed and masked as a string)


async def _approvals(s: AsyncSession, column: Any, ids: Sequence[str]) -> dict[str, Approval]:
    if not ids:
        return {}
    rows = (await s.execute(select(Approval).where(column.in_(list(ids))))).scalars()
    return {getattr(a, column.key): a for a in rows}


class _Query:
    def __init__(self, s: AsyncSession, db: Database, principal: Principal, agent_id: str) -> None:
        self.s, self.db, self.principal, self.agent_id = s, db, principal, agent_id

    def _mine(self, column: Any) -> ColumnElement[bool]:
        return true() if self.principal.is_admin else column == self.principal.key_id

    def _governed_where(self) -> list[ColumnElement[bool]]:
        G = GovernedCallRow
        return [G.workspace_id == self.principal.workspace_id, G.agent_id == self.agent_id, self._mine(G.api_key_id)]

    def _hosted_where(self) -> list[ColumnElement[bool]]:
        return [Run.workspace_id == self.principal.workspace_id, Run.agent_id == self.agent_id,
                self._mine(Run.api_key_id)]

    def _model_where(self) -> list[ColumnElement[bool]]:
        S = SpendRow
        return [S.workspace_id == self.principal.workspace_id, S.agent_id == self.agent_id, self._mine(S.api_key_id)]

    async def governed(self, cursor: _Key | None, n: int) -> list[tuple[_Key, ToolCallAction]]:
        G = GovernedCallRow
        rows = list((await self.s.execute(select(G).where(
            *self._governed_where(), _older(G.created_at, G.id, GOVERNED, cursor))
            .order_by(G.created_at.desc(), G.id.desc()).limit(n))).scalars())
        held = await _approvals(self.s, Approval.id, [r.approval_id for r in rows if r.approval_id])
        out = []
        for r in rows:
            a = held.get(r.approval_id or "")
            out.append(((r.created_at, GOVERNED, r.id), ToolCallAction(
                id=r.id, at=r.created_at, source=r.source, run_id=None, tool=r.tool, level=r.level,
                decision=r.decision, status=r.status, rule=r.rule, reason=r.reason, approval=_approval(a),
                outcome=_outcome(r.status, r.is_error), arguments_hash=r.arguments_hash,
                result_hash=r.result_hash,
                arguments=mask_arguments(_parsed(a.arguments)) if a is not None else None)))
        return out

    async def hosted(self, cursor: _Key | None, n: int) -> list[tuple[_Key, ToolCallAction]]:
        T = ToolCallRecord
        rows = list((await self.s.execute(select(T).join(Run, T.run_id == Run.id).where(
            *self._hosted_where(), _older(T.started_at, T.id, HOSTED, cursor))
            .order_by(T.started_at.desc(), T.id.desc()).limit(n))).scalars())
        held = await _approvals(self.s, Approval.tool_call_id, [r.id for r in rows if r.decision == "approve"])
        out = []
        for r in rows:
            args = _parsed(r.arguments)  # hashed as the gate hashes an external call's (same value, same hash)
            out.append(((r.started_at, HOSTED, r.id), ToolCallAction(
                id=r.id, at=r.started_at, source="run", run_id=r.run_id, tool=r.name, level=r.risk_level,
                decision=r.decision, status=r.status, rule=r.rule, reason=r.reason,
                approval=_approval(held.get(r.id)), outcome=_outcome(r.status, r.is_error),
                arguments_hash=arguments_hash(args),
                result_hash=None if r.result is None else arguments_hash(r.result),
                arguments=mask_arguments(args))))
        return out

    async def model(self, cursor: _Key | None, n: int) -> list[tuple[_Key, ModelCallAction]]:
        S = SpendRow
        rows = list((await self.s.execute(select(S).where(
            *self._model_where(), _older(S.ts, S.id, MODEL, cursor))
            .order_by(S.ts.desc(), S.id.desc()).limit(n))).scalars())
        return [((r.ts, MODEL, r.id), ModelCallAction(
            id=f"spend:{r.id}", at=r.ts, request_id=r.request_id, provider=r.provider, model=r.model,
            status=r.status, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
            cache_read_tokens=r.cache_read_tokens, cache_write_tokens=r.cache_write_tokens,
            reasoning_tokens=r.reasoning_tokens, cost_usd=None if r.cost_usd is None else _usd(r.cost_usd),
            latency_ms=None if r.latency_ms is None else float(r.latency_ms), audit_seq=r.audit_seq))
            for r in rows]

    async def totals(self) -> ActionTotals:
        G, T = GovernedCallRow, ToolCallRecord
        g = (await self.s.execute(select(
            func.count(), func.sum(case((G.decision == "approve", 1), else_=0)),
            func.sum(case((G.status.in_(REFUSED), 1), else_=0))).where(*self._governed_where()))).one()
        h = (await self.s.execute(select(
            func.count(), func.sum(case((T.decision == "approve", 1), else_=0)),
            func.sum(case((T.status.in_(REFUSED), 1), else_=0))).select_from(T).join(Run, T.run_id == Run.id)
            .where(*self._hosted_where()))).one()
        m = (await self.s.execute(select(func.count(), pico_sum(self.db)).where(*self._model_where()))).one()
        tools = int(g[0]) + int(h[0])
        return ActionTotals(actions=tools + int(m[0]), tool_calls=tools, model_calls=int(m[0]),
                            held=int(g[1] or 0) + int(h[1] or 0), denied=int(g[2] or 0) + int(h[2] or 0),
                            cost_usd=_usd(from_pico(int(m[1] or 0))))


async def list_actions(db: Database, principal: Principal, agent_ref: str, *, limit: int = 50,
                       before: str | None = None) -> ActionsPage:
    """The agent's (id or name, in the caller's workspace) actions older than ``before``."""
    cursor = decode_cursor(before) if before else None
    limit = max(1, min(limit, MAX_PAGE))
    async with db.session() as s:
        agent = await find_agent(s, principal.workspace_id, agent_ref)
        q = _Query(s, db, principal, agent.id)
        merged: list[tuple[_Key, ToolCallAction | ModelCallAction]] = [
            *await q.governed(cursor, limit + 1), *await q.hosted(cursor, limit + 1),
            *await q.model(cursor, limit + 1)]
        totals = await q.totals()
    merged.sort(key=lambda kv: kv[0], reverse=True)
    page = merged[:limit]
    return ActionsPage(agent_id=agent.id, agent=agent.name, agent_kind=agent.kind, actions=[a for _, a in page],
                       totals=totals, next_cursor=encode_cursor(page[-1][0]) if len(merged) > limit else None)

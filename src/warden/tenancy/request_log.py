"""The request log: a workspace's gateway requests one by one (newest first), read from
the spend ledger with filters and keyset paging; and one request by its id.

A spend row is what the gateway keeps of a request: key, agent, provider and model
that answered, tokens, cost (None: no price known), latency, attempts, status and
the credential used. The ledger is the one home of these facts, so the console's
request pages read it here rather than keeping a second log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from warden.store.db import Database
from warden.store.models import SpendRow

MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """Every field narrows the log; None (or empty) leaves it open."""

    key_id: str | None = None
    agent_id: str | None = None
    model: str | None = None  # the model that answered (exact), or "provider/model"
    status: str | None = None  # "ok", an error's status, or "error" for every non-ok one
    since: datetime | None = None
    until: datetime | None = None


async def list_requests(db: Database, workspace_id: str, filters: RequestFilter = RequestFilter(), *,
                        limit: int = 50, before: int | None = None) -> tuple[list[SpendRow], int | None]:
    """Rows newest first, older than the row id ``before``; returns (rows, cursor of the next page)."""
    limit = max(1, min(limit, MAX_PAGE))
    q = select(SpendRow).where(SpendRow.workspace_id == workspace_id)
    if filters.key_id:
        q = q.where(SpendRow.api_key_id == filters.key_id)
    if filters.agent_id:
        q = q.where(SpendRow.agent_id == filters.agent_id)
    if filters.model:
        provider, slash, model = filters.model.partition("/")
        q = (q.where(SpendRow.provider == provider, SpendRow.model == model) if slash and model
             else q.where(SpendRow.model == filters.model))
    if filters.status == "error":
        q = q.where(SpendRow.status != "ok")
    elif filters.status:
        q = q.where(SpendRow.status == filters.status)
    if filters.since is not None:
        q = q.where(SpendRow.ts >= filters.since)
    if filters.until is not None:
        q = q.where(SpendRow.ts < filters.until)
    if before is not None:
        q = q.where(SpendRow.id < before)
    async with db.session() as s:
        rows = list((await s.execute(q.order_by(SpendRow.id.desc()).limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


async def get_request(db: Database, workspace_id: str, request_id: str) -> list[SpendRow]:
    """The ledger rows of one request id in this workspace (one per request; a retried
    client may reuse its id, so every row is returned, oldest first)."""
    async with db.session() as s:
        return list((await s.execute(select(SpendRow).where(
            SpendRow.workspace_id == workspace_id, SpendRow.request_id == request_id)
            .order_by(SpendRow.id).limit(20))).scalars())

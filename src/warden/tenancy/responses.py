"""Stored responses (the Responses API's ``store: true``): saved per workspace,
read back, continued from, listed and deleted; each expires ``ttl_s`` after it
was written (``WARDEN_RESPONSES_TTL``). Every read names the workspace, so a
response id from another workspace is simply not found. Expired rows are hidden
at once and deleted in the background of later writes (at most once a minute)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import delete, insert, select

from warden.errors import NotFound
from warden.store.base import utcnow
from warden.store.db import Database
from warden.store.response_models import StoredResponse

log = logging.getLogger("warden.tenancy.responses")
PURGE_EVERY_S = 60.0
# Output items a follow-up request continues from (everything a model said).
_CONTINUED = frozenset({"message", "function_call", "reasoning"})


class StoredResponses:
    def __init__(self, db: Database, *, ttl_s: float) -> None:
        self._db = db
        self._ttl = timedelta(seconds=ttl_s)
        self._purged = 0.0

    async def save(self, workspace_id: str, response: dict[str, Any], *, history: list[dict[str, Any]],
                   input_items: list[dict[str, Any]]) -> None:
        now = utcnow()
        async with self._db.transaction() as s:  # one Core insert: on the reply's path
            await s.execute(insert(StoredResponse).values(
                id=response["id"], workspace_id=workspace_id, response=response, history=history,
                input_items=input_items, created_at=now, expires_at=now + self._ttl))
        if time.monotonic() - self._purged >= PURGE_EVERY_S:
            self._purged = time.monotonic()
            await self.purge_expired()

    async def purge_expired(self) -> int:
        async with self._db.transaction() as s:
            result = await s.execute(delete(StoredResponse).where(StoredResponse.expires_at < utcnow()))
        count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            log.info("expired stored responses deleted: %d", count)
        return count

    async def _row(self, workspace_id: str, response_id: str, *, param: str | None = None) -> StoredResponse:
        async with self._db.session() as s:
            row = await s.scalar(select(StoredResponse).where(
                StoredResponse.id == response_id, StoredResponse.workspace_id == workspace_id,
                StoredResponse.expires_at >= utcnow()))
        if row is None:
            raise NotFound(f"no stored response with id {response_id!r}", param=param,
                           code="previous_response_not_found" if param else "response_not_found")
        return row

    async def get(self, workspace_id: str, response_id: str) -> dict[str, Any]:
        return (await self._row(workspace_id, response_id)).response

    async def conversation(self, workspace_id: str, response_id: str) -> list[dict[str, Any]]:
        """The items a follow-up of ``response_id`` continues from: its history, input and output."""
        row = await self._row(workspace_id, response_id, param="previous_response_id")
        output = [i for i in row.response.get("output", []) if i.get("type") in _CONTINUED]
        return [*row.history, *row.input_items, *output]

    async def delete(self, workspace_id: str, response_id: str) -> None:
        async with self._db.transaction() as s:
            result = await s.execute(delete(StoredResponse).where(
                StoredResponse.id == response_id, StoredResponse.workspace_id == workspace_id))
        if not getattr(result, "rowcount", 0):
            raise NotFound(f"no stored response with id {response_id!r}", code="response_not_found")

    async def input_items(self, workspace_id: str, response_id: str, *, after: str | None = None,
                          limit: int = 20, order: Literal["asc", "desc"] = "desc") -> tuple[list[dict[str, Any]], bool]:
        """A page of the items the response was made from (its history and input), and whether more follow."""
        row = await self._row(workspace_id, response_id)
        items = [*row.history, *row.input_items]
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [i.get("id") for i in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return items[:limit], len(items) > limit

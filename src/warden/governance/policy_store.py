"""A workspace's governance policy: stored as JSON in SQL, cached for the hot path.

The run loop asks for the policy once per run (``policy_for``); a dict lookup
while the cached copy is fresh. A change drops this instance's copy at once and
is broadcast through the state store so other instances drop theirs; the TTL
bounds the delay if that message is lost. Overrides may only tighten the matrix,
so the API accepts only ``approve`` and ``deny`` as override outcomes.
``approvals.require_second_person``: the key that started a run may not approve
its actions (it may still reject them); someone else must.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from warden.errors import ValidationFailed, field_path
from warden.agents.policy import LEVELS, TIERS, WorkspacePolicy
from warden.state.base import FLUSH_ALL
from warden.store import audit
from warden.store.db import Database
from warden.store.governance_models import GovernancePolicyRow
from warden.store.base import utcnow

TOPIC = "governance_policy"  # invalidation topic; key: workspace id
Tightening = Literal["approve", "deny"]
Notify = Callable[[str, str], Awaitable[None]]


class ApprovalRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_second_person: StrictBool = False


# What the validators below check, told to the OpenAPI document too.
_LEVEL_KEYS = {"propertyNames": {"pattern": "^(" + "|".join(map(str, LEVELS)) + ")$"}}
_CELL_KEYS = {"propertyNames": {"pattern": f"^({'|'.join(TIERS)}):({'|'.join(map(str, LEVELS))})$"}}


class PolicyBody(BaseModel):
    """The wire and storage shape of a workspace policy."""

    model_config = ConfigDict(extra="forbid")

    levels: dict[int, Tightening] = Field(default_factory=dict, json_schema_extra=_LEVEL_KEYS)  # {"4": "approve"}
    tools: dict[str, Tightening] = Field(default_factory=dict)  # {"http_request": "deny"}
    cells: dict[str, Tightening] = Field(default_factory=dict, json_schema_extra=_CELL_KEYS)  # {"intern:2": …}
    agents: dict[str, dict[int, Tightening]] = Field(  # {"agt_…": {"3": "deny"}}
        default_factory=dict, json_schema_extra={"additionalProperties": {
            "type": "object", **_LEVEL_KEYS, "additionalProperties": {"enum": ["approve", "deny"]}}})
    auto_promote: StrictBool = False  # promote on evidence without an admin's confirmation
    approvals: ApprovalRules = Field(default_factory=ApprovalRules)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: dict[int, str]) -> dict[int, str]:
        _check_levels(v)
        return v

    @field_validator("agents")
    @classmethod
    def _agent_levels(cls, v: dict[str, dict[int, str]]) -> dict[str, dict[int, str]]:
        for levels in v.values():
            _check_levels(levels)
        return v

    @field_validator("cells")
    @classmethod
    def _cells(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            tier, _, level = key.partition(":")
            if tier not in TIERS or not level.isdigit() or int(level) not in LEVELS:
                raise ValueError(f"cell '{key[:40]}' must be '<tier>:<level>', e.g. 'intern:2'")
        return v

    def to_policy(self) -> WorkspacePolicy | None:
        if not (self.levels or self.tools or self.cells or self.agents):
            return None  # the plain matrix: decide() skips the override scan
        cells = {(k.partition(":")[0], int(k.partition(":")[2])): o for k, o in self.cells.items()}
        return WorkspacePolicy(cells=cells, levels=dict(self.levels), tools=dict(self.tools),
                               agents={a: dict(m) for a, m in self.agents.items()})

    def overrides_json(self) -> dict[str, Any]:
        return {"levels": {str(k): v for k, v in sorted(self.levels.items())}, "tools": dict(self.tools),
                "cells": dict(self.cells),
                "agents": {a: {str(k): o for k, o in sorted(m.items())} for a, m in self.agents.items()}}

    def stored_json(self) -> dict[str, Any]:
        """The JSON column: the overrides and the approval rules (``auto_promote`` has its own)."""
        return {**self.overrides_json(), "approvals": self.approvals.model_dump()}

    def view(self) -> dict[str, Any]:
        return {**self.stored_json(), "auto_promote": self.auto_promote}


def _check_levels(levels: dict[int, str]) -> None:
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"risk level {level} must be 1-4")


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    body: PolicyBody
    policy: WorkspacePolicy | None
    version: int
    updated_at: datetime | None
    updated_by: str | None

    def view(self) -> dict[str, Any]:
        return {**self.body.view(), "version": self.version, "updated_at": self.updated_at,
                "updated_by": self.updated_by}


_EMPTY = StoredPolicy(PolicyBody(), None, 0, None, None)


def parse_policy(data: dict[str, Any]) -> PolicyBody:
    try:
        return PolicyBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] != "literal_error":
            raise ValidationFailed.of(exc, where="policy") from None
        where = field_path(first["loc"], "policy")
        msg = "overrides may only tighten the matrix: use 'approve' or 'deny'"
        raise ValidationFailed(f"{where}: {msg}", param=where) from None


class PolicyStore:
    def __init__(self, db: Database, *, cache_ttl: float = 3.0,
                 notify: Notify | None = None) -> None:
        self.db = db
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, StoredPolicy]] = {}
        self.notify = notify  # the broadcast to other instances; None: this instance only

    async def policy_for(self, workspace_id: str) -> WorkspacePolicy | None:
        """The run loop's policy source."""
        return (await self.get(workspace_id)).policy

    async def get(self, workspace_id: str) -> StoredPolicy:
        hit = self._cache.get(workspace_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self.db.session() as s:
            stored = await self.load(s, workspace_id)
        self._cache[workspace_id] = (now + self.cache_ttl, stored)
        return stored

    @staticmethod
    async def load(s: AsyncSession, workspace_id: str) -> StoredPolicy:
        row = await s.get(GovernancePolicyRow, workspace_id)
        if row is None:
            return _EMPTY
        body = PolicyBody.model_validate({**row.policy, "auto_promote": row.auto_promote})
        return StoredPolicy(body, body.to_policy(), row.version, row.updated_at, row.updated_by)

    async def put(self, workspace_id: str, data: dict[str, Any], *, actor: str) -> StoredPolicy:
        """Replace the workspace's policy (audited with the old and new versions)."""
        body = parse_policy(data)

        async def tx(s: AsyncSession) -> StoredPolicy:
            row = await s.get(GovernancePolicyRow, workspace_id, with_for_update=True)
            old = await self.load(s, workspace_id)
            if row is None:
                row = GovernancePolicyRow(workspace_id=workspace_id, version=0)
                s.add(row)
            row.policy, row.auto_promote = body.stored_json(), body.auto_promote
            row.version, row.updated_by, row.updated_at = (row.version or 0) + 1, actor, utcnow()
            await s.flush()
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="governance.policy_update",
                               target=workspace_id, data={
                                   "version": row.version,
                                   "before": old.body.view(), "after": body.view()})
            return StoredPolicy(body, body.to_policy(), row.version, row.updated_at, row.updated_by)

        stored = await self.db.run_tx(tx)
        self.invalidate(workspace_id)
        if self.notify is not None:
            await self.notify(TOPIC, workspace_id)
        return stored

    def invalidate(self, workspace_id: str | None = None) -> None:
        if workspace_id is None:
            self._cache.clear()
        else:
            self._cache.pop(workspace_id, None)

    def on_message(self, topic: str, key: str) -> None:
        """Invalidation subscriber: another instance changed a policy (or the store reconnected)."""
        if topic == TOPIC:
            self.invalidate(key)
        elif topic == FLUSH_ALL:  # the store reconnected: messages may have been lost
            self.invalidate()

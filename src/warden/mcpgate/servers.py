"""Workspace-level MCP servers: upstreams every agent of a workspace gets through
``/mcp``, beside its own ``mcp_servers``. Only an admin adds or removes one, so an
entry is trusted (its tools' ``readOnlyHint`` counts, see ``agents/tools/mcp.py``);
a stdio command must be on ``WARDEN_MCP_STDIO_ALLOW``, as for an agent's.

Read on every ``/mcp`` request, so kept for a couple of seconds per workspace (an
instance that did not make a change sees it within that TTL).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from warden.agents.secrets_mask import redacted_servers
from warden.agents.tools.mcp import McpServerConfig, parse_servers
from warden.errors import Conflict, NotFound, ValidationFailed
from warden.store import audit
from warden.store.base import new_id, utcnow
from warden.store.db import Database
from warden.store.mcp_models import WorkspaceMcpServer

CheckServers = Callable[[list[dict[str, Any]], bool], None]


def view(row: WorkspaceMcpServer) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "config": redacted_servers([row.config])[0],
            "created_by": row.created_by, "created_at": row.created_at.isoformat()}


class WorkspaceServers:
    def __init__(self, db: Database, check_servers: CheckServers, *, cache_ttl: float = 2.0) -> None:
        self.db = db
        self._check = check_servers
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, list[McpServerConfig]]] = {}

    async def configs(self, workspace_id: str) -> list[McpServerConfig]:
        hit = self._cache.get(workspace_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        async with self.db.session() as s:
            rows = (await s.execute(select(WorkspaceMcpServer.config).where(
                WorkspaceMcpServer.workspace_id == workspace_id).order_by(WorkspaceMcpServer.name))).scalars()
            configs = parse_servers([{**c, "trusted": True} for c in rows])
        self._cache[workspace_id] = (time.monotonic() + self.cache_ttl, configs)
        return configs

    async def list(self, workspace_id: str) -> list[dict[str, Any]]:
        async with self.db.session() as s:
            rows = (await s.execute(select(WorkspaceMcpServer).where(
                WorkspaceMcpServer.workspace_id == workspace_id).order_by(WorkspaceMcpServer.name))).scalars()
            return [view(r) for r in rows]

    async def add(self, workspace_id: str, config: dict[str, Any], *, actor: str) -> dict[str, Any]:
        """Store one server entry (ValidationFailed / Forbidden for a bad one, Conflict for a taken name)."""
        if not isinstance(config, dict):
            raise ValidationFailed("the body is one MCP server entry (an object)", param="config")
        entry = {k: v for k, v in config.items() if k != "trusted"}
        (parsed,) = parse_servers([entry])
        self._check([entry], True)
        stored = parsed.model_dump(mode="json", exclude={"trusted"}, exclude_defaults=True)
        stored["name"], stored["transport"] = parsed.name, parsed.transport

        async def tx(s: AsyncSession) -> WorkspaceMcpServer:
            row = WorkspaceMcpServer(id=new_id("mcps"), workspace_id=workspace_id, name=parsed.name,
                                     config=stored, created_by=actor, created_at=utcnow())
            s.add(row)
            await s.flush()
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="mcp_server.add",
                               target=row.id, data={"name": parsed.name, "transport": parsed.transport})
            return row

        try:
            row = await self.db.run_tx(tx)
        except IntegrityError:
            raise Conflict(f"an MCP server named {parsed.name!r} exists in this workspace",
                           code="mcp_server_exists") from None
        self._cache.pop(workspace_id, None)
        return view(row)

    async def remove(self, workspace_id: str, name: str, *, actor: str) -> None:
        async def tx(s: AsyncSession) -> bool:
            gone = await s.execute(delete(WorkspaceMcpServer).where(
                WorkspaceMcpServer.workspace_id == workspace_id, WorkspaceMcpServer.name == name)
                .returning(WorkspaceMcpServer.id))
            found = gone.scalar_one_or_none()
            if found is None:
                return False
            await audit.append(s, workspace_id=workspace_id, actor=actor, action="mcp_server.remove",
                               target=found, data={"name": name})
            return True

        if not await self.db.run_tx(tx):
            raise NotFound(f"no MCP server named {name!r} in this workspace", code="mcp_server_not_found")
        self._cache.pop(workspace_id, None)

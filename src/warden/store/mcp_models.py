"""Workspace-level MCP servers (migration 0013): upstreams the MCP gateway (``/mcp``)
offers to every agent of the workspace, beside each agent's own ``mcp_servers``.

``config`` is one server entry in the format of ``agents/tools/mcp.py``
(``McpServerConfig``), as an admin sent it; like an agent's entries it is shown
only with its header, env and URL secrets masked (``agents/secrets_mask.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from warden.store.base import Base, UTCDateTime, utcnow


class WorkspaceMcpServer(Base):
    __tablename__ = "mcp_servers"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_mcp_servers_workspace_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

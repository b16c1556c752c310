"""What the tools need from the process (``ToolDeps``), built once from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from warden.agents.tools.base import MAX_RESULT_BYTES
from warden.agents.tools.egress import EgressPolicy
from warden.store.db import Database

if TYPE_CHECKING:
    from warden.config import Settings


@dataclass(frozen=True, slots=True)
class ToolDeps:
    """What the tools need from the process, built once from settings and services."""

    db: Database  # memory tools
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # HTTP tools and MCP-over-HTTP hosts
    mcp_stdio_allow: tuple[str, ...] = ()  # executables a stdio MCP server may run
    mcp_connect_timeout: float = 15.0  # start + initialize + list_tools, per server
    mcp_call_timeout: float = 60.0  # one tools/call
    max_result_bytes: int = MAX_RESULT_BYTES  # what one tool result may put in front of the model

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, **overrides: Any) -> ToolDeps:
        return cls(db=db, egress=EgressPolicy.from_entries(settings.egress_allow_list),
                   mcp_stdio_allow=tuple(settings.mcp_stdio_allow_list), **overrides)

"""Builds an agent's toolbox at load: built-in and MCP tools through
``toolbox.build_toolbox``, plus any in-process plugin tools registered here
(embedders and tests add their own tools this way).

The tool stack (built-in tools, httpx, the MCP SDK: ~20 MB resident) is
imported on first use, so a process that only serves the gateway never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from warden.agents.tools.base import Tool
from warden.store.agent_models import Agent

if TYPE_CHECKING:
    from warden.agents.tools.deps import ToolDeps
    from warden.agents.tools.toolbox import Toolbox


class ToolboxLoader:
    def __init__(self, deps: Callable[[], ToolDeps], *, mcp_stdio_allow: list[str] | None = None) -> None:
        self._make_deps = deps
        self._deps: ToolDeps | None = None
        self._stdio_allow = list(mcp_stdio_allow or [])
        self.plugins: dict[str, Tool] = {}

    @property
    def deps(self) -> ToolDeps:
        if self._deps is None:
            self._deps = self._make_deps()
        return self._deps

    def register(self, tool: Tool) -> None:
        self.plugins[tool.name] = tool

    def validate(self, names: list[str]) -> None:
        """Refuse unknown tool names before an agent is stored (ValidationFailed)."""
        from warden.agents.tools.toolbox import validate_tool_names

        validate_tool_names([n for n in names if n not in self.plugins])

    def check_servers(self, servers: list[dict[str, Any]], is_admin: bool) -> None:
        """Refuse MCP server entries a caller may not configure (ValidationFailed)."""
        from warden.agents.tools.mcp import validate_mcp_servers

        validate_mcp_servers(servers, is_admin=is_admin, stdio_allow=self._stdio_allow)

    async def __call__(self, agent: Agent) -> Toolbox:
        from warden.agents.tools.toolbox import build_toolbox

        names = list(agent.tools or [])
        box = await build_toolbox([n for n in names if n not in self.plugins], list(agent.mcp_servers or []),
                                  tool_levels=dict(agent.tool_levels or {}), deps=self.deps)
        box.tools.update({n: self.plugins[n] for n in names if n in self.plugins})
        return box

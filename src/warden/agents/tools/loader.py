"""Builds an agent's toolbox at load: built-in and MCP tools through
``tools.build_toolbox``, plus any in-process plugin tools registered here
(embedders and tests add their own tools this way)."""

from __future__ import annotations

from warden.agents.tools.base import Tool
from warden.agents.tools.toolbox import Toolbox, build_toolbox, validate_tool_names
from warden.agents.tools.deps import ToolDeps
from warden.store.agent_models import Agent


class ToolboxLoader:
    def __init__(self, deps: ToolDeps) -> None:
        self.deps = deps
        self.plugins: dict[str, Tool] = {}

    def register(self, tool: Tool) -> None:
        self.plugins[tool.name] = tool

    def validate(self, names: list[str]) -> None:
        """Refuse unknown tool names before an agent is stored (ValidationFailed)."""
        validate_tool_names([n for n in names if n not in self.plugins])

    async def __call__(self, agent: Agent) -> Toolbox:
        names = list(agent.tools or [])
        box = await build_toolbox([n for n in names if n not in self.plugins], list(agent.mcp_servers or []),
                                  tool_levels=dict(agent.tool_levels or {}), deps=self.deps)
        box.tools.update({n: self.plugins[n] for n in names if n in self.plugins})
        return box

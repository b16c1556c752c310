"""The tools one agent may call: ``build_toolbox`` assembles the built-ins it
names and the tools of its MCP servers into a ``Toolbox``.

The runtime builds a ``ToolDeps`` once (``ToolDeps.from_settings``), a
``Toolbox`` per agent load, calls ``toolbox.tools[name].run(args, ctx)`` for
each allowed action (tools never raise: failures are ``ToolResult(is_error=True)``)
and ``await toolbox.close()`` when done (it stops MCP sessions and stdio servers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Self

from warden.agents.tools.builtin import BUILTIN_TOOLS
from warden.agents.tools.deps import ToolDeps
from warden.agents.tools.mcp import (
    McpConnection,
    parse_servers,
    tools_of,
)
from warden.agents.tools.base import Tool
from warden.errors import ValidationFailed
from warden.gateway.types import ToolSpec

log = logging.getLogger("warden.agents.tools")
RISK_LEVELS = (1, 2, 3, 4)


class Toolbox:
    """The tools one agent may use, built at agent load; close it when the agent is done."""

    def __init__(self, tools: dict[str, Tool], closers: list[Callable[[], Awaitable[None]]] | None = None) -> None:
        self.tools = tools
        self._closers = closers or []

    def specs(self) -> list[ToolSpec]:
        return [ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
                for t in self.tools.values()]

    async def close(self) -> None:
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            try:
                await close()
            except Exception:  # closing one server must not keep the others open
                log.exception("closing a tool server failed")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def validate_tool_names(names: list[str]) -> None:
    """Every name must be a built-in tool (MCP tools come with their server)."""
    unknown = [n for n in names if n not in BUILTIN_TOOLS]
    if unknown:
        raise ValidationFailed(
            f"unknown tool {unknown[0]!r}; built-in tools are: {', '.join(sorted(BUILTIN_TOOLS))}",
            code="unknown_tool", param="tools",
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValidationFailed(f"tool {duplicates[0]!r} is listed twice", param="tools")


def _validate_levels(tool_levels: dict[str, int]) -> None:
    for name, level in tool_levels.items():
        if level not in RISK_LEVELS or isinstance(level, bool):
            raise ValidationFailed(f"tool_levels[{name!r}] must be 1, 2, 3 or 4", param="tool_levels")


async def build_toolbox(agent_tools: list[str], mcp_servers: list[dict[str, Any]], *,
                        tool_levels: dict[str, int] | None = None, deps: ToolDeps) -> Toolbox:
    """Built-ins by name plus every tool of every MCP server; ``tool_levels`` (admin
    overrides, keyed by exposed tool name) replace declared or annotated levels.
    A server entry without ``trusted: true`` gets no credit for ``readOnlyHint``
    (see ``agents/tools/mcp.py``): pass the entries as the agents registry stored them.

    Raises ValidationFailed for a bad definition and McpServerError when a server
    cannot be started or reached in time (the servers already started are closed).
    """
    validate_tool_names(agent_tools)
    overrides = dict(tool_levels or {})
    _validate_levels(overrides)
    servers = parse_servers(mcp_servers)

    tools: dict[str, Tool] = {name: BUILTIN_TOOLS[name](deps) for name in agent_tools}
    connections = [McpConnection(s, egress=deps.egress, stdio_allow=list(deps.mcp_stdio_allow),
                                 connect_timeout=deps.mcp_connect_timeout, call_timeout=deps.mcp_call_timeout)
                   for s in servers]
    listings = await asyncio.gather(*(c.start() for c in connections), return_exceptions=True)
    failure = next((r for r in listings if isinstance(r, BaseException)), None)
    if failure is not None:
        await asyncio.gather(*(c.close() for c in connections))
        raise failure
    for connection, listed in zip(connections, listings, strict=True):
        for tool in tools_of(connection, listed, max_result_bytes=deps.max_result_bytes):  # type: ignore[arg-type]
            if tool.name in tools:
                await asyncio.gather(*(c.close() for c in connections))
                raise ValidationFailed(f"two tools are both named {tool.name!r}", param="mcp_servers")
            tools[tool.name] = tool

    for name, level in overrides.items():
        if name in tools:  # a tool the server no longer offers is not an error
            tools[name] = dataclasses.replace(tools[name], risk_level=level)  # type: ignore[type-var]
    return Toolbox(tools, [c.close for c in connections])

"""What an agent sees through ``/mcp``: its tools under stable names, each with its
risk level and what the policy would do with it.

- Upstream tools keep the names hosted runs give them (``<server>__<tool>``,
  ``agents/tools/mcp.py``) and their levels (annotations, trusted or not, the
  server's ``tool_levels``); built-in tools configured on the agent appear as
  ``warden__<tool>``.
- The agent's ``tool_levels`` (admin overrides, keyed by the exposed name; for a
  built-in also by its bare name, as hosted runs key it) win.
- A tool the policy denies outright for this agent (its tier and the workspace
  policy: ``agents/policy.py``) is hidden from the list (a call to it still goes
  to the gate, which records the refusal and says why); one that needs approval says so in
  its description and ``_meta``.
- A server that cannot start is left out of the list (logged), so one broken
  upstream does not take the others away.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from mcp.types import Tool as McpToolInfo
from mcp.types import ToolAnnotations

from warden.agents.mcp_trust import resolved_servers
from warden.agents.policy import LEVEL_NAMES, Outcome, WorkspacePolicy, decide
from warden.agents.tools.base import Tool
from warden.agents.tools.builtin import BUILTIN_TOOLS
from warden.agents.tools.deps import ToolDeps
from warden.agents.tools.mcp import McpServerConfig, McpServerError, parse_servers, tools_of
from warden.mcpgate.pool import Upstream, UpstreamPool
from warden.store.agent_models import Agent
from warden.store.db import Database

log = logging.getLogger("warden.mcpgate")

BUILTIN_PREFIX = "warden__"
_NOTE = {"allow": "allowed", "approve": "needs approval", "deny": "denied"}


@dataclass(frozen=True, slots=True)
class GatewayTool:
    name: str  # as the client calls it
    description: str
    input_schema: dict[str, Any]
    level: int
    outcome: Outcome  # what the policy does with a call now (allow / approve); deny ones are hidden
    remote_name: str  # the upstream's own name, or the built-in's
    server: McpServerConfig | None  # None: a built-in tool
    annotations: ToolAnnotations | None = None
    builtin: Tool | None = None

    def listed(self) -> McpToolInfo:
        note = f"[level {self.level} {LEVEL_NAMES.get(self.level, '?')}, {_NOTE[self.outcome]}]"
        return McpToolInfo(
            name=self.name, description=f"{note} {self.description}".strip(), input_schema=self.input_schema,
            annotations=self.annotations,
            _meta={"warden/level": self.level, "warden/decision": self.outcome,
                   "warden/server": self.server.name if self.server else "warden"},
        )


async def agent_servers(db: Database, agent: Agent) -> list[McpServerConfig]:
    """The agent's MCP server entries, with ``trusted`` resolved for old entries."""
    raw = list(agent.mcp_servers or [])
    if any(isinstance(x, dict) and "trusted" not in x for x in raw):
        async with db.session() as s:
            raw = await resolved_servers(s, agent) or raw
    return parse_servers(raw)


async def upstreams_of(pool: UpstreamPool, agent: Agent,
                       servers: list[McpServerConfig]) -> list[tuple[McpServerConfig, Upstream]]:
    started = await asyncio.gather(*(pool.get(agent.workspace_id, agent.id, s) for s in servers),
                                   return_exceptions=True)
    out: list[tuple[McpServerConfig, Upstream]] = []
    for server, result in zip(servers, started, strict=True):
        if isinstance(result, McpServerError):
            log.warning("mcp upstream %s of agent %s left out: %s", server.name, agent.id, result.message)
        elif isinstance(result, BaseException):
            log.warning("mcp upstream %s of agent %s left out: %s", server.name, agent.id,
                        type(result).__name__)
        else:
            out.append((server, result))
    return out


def level_override(agent: Agent, name: str, bare: str | None = None) -> int | None:
    levels = dict(agent.tool_levels or {})
    found = levels.get(name)
    if found is None and bare is not None:
        found = levels.get(bare)
    return found if found in (1, 2, 3, 4) else None


def catalog(agent: Agent, upstreams: list[tuple[McpServerConfig, Upstream]], deps: ToolDeps,
            policy: WorkspacePolicy | None) -> dict[str, GatewayTool]:
    """Every tool of the agent, keyed by its exposed name, with what the policy does with
    it now (``listed_tools`` leaves out the ones it denies outright)."""
    found: list[GatewayTool] = []
    for server, upstream in upstreams:
        by_remote = {info.name: info for info in upstream.tools}
        for tool in tools_of(upstream.connection, upstream.tools, max_result_bytes=deps.max_result_bytes):
            info = by_remote[tool.remote_name]
            level = level_override(agent, tool.name) or tool.risk_level
            found.append(GatewayTool(tool.name, tool.description, tool.parameters, level, "allow",
                                     tool.remote_name, server, info.annotations))
    for bare in agent.tools or []:
        factory = BUILTIN_TOOLS.get(bare)
        if factory is None:
            continue
        builtin = factory(deps)
        name = f"{BUILTIN_PREFIX}{bare}"
        level = level_override(agent, name, bare) or builtin.risk_level
        found.append(GatewayTool(name, builtin.description, builtin.parameters, level, "allow", bare, None,
                                 ToolAnnotations(read_only_hint=level == 1), builtin))
    out: dict[str, GatewayTool] = {}
    for tool in found:
        outcome = decide(agent.tier, tool.level, policy, tool=tool.name, agent_id=agent.id).outcome
        if tool.name in out:  # a clash keeps the first (upstreams come first)
            continue
        out[tool.name] = GatewayTool(tool.name, tool.description, tool.input_schema, tool.level, outcome,
                                     tool.remote_name, tool.server, tool.annotations, tool.builtin)
    return out


def listed_tools(tools: dict[str, GatewayTool]) -> list[McpToolInfo]:
    return [t.listed() for t in tools.values() if t.outcome != "deny"]

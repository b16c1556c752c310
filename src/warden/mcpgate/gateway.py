"""The MCP gateway's operations for one agent: list its tools, call one through the
gate, pass resources and prompts through.

A call's path: find the tool (a hidden or unknown one is a tool error, so the
model reads why), ``Gate.decide`` (which records it, and holds it while a human
decides), then forward it and report the outcome with ``Gate.finished``. A
level-1/2 call allowed at once is recorded by ``finished`` alone, decision and
outcome in one write (``decide(defer=True)``); if that write fails the client
gets a tool error, never a result the ledger does not have. What
the client gets is always a tool result: a refusal, a held-too-long note naming
the approval, an upstream failure are ``isError`` results the model can read,
never a JSON-RPC error. An upstream failure (a crashed or silent server) also
drops its pooled connection, so the next call starts it again.

Resources and prompts are read-only: each read is decided like a level-1 action
(recorded, and refused if the policy tightens level 1) under the name
``<server>__resource`` / ``<server>__prompt``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mcp.types import (
    CallToolResult,
    GetPromptResult,
    ListResourcesResult,
    Prompt,
    ReadResourceResult,
    Resource,
    TextContent,
)

from warden.agents.tools.base import ToolContext, cap_text
from warden.agents.tools.deps import ToolDeps
from warden.agents.tools.mcp import McpServerConfig, result_text
from warden.governance.gate import GovernedCall, OnHold, Verdict
from warden.errors import ServiceUnavailable
from warden.logs import redact
from warden.mcpgate.catalog import GatewayTool, agent_servers, catalog, upstreams_of
from warden.mcpgate.pool import UpstreamPool
from warden.mcpgate.servers import WorkspaceServers
from warden.store.agent_models import Agent
from warden.store.db import Database
from warden.tenancy.accounts import Principal

log = logging.getLogger("warden.mcpgate")

_SEP = "__"  # "<server>__<name>": how resources and prompts say which upstream they come from


class DecisionGate(Protocol):
    """What the gateway needs of ``governance.gate.Gate``."""

    async def agent_for(self, principal: Principal, ref: str | None) -> Agent: ...

    async def decide(self, principal: Principal, agent: Agent, call: GovernedCall, *,
                     hold_s: float | None = None, on_hold: OnHold | None = None,
                     defer: bool = False) -> Verdict: ...

    async def finished(self, principal: Principal, action_id: str, *, ok: bool, result: Any,
                       verdict: Verdict | None = None) -> None: ...


def tool_error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def refusal(verdict: Verdict) -> CallToolResult:
    if verdict.outcome == "pending":
        return tool_error(
            f"Warden held this call for a human's approval (approval {verdict.approval_id}) and nobody "
            "decided in time: it was NOT run. Make the same call again, with the same arguments, once "
            f"it is approved; it will then run once. ({verdict.reason})")
    note = f" Note from {verdict.decided_by or 'the reviewer'}: {verdict.note}" if verdict.note else ""
    return tool_error(f"Warden refused this call: {verdict.reason} (rule {verdict.rule}).{note}")


class McpGateway:
    def __init__(self, gate: DecisionGate | None, pool: UpstreamPool, db: Database, deps: Callable[[], ToolDeps],
                 policy_for: Callable[[str], Awaitable[Any]], *, servers: WorkspaceServers | None = None,
                 hold_s: float | None = None) -> None:
        self._gate = gate  # None until the process has a gate: /mcp then answers 503
        self.pool = pool
        self.db = db
        self.servers = servers
        self._deps = deps
        self._policy_for = policy_for
        self.hold_s = hold_s  # None: the gate's default (WARDEN_APPROVAL_HOLD)

    @property
    def gate(self) -> DecisionGate:
        if self._gate is None:
            raise ServiceUnavailable("the MCP gateway has no decision gate in this process",
                                     code="mcp_gate_unavailable")
        return self._gate

    @gate.setter
    def gate(self, gate: DecisionGate) -> None:
        self._gate = gate

    async def configs(self, agent: Agent) -> list[McpServerConfig]:
        """The agent's own servers, then the workspace's (an agent's server of the same name wins)."""
        own = await agent_servers(self.db, agent)
        shared = await self.servers.configs(agent.workspace_id) if self.servers is not None else []
        names = {c.name for c in own}
        return own + [c for c in shared if c.name not in names]

    async def tools(self, agent: Agent) -> dict[str, GatewayTool]:
        upstreams = await upstreams_of(self.pool, agent, await self.configs(agent))
        return catalog(agent, upstreams, self._deps(), await self._policy_for(agent.workspace_id))

    async def call(self, principal: Principal, agent: Agent, name: str, arguments: dict[str, Any], *,
                   on_hold: OnHold | None = None, tools: dict[str, GatewayTool] | None = None) -> CallToolResult:
        """``tools``: the agent's catalog if the caller has it already (``/mcp`` reads it to
        choose how to answer), else it is built here."""
        tool = (tools if tools is not None else await self.tools(agent)).get(name)
        if tool is None:
            return tool_error(f"no tool named {name!r} is available to this agent through Warden "
                              "(unknown, or its server is down): list the tools again")
        # defer: a low-risk call allowed at once is written once, with its outcome (Gate.decide).
        verdict = await self.gate.decide(principal, agent, GovernedCall(name, arguments, tool.level, "mcp"),
                                         hold_s=self.hold_s, on_hold=on_hold, defer=True)
        if verdict.outcome != "allow":
            return refusal(verdict)
        try:
            result = await self._forward(agent, tool, arguments, verdict.action_id)
        except asyncio.CancelledError:  # the client went away mid-call: it may have run, so record it
            await asyncio.shield(self._finished(principal, verdict, tool_error("cancelled: the client left"),
                                                interrupted=True))
            raise
        # Shielded: a client leaving now must not roll back the record of a call that ran.
        if not await asyncio.shield(self._finished(principal, verdict, result)) and verdict.deferred is not None:
            # Nothing of this call is on the ledger: its result does not leave unrecorded.
            return tool_error("Warden could not record this call, so its result is withheld; try again shortly")
        return result

    async def _finished(self, principal: Principal, verdict: Verdict, result: CallToolResult, *,
                        interrupted: bool = False) -> bool:
        try:
            await self.gate.finished(principal, verdict.action_id, ok=not result.is_error, verdict=verdict,
                                     interrupted=interrupted,
                                     result=result.model_dump(mode="json", by_alias=True, exclude_none=True))
        except Exception:  # decided before it ran: its result reaches the client even if the outcome is lost
            log.exception("recording the outcome of %s failed", verdict.action_id)
            return False
        return True

    async def _forward(self, agent: Agent, tool: GatewayTool, arguments: dict[str, Any],
                       action_id: str) -> CallToolResult:
        deps = self._deps()
        if tool.builtin is not None:
            ctx = ToolContext(workspace_id=agent.workspace_id, agent_id=agent.id, run_id=action_id,
                              session_id="mcp")
            out = await tool.builtin.run(arguments, ctx)
            return CallToolResult(content=[TextContent(type="text", text=out.content)], is_error=out.is_error)
        assert tool.server is not None
        server = tool.server
        key = self.pool.key_of(agent.workspace_id, agent.id, server)
        try:
            upstream = await self.pool.get(agent.workspace_id, agent.id, server)
            result = await upstream.connection.call(tool.remote_name, arguments)
        except TimeoutError:
            await self.pool.discard(key)
            return tool_error(f"upstream MCP server {server.name!r} did not answer {tool.remote_name!r} within "
                              f"{deps.mcp_call_timeout:g} s; Warden reconnects on the next call")
        except Exception as exc:  # noqa: BLE001 - a dead upstream is a tool error, the gateway stays up
            await self.pool.discard(key)
            return tool_error(f"upstream MCP server {server.name!r} failed on {tool.remote_name!r}: "
                              f"{_describe(exc)}; Warden reconnects on the next call")
        if len(result_text(result).encode()) > deps.max_result_bytes:
            return CallToolResult(content=[TextContent(type="text", text=cap_text(result_text(result),
                                                                                  deps.max_result_bytes))],
                                  is_error=result.is_error)
        return result

    # --- resources and prompts: read-only, decided as level 1 ---------------------

    async def _servers(self, agent: Agent) -> list[tuple[McpServerConfig, Any]]:
        return await upstreams_of(self.pool, agent, await self.configs(agent))

    async def resources(self, agent: Agent) -> ListResourcesResult:
        listed: list[Resource] = []
        for server, upstream in await self._servers(agent):
            try:
                page = await upstream.connection.session.list_resources()
            except Exception as exc:  # noqa: BLE001 - a server without resources, or down: skip it
                log.info("resources of %s not listed: %s", server.name, _describe(exc))
                continue
            listed.extend(r.model_copy(update={"name": f"{server.name}{_SEP}{r.name}",
                                               "uri": _wrap(server.name, str(r.uri))}) for r in page.resources)
        return ListResourcesResult(resources=listed)

    async def read_resource(self, principal: Principal, agent: Agent, uri: str) -> ReadResourceResult:
        server_name, inner = _unwrap(uri)
        upstream = await self._read_only(principal, agent, server_name, "resource", {"uri": inner})
        return await upstream.connection.session.read_resource(inner)

    async def prompts(self, agent: Agent) -> list[Prompt]:
        listed: list[Prompt] = []
        for server, upstream in await self._servers(agent):
            try:
                page = await upstream.connection.session.list_prompts()
            except Exception as exc:  # noqa: BLE001
                log.info("prompts of %s not listed: %s", server.name, _describe(exc))
                continue
            listed.extend(p.model_copy(update={"name": f"{server.name}{_SEP}{p.name}"}) for p in page.prompts)
        return listed

    async def get_prompt(self, principal: Principal, agent: Agent, name: str,
                         arguments: dict[str, str] | None) -> GetPromptResult:
        server_name, _, inner = name.partition(_SEP)
        upstream = await self._read_only(principal, agent, server_name, "prompt",
                                         {"name": inner, "arguments": arguments or {}})
        return await upstream.connection.session.get_prompt(inner, arguments)

    async def _read_only(self, principal: Principal, agent: Agent, server_name: str, what: str,
                         arguments: dict[str, Any]) -> Any:
        from warden.errors import Forbidden, NotFound

        match = [(s, u) for s, u in await self._servers(agent) if s.name == server_name]
        if not match:
            raise NotFound(f"no MCP server named {server_name!r} is available to this agent", code="mcp_unknown_server")
        verdict = await self.gate.decide(principal, agent,
                                         GovernedCall(f"{server_name}{_SEP}{what}", arguments, 1, "mcp"),
                                         hold_s=0, defer=True)
        if verdict.outcome != "allow":
            raise Forbidden(f"Warden refused this {what} read: {verdict.reason} (rule {verdict.rule})",
                            code="mcp_read_refused")
        await self.gate.finished(principal, verdict.action_id, ok=True, result=None, verdict=verdict)
        return match[0][1]


def _wrap(server: str, uri: str) -> str:
    # The upstream's URI stays readable; the prefix says which server to ask.
    return f"warden+{server}:{uri}"


def _unwrap(uri: str) -> tuple[str, str]:
    from warden.errors import ValidationFailed

    head, sep, inner = uri.partition(":")
    if not sep or not head.startswith("warden+"):
        raise ValidationFailed("a resource URI through Warden looks like 'warden+<server>:<uri>'", param="uri")
    return head.removeprefix("warden+"), inner


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip() or type(exc).__name__
    return redact(text.splitlines()[0][:300])

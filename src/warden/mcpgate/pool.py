"""Upstream MCP connections the gateway keeps open between requests.

A ``/mcp`` request is short (stateless transport: one JSON-RPC message per HTTP
request), an upstream MCP server is not: a stdio server is a process, an HTTP
one a session. So connections are pooled, keyed by workspace, agent and the
server's exact configuration (a changed entry gets a new connection; the old
one idles out). A connection starts on first use, is closed after
``idle_s`` without use, and on any transport failure (a crashed stdio server,
a call that timed out), so the next call starts a fresh one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from mcp.types import Tool as McpToolInfo

from warden.agents.tools.deps import ToolDeps
from warden.agents.tools.mcp import McpConnection, McpServerConfig

log = logging.getLogger("warden.mcpgate")

PoolKey = tuple[str, str, str]  # workspace id, agent id, configuration digest


def config_digest(config: McpServerConfig) -> str:
    return hashlib.sha256(orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class Upstream:
    """One started upstream server and the tools it listed when it started."""

    connection: McpConnection
    tools: list[McpToolInfo]
    last_used: float = field(default_factory=time.monotonic)


class UpstreamPool:
    def __init__(self, deps: Callable[[], ToolDeps], *, idle_s: float = 300.0) -> None:
        self._deps = deps
        self.idle_s = idle_s
        self._live: dict[PoolKey, Upstream] = {}
        self._starting: dict[PoolKey, asyncio.Future[Upstream]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._live)

    async def get(self, workspace_id: str, agent_id: str, config: McpServerConfig) -> Upstream:
        """The live upstream for this configuration, started if needed (McpServerError
        when it cannot start). Concurrent callers share one start."""
        key = (workspace_id, agent_id, config_digest(config))
        live = self._live.get(key)
        if live is not None and _connected(live.connection):
            live.last_used = time.monotonic()
            return live
        if live is not None:  # its session ended (the server exited): start again
            await self.discard(key, live)
        pending = self._starting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Upstream] = asyncio.get_running_loop().create_future()
        self._starting[key] = future
        try:
            upstream = await self._start(config)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # read: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._starting.pop(key, None)
        self._live[key] = upstream
        future.set_result(upstream)
        self._ensure_sweeper()
        return upstream

    async def _start(self, config: McpServerConfig) -> Upstream:
        deps = self._deps()
        connection = McpConnection(config, egress=deps.egress, stdio_allow=list(deps.mcp_stdio_allow),
                                   connect_timeout=deps.mcp_connect_timeout, call_timeout=deps.mcp_call_timeout)
        tools = await connection.start()
        return Upstream(connection, tools)

    def key_of(self, workspace_id: str, agent_id: str, config: McpServerConfig) -> PoolKey:
        return (workspace_id, agent_id, config_digest(config))

    async def discard(self, key: PoolKey, upstream: Upstream | None = None) -> None:
        """Close and forget a connection (after a transport failure): the next use reconnects."""
        current = self._live.get(key)
        if current is not None and (upstream is None or current is upstream):
            del self._live[key]
        target = upstream or current
        if target is not None:
            await target.connection.close()

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="mcpgate:idle-sweep")

    async def _sweep(self) -> None:
        while self._live and not self._closed:
            await asyncio.sleep(max(1.0, self.idle_s / 4))
            now = time.monotonic()
            for key, upstream in list(self._live.items()):
                if now - upstream.last_used > self.idle_s:
                    log.info("closing idle mcp upstream %s", upstream.connection.name)
                    await self.discard(key, upstream)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        live, self._live = list(self._live.values()), {}
        await asyncio.gather(*(u.connection.close() for u in live), return_exceptions=True)


def _connected(connection: McpConnection) -> bool:
    try:
        connection.session  # noqa: B018 - raises when the session ended
    except ConnectionError:
        return False
    return True

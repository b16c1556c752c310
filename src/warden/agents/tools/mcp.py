"""MCP client: an agent's tools from MCP servers, over streamable HTTP or stdio.

- Configuration (one dict per server, validated by ``McpServerConfig``)::

      {"name": "git", "transport": "stdio", "command": "mcp-git", "args": [...], "env": {...},
       "tool_levels": {"git_push": 4}}
      {"name": "docs", "transport": "http", "url": "https://…/mcp", "headers": {...}}

- Tools are listed once, when the toolbox is built, and exposed to the model as
  ``<server>__<tool>`` (characters outside ``[A-Za-z0-9_-]`` become ``_``; names
  longer than 64 get a short hash suffix), so two servers never collide and the
  name says where a tool lives.
- Risk level from the tool's annotations: ``readOnlyHint`` -> 1,
  ``destructiveHint`` -> 4, anything else 3; the server's ``tool_levels``
  (keyed by the server's own tool name) override it, and the agent's
  ``tool_levels`` (keyed by the exposed name) override both.
- Annotations are the server's own claims, so they count in full only for a
  server an admin configured (``trusted: true``). Whoever controls a server
  controls its annotations: for an untrusted server (a member added or changed
  the entry, including a rename) ``readOnlyHint`` is ignored, so its tools are
  level 3 at least and ``destructiveHint`` still gives 4. Hints may raise risk,
  never lower it. Admin overrides (both ``tool_levels``) apply either way. The
  agents registry stamps ``trusted`` on every stored entry; members cannot set
  it, and a config without it is untrusted.
- A stdio server runs a command on this host: its executable must be on
  ``WARDEN_MCP_STDIO_ALLOW``, checked when the agent is defined *and* again
  each time the server starts. It gets only the SDK's safe environment
  (PATH, HOME, …) plus the configured ``env``, never Warden's own variables.
- An HTTP server's host goes through the same egress check as the HTTP tools
  (private addresses need ``WARDEN_EGRESS_ALLOW``) at connect time, and the
  SDK's HTTP client connects only to the addresses that check returned
  (``PinnedTransport``: no second DNS lookup, so no DNS rebinding; no proxy
  from the environment).
- Each connection lives in its own asyncio task: the SDK's transports are anyio
  context managers that must be exited by the task that entered them, while a
  toolbox is built by one task and closed by another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import IO, Any, Literal

import httpx2
import orjson
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from mcp.types import Tool as McpToolInfo
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from warden.agents.tools.egress import EgressError, EgressPolicy
from warden.agents.tools.pinned_transport import pinned_client
from warden.agents.tools.base import MAX_RESULT_BYTES, ToolContext, ToolResult, cap_text
from warden.errors import Forbidden, ValidationFailed, WardenError
from warden.logs import redact

log = logging.getLogger("warden.agents.tools.mcp")

_SERVER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
_TOOL_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MAX_TOOL_NAME = 64  # what OpenAI-style function names allow
_CLOSE_GRACE = 10.0  # the SDK bounds a stdio shutdown at ~6 s; never wait forever on top


class McpServerError(WardenError):
    """An MCP server could not be started, reached or listed while building a toolbox."""

    status = 502
    type = "upstream_error"
    code = "mcp_server_unavailable"


class McpServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_SERVER_NAME)
    transport: Literal["http", "stdio"]
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    tool_levels: dict[str, int] = Field(default_factory=dict)
    # Whether an admin configured this entry (set by the agents registry, see the module
    # docstring): only then may annotations lower a tool's level below 3.
    trusted: StrictBool = False

    @model_validator(mode="after")
    def _transport_fields(self) -> McpServerConfig:
        if "__" in self.name:
            raise ValueError("name must not contain '__' (it separates server and tool names)")
        if self.transport == "http":
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError("an http server needs a url starting with http:// or https://")
            if self.command or self.args or self.env:
                raise ValueError("command, args and env belong to stdio servers")
        else:
            if not self.command or not self.command.strip():
                raise ValueError("a stdio server needs a command")
            if self.url or self.headers:
                raise ValueError("url and headers belong to http servers")
        for tool, level in self.tool_levels.items():
            if level not in (1, 2, 3, 4):
                raise ValueError(f"tool_levels[{tool!r}] must be 1, 2, 3 or 4")
        return self


def parse_servers(servers: list[dict[str, Any]]) -> list[McpServerConfig]:
    """Validated configs; ValidationFailed names the server and the field."""
    parsed: list[McpServerConfig] = []
    for i, raw in enumerate(servers):
        try:
            parsed.append(McpServerConfig.model_validate(raw))
        except ValidationError as exc:
            label = raw.get("name") if isinstance(raw, dict) else None
            raise ValidationFailed.of(exc, where="", prefix=f"mcp_servers[{i}]{f' ({label})' if label else ''}: ",
                                      param="mcp_servers") from None
    names = [s.name for s in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValidationFailed(f"mcp_servers: duplicate server name {duplicates[0]!r}", param="mcp_servers")
    return parsed


def stdio_command_allowed(command: str, allow: list[str]) -> bool:
    """Whether ``command`` is an allowed executable: the same entry, or the same file
    once both are looked up on PATH (so "python3" and "/usr/bin/python3" agree, but a
    look-alike "/tmp/npx" is not "npx")."""
    if command in allow:
        return True
    resolved = shutil.which(command)
    if resolved is None:
        return False
    return any((found := shutil.which(entry)) is not None and _same_file(found, resolved) for entry in allow)


def _same_file(a: str, b: str) -> bool:
    try:
        import os

        return os.path.samefile(a, b)
    except OSError:
        return False


def validate_mcp_servers(servers: list[dict[str, Any]], *, is_admin: bool, stdio_allow: list[str]) -> None:
    """For the agents API: refuse a bad definition before it is stored."""
    for server in parse_servers(servers):
        if server.transport != "stdio":
            continue
        if not is_admin:
            raise Forbidden(f"mcp server {server.name!r}: only an admin may configure a stdio MCP server",
                            code="mcp_stdio_admin_only")
        if not stdio_command_allowed(server.command or "", stdio_allow):
            raise Forbidden(f"mcp server {server.name!r}: command {server.command!r} is not on "
                            "the operator's allow-list (WARDEN_MCP_STDIO_ALLOW)",
                            code="mcp_command_not_allowed")


def level_from_annotations(tool: McpToolInfo, *, trusted: bool) -> int:
    """The level a tool's annotations give; ``readOnlyHint`` counts only from a trusted
    server (an untrusted one could declare anything read-only)."""
    hints = tool.annotations
    if trusted and hints is not None and hints.read_only_hint:
        return 1
    if hints is not None and hints.destructive_hint:
        return 4
    return 3


def exposed_name(server: str, tool: str) -> str:
    name = _TOOL_NAME_CHARS.sub("_", f"{server}__{tool}")
    if len(name) > _MAX_TOOL_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:_MAX_TOOL_NAME - 9]}_{digest}"
    return name


def _describe(exc: BaseException) -> str:
    """A one-line reason from an exception, unwrapping anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip() or type(exc).__name__
    return redact(text.splitlines()[0][:300])


class McpConnection:
    """One live MCP client session, owned by a background task."""

    def __init__(self, config: McpServerConfig, *, egress: EgressPolicy, stdio_allow: list[str],
                 connect_timeout: float, call_timeout: float) -> None:
        self.config = config
        self.egress = egress
        self.stdio_allow = stdio_allow
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self._session: ClientSession | None = None
        self._ready: asyncio.Future[list[McpToolInfo]] | None = None
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stderr: IO[str] | None = None
        self._addresses: list[str] = []  # an HTTP server's checked IPs: the only ones connected to

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def session(self) -> ClientSession:
        """The live session (the MCP gateway passes resources and prompts through it)."""
        if self._session is None:
            raise ConnectionError(f"mcp server {self.name!r} is not connected")
        return self._session

    async def start(self) -> list[McpToolInfo]:
        """Connect, initialize and list the server's tools; McpServerError when it cannot."""
        if self.config.transport == "stdio" and not stdio_command_allowed(self.config.command or "",
                                                                          self.stdio_allow):
            raise McpServerError(f"mcp server {self.name!r}: command {self.config.command!r} is not on "
                                 "WARDEN_MCP_STDIO_ALLOW", code="mcp_command_not_allowed", status=403)
        if self.config.transport == "http":
            url = httpx2.URL(self.config.url or "")
            try:
                self._addresses = await self.egress.resolve(url.raw_host.decode("ascii"),
                                                            url.port or (443 if url.scheme == "https" else 80))
            except EgressError as exc:
                raise McpServerError(f"mcp server {self.name!r}: {exc}") from None
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._serve(), name=f"mcp:{self.name}")
        done, _ = await asyncio.wait({self._ready, self._task}, timeout=self.connect_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._ready.done() and not self._ready.exception():
            return self._ready.result()
        if self._ready.done():
            reason = _describe(self._ready.exception())  # type: ignore[arg-type]
        elif done:
            reason = "the connection closed during start-up"
        else:
            reason = f"no answer within {self.connect_timeout:g} s"
        reason += self._stderr_tail()
        await self.close()
        raise McpServerError(f"mcp server {self.name!r} is unavailable: {reason}")

    async def _serve(self) -> None:
        assert self._ready is not None
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(await self._transport(stack))
                # No session-wide read timeout: start-up is bounded by connect_timeout, calls by call().
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                tools = await _list_all_tools(session)
                self._session = session
                self._ready.set_result(tools)
                await self._closing.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(_describe(exc)))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("mcp server %s closed with an error: %s", self.name, _describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._session = None

    async def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        if self.config.transport == "stdio":
            # The server's stderr goes to a temp file: quoted in the error when start-up fails.
            # Closed by close(), not here: start() quotes it after this task has ended.
            self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            params = StdioServerParameters(command=self.config.command or "", args=self.config.args,
                                           env=self.config.env or None)
            return stdio_client(params, errlog=self._stderr)
        client = pinned_client(
            httpx2.URL(self.config.url or "").raw_host.decode("ascii"), self._addresses,
            headers=self.config.headers or None, verify=self.egress.verify,
            timeout=httpx2.Timeout(self.connect_timeout, read=max(self.call_timeout, 300.0)),
        )
        await stack.enter_async_context(client)
        return streamable_http_client(self.config.url or "", http_client=client)

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        try:
            self._stderr.seek(0)
            tail = self._stderr.read()[-400:].strip()
        except (OSError, ValueError):
            return ""
        return f" (server stderr: {redact(tail)})" if tail else ""

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        session = self._session
        if session is None:
            raise ConnectionError(f"mcp server {self.name!r} is not connected")
        async with asyncio.timeout(self.call_timeout):
            return await session.call_tool(tool, arguments, read_timeout_seconds=self.call_timeout)

    async def close(self) -> None:
        self._closing.set()
        task, self._task = self._task, None
        if task is not None:
            if self._session is None:
                # Still starting (e.g. a server that never answers): nothing to finish politely.
                # The SDK shields and bounds the subprocess shutdown, so cancelling is safe.
                task.cancel()
            await self._stop(task)
        if self._stderr is not None:
            self._stderr.close()

    async def _stop(self, task: asyncio.Task[None]) -> None:
        # asyncio.wait never raises the task's outcome, and a cancelled close() still propagates.
        done, _ = await asyncio.wait({task}, timeout=_CLOSE_GRACE)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=_CLOSE_GRACE)


async def _list_all_tools(session: ClientSession) -> list[McpToolInfo]:
    from mcp.types import PaginatedRequestParams

    tools: list[McpToolInfo] = []
    cursor: str | None = None
    for _ in range(100):  # a server paging forever must not hang the build
        page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def result_text(result: CallToolResult) -> str:
    """What the model reads: the text blocks, or the structured content as JSON when
    there is no text (the spec asks servers to mirror structured content in text)."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, ImageContent | AudioContent):
            parts.append(f"[{block.type}: {block.mime_type}, {len(block.data) * 3 // 4} bytes not shown]")
        elif isinstance(block, ResourceLink):
            parts.append(f"[resource link: {block.uri}]")
        elif isinstance(block, EmbeddedResource):
            res = block.resource
            parts.append(res.text if isinstance(res, TextResourceContents) else f"[resource: {res.uri}]")
    if not any(isinstance(b, TextContent) for b in result.content) and result.structured_content is not None:
        parts.insert(0, orjson.dumps(result.structured_content, default=str).decode())
    return "\n".join(parts) if parts else ("(no content)" if not result.is_error else "tool error")


@dataclass(frozen=True, slots=True)
class McpTool:
    name: str  # exposed: "<server>__<tool>"
    description: str
    parameters: dict[str, Any]
    risk_level: int
    remote_name: str
    connection: McpConnection
    max_result_bytes: int = MAX_RESULT_BYTES

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        server = self.connection.name
        try:
            result = await self.connection.call(self.remote_name, args)
        except TimeoutError:
            return ToolResult(f"mcp tool {self.remote_name!r} on {server!r} did not answer within "
                              f"{self.connection.call_timeout:g} s", is_error=True)
        except Exception as exc:  # noqa: BLE001 - any failure is a tool error the model can read
            return ToolResult(f"mcp tool {self.remote_name!r} on {server!r} failed: {_describe(exc)}",
                              is_error=True)
        return ToolResult(cap_text(result_text(result), self.max_result_bytes), is_error=result.is_error)


def tools_of(connection: McpConnection, listed: list[McpToolInfo], *, max_result_bytes: int) -> list[McpTool]:
    server = connection.config
    out: list[McpTool] = []
    for info in listed:
        level = server.tool_levels.get(info.name, level_from_annotations(info, trusted=server.trusted))
        out.append(McpTool(
            name=exposed_name(server.name, info.name),
            description=(info.description or info.title or info.name)[:1024],
            parameters=info.input_schema or {"type": "object", "properties": {}},
            risk_level=level, remote_name=info.name, connection=connection,
            max_result_bytes=max_result_bytes,
        ))
    return out

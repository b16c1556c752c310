"""``POST/GET /mcp``: Warden as an MCP server (streamable HTTP, the official SDK's
low-level server), for an agent's key; the work is in ``mcpgate``.

- Stateless transport: every request stands alone (no session id), so any
  instance behind a load balancer can serve any request, and a held call is
  just an open request.
- Authentication is the API key (``Authorization: Bearer``), checked before the
  SDK sees the request: no key, a bad one, or a key with no agent to act as is
  refused with the usual JSON error envelope. A key bound to an agent acts as
  it; an admin key may name one with ``?agent=<id or name>``.
- The principal and agent travel to the handlers in the request's state (the
  SDK runs handlers in its own task group, so a contextvar would not reach them).
- While the gate holds a call, a progress notification goes out every few
  seconds when the client sent a ``progressToken``.
- A POST whose answer is its one response (the client accepts
  ``application/json``, sent no ``progressToken``, and it is no tool call the
  gate may hold) is answered with a JSON body, which the streamable HTTP
  transport allows; the rest (progress, a call that may wait for a human, GET)
  with SSE, whose keep-alive pings carry a long hold through proxies. Nothing
  but progress ever streams back from Warden, and the SDK's per-request SSE
  stream cost more than a quarter of an allowed call's time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import mcp.types as types
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive, Scope, Send

from warden import __version__
from warden.api.deps import authenticated
from warden.api.errors import error_reply
from warden.errors import WardenError
from warden.mcpgate.catalog import listed_tools
from warden.services import Services
from warden.store.agent_models import Agent
from warden.tenancy.accounts import Principal

_INSTRUCTIONS = ("Tools of this agent, governed by Warden: each tool's description starts with its risk "
                 "level and whether it needs a human's approval. A held call may take a while; a refused "
                 "one comes back as a tool error saying why.")


def _caller(ctx: ServerRequestContext[Any, Any]) -> tuple[Services, Principal, Agent]:
    request: Request = ctx.request
    state = request.state
    return request.app.state.services, state.principal, state.mcp_agent


async def _list_tools(ctx: ServerRequestContext[Any, Any],
                      params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    services, _, agent = _caller(ctx)
    return types.ListToolsResult(tools=listed_tools(await services.mcp_gateway.tools(agent)))


async def _call_tool(ctx: ServerRequestContext[Any, Any],
                     params: types.CallToolRequestParams) -> types.CallToolResult:
    services, principal, agent = _caller(ctx)

    async def on_hold(waited: float, approval_id: str) -> None:
        # A no-op when the client sent no progressToken.
        await ctx.session.report_progress(waited, None,
                                          f"held for a human's approval ({approval_id}), {waited:.0f} s so far")

    return await services.mcp_gateway.call(principal, agent, params.name, dict(params.arguments or {}),
                                           on_hold=on_hold, tools=getattr(ctx.request.state, "mcp_tools", None))


async def _list_resources(ctx: ServerRequestContext[Any, Any],
                          params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
    services, _, agent = _caller(ctx)
    return await services.mcp_gateway.resources(agent)


async def _read_resource(ctx: ServerRequestContext[Any, Any],
                         params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    services, principal, agent = _caller(ctx)
    return await services.mcp_gateway.read_resource(principal, agent, str(params.uri))


async def _list_prompts(ctx: ServerRequestContext[Any, Any],
                        params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
    services, _, agent = _caller(ctx)
    return types.ListPromptsResult(prompts=await services.mcp_gateway.prompts(agent))


async def _get_prompt(ctx: ServerRequestContext[Any, Any],
                      params: types.GetPromptRequestParams) -> types.GetPromptResult:
    services, principal, agent = _caller(ctx)
    return await services.mcp_gateway.get_prompt(principal, agent, params.name, params.arguments)


def build_server() -> Server[Any]:
    return Server("warden", version=__version__, instructions=_INSTRUCTIONS,
                  on_list_tools=_list_tools, on_call_tool=_call_tool,
                  on_list_resources=_list_resources, on_read_resource=_read_resource,
                  on_list_prompts=_list_prompts, on_get_prompt=_get_prompt)


class McpEndpoint:
    """The ASGI app behind ``/mcp``. The SDK's session manager needs a task group
    that outlives requests: it runs in a task of its own, started by the first
    request (so an app served without its lifespan works too) and ended by
    :meth:`close` (the app's lifespan calls it)."""

    def __init__(self) -> None:
        self.manager = StreamableHTTPSessionManager(build_server(), stateless=True)
        self.json_manager = StreamableHTTPSessionManager(build_server(), stateless=True, json_response=True)
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._stop = asyncio.Event()

    async def _run(self) -> None:
        async with self.manager.run(), self.json_manager.run():
            self._started.set()
            await self._stop.wait()

    async def _ensure_running(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mcp:session-manager")
        if not self._started.is_set():
            waiter = asyncio.ensure_future(self._started.wait())
            await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if self._task.done():
                self._task.result()  # it failed to start: raise why

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            services, principal = await authenticated(request)
            ref = request.query_params.get("agent")
            request.state.mcp_agent = await services.mcp_gateway.gate.agent_for(principal, ref)
        except WardenError as exc:
            await error_reply(exc)(scope, receive, send)
            return
        await self._ensure_running()
        manager = self.manager
        if request.method == "POST":
            try:
                body = await request.body()
            except ClientDisconnect:
                return  # nobody to answer
            if await _answer_in_json(request, body, services, request.state.mcp_agent):
                manager = self.json_manager
            receive = _replay(body, receive)
        await manager.handle_request(scope, receive, send)


async def _answer_in_json(request: Request, body: bytes, services: Services, agent: Agent) -> bool:
    """One JSON-RPC message asking for no progress, from a client that accepts JSON, and no
    tool call but one the policy allows at once (the catalog it was judged by goes on to the
    handler). Anything else (a batch, a body that does not parse) goes the SSE way."""
    if not check_accept_headers(request)[0]:
        return False
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(message, dict):
        return False
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if isinstance(meta, dict) and meta.get("progressToken") is not None:
        return False
    if message.get("method") != "tools/call":
        return True  # never held: resources and prompts are decided at level 1 without a hold
    try:
        tools = await services.mcp_gateway.tools(agent)
    except Exception:  # noqa: BLE001 - the handler meets it again and answers it the MCP way
        return False
    request.state.mcp_tools = tools
    name = params.get("name") if isinstance(params, dict) else None
    tool = tools.get(name) if isinstance(name, str) else None
    return tool is not None and tool.outcome == "allow"


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read above, once, then the client's own messages (its disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again

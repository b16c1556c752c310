"""``/api/mcp-servers``: a workspace's MCP servers, offered to every agent of the
workspace through ``/mcp`` (admin; the entry format is ``McpServerConfig`` in
``agents/tools/mcp.py``; views mask header, env and URL secrets)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from warden.api.deps import AdminDep, ServicesDep
from warden.errors import ValidationFailed

router = APIRouter(prefix="/api/mcp-servers", tags=["agents"])


@router.get("")
async def list_servers(principal: AdminDep, services: ServicesDep) -> list[dict[str, Any]]:
    return await services.mcp_servers.list(principal.workspace_id)


@router.post("", status_code=201)
async def add_server(request: Request, principal: AdminDep, services: ServicesDep) -> dict[str, Any]:
    import orjson

    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise ValidationFailed("the body must be one MCP server entry as JSON", param="body") from None
    return await services.mcp_servers.add(principal.workspace_id, body, actor=principal.actor)


@router.delete("/{name}", status_code=204)
async def remove_server(name: str, principal: AdminDep, services: ServicesDep) -> Response:
    await services.mcp_servers.remove(principal.workspace_id, name, actor=principal.actor)
    return Response(status_code=204)

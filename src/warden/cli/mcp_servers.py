"""``warden mcp-servers``: a workspace's MCP servers, offered to every agent through
``/mcp`` (add, list, remove); through the server, or on the database directly with none."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from warden.cli.common import Col, JsonOpt, WorkspaceOpt, dispatch, fail, key_workspace, out, show

if TYPE_CHECKING:
    from warden.cli.client import Client
    from warden.services import Services

mcp_servers_app = typer.Typer(help="Workspace MCP servers for /mcp: add, list, remove.", no_args_is_help=True)


def _pairs(values: list[str] | None, what: str, *, number: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in values or []:
        k, sep, v = item.partition("=")
        if not sep or not k or (number and v not in ("1", "2", "3", "4")):
            fail(f"{what}: expected NAME={'LEVEL (1-4)' if number else 'VALUE'}, got '{item}'", 2)
        result[k] = int(v) if number else v
    return result


async def _workspace_id(s: Services, workspace: str | None) -> str:
    return (await s.accounts.workspace_by_name(workspace or "default")).id


@mcp_servers_app.command("add")
def mcp_servers_add(
    name: Annotated[str, typer.Argument(help="The server's name (its tools are NAME__tool).")],
    url: Annotated[str | None, typer.Option(help="Streamable HTTP endpoint (https://…/mcp).")] = None,
    command: Annotated[str | None, typer.Option(
        help="A stdio server's executable (must be on WARDEN_MCP_STDIO_ALLOW).")] = None,
    arg: Annotated[list[str] | None, typer.Option(help="An argument of --command (repeatable).")] = None,
    header: Annotated[list[str] | None, typer.Option(help="NAME=VALUE HTTP header (repeatable).")] = None,
    env: Annotated[list[str] | None, typer.Option(help="NAME=VALUE for a stdio server (repeatable).")] = None,
    tool_level: Annotated[list[str] | None, typer.Option(help="TOOL=LEVEL (repeatable).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Add an MCP server for every agent of the workspace."""
    if (url is None) == (command is None):
        fail("give either --url (an HTTP server) or --command (a stdio server)", 2)
    entry: dict[str, Any] = {"name": name}
    if url is not None:
        entry |= {"transport": "http", "url": url, **({"headers": _pairs(header, "--header")} if header else {})}
    else:
        entry |= {"transport": "stdio", "command": command, "args": arg or [],
                  **({"env": _pairs(env, "--env")} if env else {})}
    if tool_level:
        entry["tool_levels"] = _pairs(tool_level, "--tool-level", number=True)

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.post("/api/mcp-servers", entry)

    async def local(s: Services) -> dict[str, Any]:
        return await s.mcp_servers.add(await _workspace_id(s, workspace), entry, actor="cli")

    added = dispatch(remote, local)
    out.print(f"MCP server {added['name']} added ({added['id']})", highlight=False)


@mcp_servers_app.command("list")
def mcp_servers_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The workspace's MCP servers (secrets in headers and env masked)."""

    def remote(c: Client) -> list[dict[str, Any]]:
        key_workspace(workspace)
        return c.get("/api/mcp-servers")

    async def local(s: Services) -> list[dict[str, Any]]:
        return await s.mcp_servers.list(await _workspace_id(s, workspace))

    rows = dispatch(remote, local)
    for r in rows:
        cfg = r.get("config") or {}
        r["transport"] = cfg.get("transport")
        r["where"] = cfg.get("url") or " ".join([cfg.get("command") or "", *(cfg.get("args") or [])]).strip()
    show(rows, [Col("name", "name", id=True), Col("transport", "transport"), Col("where", "where"),
                Col("created", "created_at")], as_json=as_json)


@mcp_servers_app.command("remove")
def mcp_servers_remove(name: Annotated[str, typer.Argument(help="The server's name.")],
                       workspace: WorkspaceOpt = None) -> None:
    """Remove a workspace MCP server (its open connections idle out)."""

    def remote(c: Client) -> None:
        key_workspace(workspace)
        c.delete(f"/api/mcp-servers/{name}")

    async def local(s: Services) -> None:
        await s.mcp_servers.remove(await _workspace_id(s, workspace), name, actor="cli")

    dispatch(remote, local)
    out.print(f"MCP server {name} removed", highlight=False)

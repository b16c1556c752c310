"""Agents and governance: agents (and their MCP servers), approvals, runs (the audit
log is cli/audit.py). An agent's MCP server entry is the dict ``agents/tools/mcp.py``
describes; ``agents mcp add`` builds it from options."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from warden.cli.common import (
    Col,
    JsonOpt,
    NoteOpt,
    WorkspaceOpt,
    dispatch,
    fail,
    key_workspace,
    operator,
    out,
    show,
)

if TYPE_CHECKING:
    from warden.cli.client import Client
    from warden.services import Services

agents_app = typer.Typer(help="Agents: instructions, model policy, tools, tier.", no_args_is_help=True)
mcp_app = typer.Typer(help="An agent's MCP servers: add, list, remove.", no_args_is_help=True)
agents_app.add_typer(mcp_app, name="mcp")
approvals_app = typer.Typer(help="Actions waiting for a human: list, approve, reject.", no_args_is_help=True)
runs_app = typer.Typer(help="Agent runs: list (stuck ones too), show, cancel.", no_args_is_help=True)


def _pairs(values: list[str] | None, what: str, *, number: bool = False) -> dict[str, Any]:
    """``K=V`` options as a dict (``number``: V is a risk level 1-4)."""
    result: dict[str, Any] = {}
    for item in values or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            fail(f"{what}: expected NAME=VALUE, got '{item}'", 2)
        if number:
            if v not in ("1", "2", "3", "4"):
                fail(f"{what}: a risk level is 1, 2, 3 or 4, got '{item}'", 2)
            result[k] = int(v)
        else:
            result[k] = v
    return result


def _view(agent: Any) -> dict[str, Any]:
    from warden.agents.registry import AgentView

    return AgentView.of(agent).model_dump(mode="json")


@agents_app.command("create")
def agents_create(
    name: str,
    instructions: Annotated[str, typer.Option(help="System instructions.")] = "",
    model: Annotated[str, typer.Option(help="auto, a model group, or provider/model.")] = "auto",
    fallback: Annotated[list[str] | None, typer.Option(help="Fallback model (repeatable).")] = None,
    tool: Annotated[list[str] | None, typer.Option(help="Tool name (repeatable).")] = None,
    tool_level: Annotated[list[str] | None, typer.Option(
        help="TOOL=LEVEL: the risk level governance judges a tool by (1 read … 4 critical).")] = None,
    max_steps: Annotated[int, typer.Option(help="Model calls per run.")] = 8,
    tier: Annotated[str, typer.Option(help="student, intern, supervised or autonomous.")] = "student",
    description: Annotated[str | None, typer.Option(help="What the agent is for.")] = None,
    external: Annotated[bool, typer.Option(
        "--external", help="Its loop runs elsewhere (Claude Code, an SDK agent): Warden governs and "
                           "meters it through keys bound to it (`warden keys create --agent`).")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Create an agent."""
    spec: dict[str, Any] = {"name": name, "instructions": instructions, "model": model,
                            "fallbacks": fallback or [], "tools": tool or [], "max_steps": max_steps,
                            "description": description, "kind": "external" if external else "hosted"}
    if tool_level:
        spec["tool_levels"] = _pairs(tool_level, "--tool-level", number=True)
    if tier != "student":
        spec["tier"] = tier

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.post("/api/agents", spec)

    async def local(s: Services) -> dict[str, Any]:
        ws = await s.accounts.workspace_by_name(workspace or "default")
        return _view(await s.agents.create(ws.id, spec, principal=operator(ws.id, ws.name)))

    agent = dispatch(remote, local)
    kind = " (external: bind a key with `warden keys create --agent`)" if external else ""
    out.print(f"created agent [bold]{agent['name']}[/bold] ({agent['id']}){kind}", highlight=False)


@agents_app.command("list")
def agents_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List the workspace's agents."""

    def remote(c: Client) -> list[dict[str, Any]]:
        key_workspace(workspace)
        return c.get("/api/agents")

    async def local(s: Services) -> list[dict[str, Any]]:
        ws = await s.accounts.workspace_by_name(workspace or "default")
        return [_view(a) for a in await s.agents.list(ws.id)]

    rows = dispatch(remote, local)
    for r in rows:
        r["mcp"] = [m.get("name") for m in r.get("mcp_servers") or []]
    show(rows, [Col("id", "id", id=True), Col("name", "name"), Col("kind", "kind"), Col("tier", "tier"),
                Col("model", "model"),
                Col("tools", "tools"), Col("mcp", "mcp"), Col("max steps", "max_steps")], as_json=as_json)


@agents_app.command("show")
def agents_show(agent: str, workspace: WorkspaceOpt = None) -> None:
    """Show one agent (by id or name) as JSON."""

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.get(f"/api/agents/{agent}")

    async def local(s: Services) -> dict[str, Any]:
        ws = await s.accounts.workspace_by_name(workspace or "default")
        return _view(await s.agents.get(ws.id, agent))

    out.print_json(data=dispatch(remote, local))


# --- MCP servers (through the server only) ---------------------------------------


def _servers(c: Client, agent: str) -> list[dict[str, Any]]:
    return list(c.get(f"/api/agents/{agent}").get("mcp_servers") or [])


@mcp_app.command("add")
def mcp_add(
    agent: Annotated[str, typer.Argument(help="Agent id or name.")],
    name: Annotated[str, typer.Argument(help="The server's name (its tools are NAME__tool).")],
    url: Annotated[str | None, typer.Option(help="Streamable HTTP endpoint (https://…/mcp).")] = None,
    command: Annotated[str | None, typer.Option(
        help="A stdio server's executable (must be on WARDEN_MCP_STDIO_ALLOW).")] = None,
    arg: Annotated[list[str] | None, typer.Option(help="An argument of --command (repeatable).")] = None,
    header: Annotated[list[str] | None, typer.Option(help="NAME=VALUE HTTP header (repeatable).")] = None,
    env: Annotated[list[str] | None, typer.Option(help="NAME=VALUE for a stdio server (repeatable).")] = None,
    tool_level: Annotated[list[str] | None, typer.Option(
        help="TOOL=LEVEL for one of the server's own tools (repeatable, admins only).")] = None,
) -> None:
    """Add (or replace, by name) an MCP server of an agent."""
    if (url is None) == (command is None):
        fail("give either --url (an HTTP server) or --command (a stdio server)", 2)
    entry: dict[str, Any] = {"name": name}
    if url is not None:
        entry |= {"transport": "http", "url": url}
        if header:
            entry["headers"] = _pairs(header, "--header")
    else:
        entry |= {"transport": "stdio", "command": command, "args": arg or []}
        if env:
            entry["env"] = _pairs(env, "--env")
    if tool_level:
        entry["tool_levels"] = _pairs(tool_level, "--tool-level", number=True)

    def remote(c: Client) -> dict[str, Any]:
        servers = [s for s in _servers(c, agent) if s.get("name") != name]
        return c.patch(f"/api/agents/{agent}", {"mcp_servers": [*servers, entry]})

    updated = dispatch(remote)
    out.print(f"agent {updated['name']}: MCP server {name} set "
              f"({len(updated['mcp_servers'])} in all)", highlight=False)


@mcp_app.command("list")
def mcp_list(agent: Annotated[str, typer.Argument(help="Agent id or name.")], as_json: JsonOpt = False) -> None:
    """An agent's MCP servers (secrets in headers and env masked)."""
    rows = dispatch(lambda c: _servers(c, agent))
    for r in rows:
        r["where"] = r.get("url") or " ".join([r.get("command") or "", *(r.get("args") or [])]).strip()
        r["levels"] = [f"{k}={v}" for k, v in (r.get("tool_levels") or {}).items()]
    show(rows, [Col("name", "name", id=True), Col("transport", "transport"), Col("where", "where"),
                Col("trusted", "trusted"), Col("tool levels", "levels")], as_json=as_json)


@mcp_app.command("remove")
def mcp_remove(agent: Annotated[str, typer.Argument(help="Agent id or name.")],
               name: Annotated[str, typer.Argument(help="The server's name.")]) -> None:
    """Remove an MCP server from an agent."""

    def remote(c: Client) -> dict[str, Any]:
        servers = _servers(c, agent)
        if not any(s.get("name") == name for s in servers):
            fail(f"agent {agent} has no MCP server named '{name}' (see: warden agents mcp list {agent})")
        return c.patch(f"/api/agents/{agent}", {"mcp_servers": [s for s in servers if s.get("name") != name]})

    updated = dispatch(remote)
    out.print(f"agent {updated['name']}: MCP server {name} removed", highlight=False)


# --- approvals -------------------------------------------------------------------


APPROVAL_COLS = [Col("id", "id", id=True), Col("status", "status"), Col("tool", "tool"),
                 Col("level", "risk_level"), Col("run", "run_id", id=True), Col("requested", "requested_at"),
                 Col("decided by", "decided_by"), Col("agent", "agent_id")]


@approvals_app.command("list")
def approvals_list(
    status: Annotated[str | None, typer.Option(help="pending, approved, rejected or expired.")] = "pending",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List approvals (pending ones by default)."""

    def remote(c: Client) -> list[dict[str, Any]]:
        key_workspace(workspace)
        return c.get("/api/approvals", status=status or None, limit=500)

    async def local(s: Services) -> list[dict[str, Any]]:
        from dataclasses import asdict

        ws = await s.accounts.workspace_by_name(workspace or "default")
        found = await s.approvals.list(operator(ws.id, ws.name), status=status or None, limit=500)
        return [{**asdict(a), "requested_at": a.requested_at.isoformat()} for a in found]

    show(dispatch(remote, local), APPROVAL_COLS, as_json=as_json)


def decide(approval_id: str, decision: str, note: str | None, workspace: str | None) -> None:
    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.post(f"/api/approvals/{approval_id}", {"decision": decision, "note": note})

    async def local(s: Services) -> dict[str, Any]:
        from dataclasses import asdict

        ws = await s.accounts.workspace_by_name(workspace or "default")
        # Recorded and announced only: a serving instance carries the decision out, with the
        # server's settings (this process is not one: see run_with_services).
        return asdict(await s.approvals.decide(operator(ws.id, ws.name), approval_id, decision, note=note))

    a = dispatch(remote, local)
    out.print(f"approval {a['id']} {a['status']} by {a['decided_by']} (run {a['run_id']})", highlight=False)


@approvals_app.command("approve")
def approvals_approve(approval_id: str, note: NoteOpt = None, workspace: WorkspaceOpt = None) -> None:
    """Approve a pending action: the tool runs and the run continues."""
    decide(approval_id, "approve", note, workspace)


@approvals_app.command("reject")
def approvals_reject(approval_id: str, note: NoteOpt = None, workspace: WorkspaceOpt = None) -> None:
    """Reject a pending action: the agent is told why and continues without it."""
    decide(approval_id, "reject", note, workspace)


# --- runs (through the server only) ------------------------------------------------


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="running, paused, completed, failed or cancelled.")] = None,
    stuck: Annotated[bool, typer.Option("--stuck", help="Only runs that stopped making progress.")] = False,
    agent: Annotated[str | None, typer.Option(help="Only this agent's runs (id or name).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List runs, with who holds each and why a stuck one is stuck."""
    rows = dispatch(lambda c: c.get("/api/runs", status=status, stuck="true" if stuck else None,
                                    agent=agent, limit=limit))
    rows = rows.get("runs", rows) if isinstance(rows, dict) else rows
    show(rows, [Col("id", "id", id=True), Col("status", "status"), Col("agent", "agent_id"),
                Col("started", "started_at"), Col("ended", "ended_at"), Col("stuck", "stuck_reason"),
                Col("owner", "owner")], as_json=as_json)


@runs_app.command("show")
def runs_show(run_id: str) -> None:
    """One run as JSON: steps, tool calls with their decisions, usage and cost."""
    out.print_json(data=dispatch(lambda c: c.get(f"/api/runs/{run_id}")))


@runs_app.command("cancel")
def runs_cancel(run_id: str, reason: Annotated[str | None, typer.Option(help="Why (audited).")] = None) -> None:
    """Cancel a run: its pending approvals close and its session is free again."""
    run = dispatch(lambda c: c.post(f"/api/runs/{run_id}/cancel", {"reason": reason} if reason else {}))
    out.print(f"run {run.get('id', run_id)} {run.get('status', 'cancelled')}", highlight=False)

"""Agents and governance: agents and approvals (the audit log is cli/audit.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from warden.cli.common import NoteOpt, WorkspaceOpt, id_table, operator, out, run_with_services
from warden.services import Services

agents_app = typer.Typer(help="Agents: instructions, model policy, tools, tier.", no_args_is_help=True)
approvals_app = typer.Typer(help="Actions waiting for a human: list, approve, reject.", no_args_is_help=True)


@agents_app.command("create")
def agents_create(
    name: str,
    instructions: Annotated[str, typer.Option(help="System instructions.")] = "",
    model: Annotated[str, typer.Option(help="auto, a model group, or provider/model.")] = "auto",
    fallback: Annotated[list[str] | None, typer.Option(help="Fallback model (repeatable).")] = None,
    tool: Annotated[list[str] | None, typer.Option(help="Tool name (repeatable).")] = None,
    max_steps: Annotated[int, typer.Option(help="Model calls per run.")] = 8,
    tier: Annotated[str, typer.Option(help="student, intern, supervised or autonomous.")] = "student",
    description: Annotated[str | None, typer.Option(help="What the agent is for.")] = None,
    workspace: WorkspaceOpt = "default",
) -> None:
    """Create an agent."""
    spec = {"name": name, "instructions": instructions, "model": model, "fallbacks": fallback or [],
            "tools": tool or [], "max_steps": max_steps, "description": description}
    if tier != "student":
        spec["tier"] = tier

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        return await s.agents.create(ws.id, spec, principal=operator(ws.id, workspace))

    agent = run_with_services(fn)
    out.print(f"created agent [bold]{agent.name}[/bold] ({agent.id})", highlight=False)


@agents_app.command("list")
def agents_list(workspace: WorkspaceOpt = "default") -> None:
    """List the workspace's agents."""

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        return await s.agents.list(ws.id)

    table = id_table("name", "model", "tools", "tier", "max steps")
    for a in run_with_services(fn):
        table.add_row(a.id, a.name, (a.model_policy or {}).get("model", "auto"), ", ".join(a.tools or []) or "-",
                      a.tier, str(a.max_steps))
    out.print(table)


@agents_app.command("show")
def agents_show(agent: str, workspace: WorkspaceOpt = "default") -> None:
    """Show one agent (by id or name) as JSON."""
    from warden.agents.registry import AgentView

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        return await s.agents.get(ws.id, agent)

    out.print_json(AgentView.of(run_with_services(fn)).model_dump_json())


@approvals_app.command("list")
def approvals_list(
    status: Annotated[str | None, typer.Option(help="pending, approved, rejected or expired.")] = "pending",
    workspace: WorkspaceOpt = "default",
) -> None:
    """List approvals (pending ones by default)."""

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        return await s.approvals.list(operator(ws.id, workspace), status=status or None, limit=500)

    table = id_table("status", "agent", "tool", "level", "run", "requested", "decided by")
    for a in run_with_services(fn):
        table.add_row(a.id, a.status, a.agent_id, a.tool, str(a.risk_level or "-"), a.run_id,
                      a.requested_at.strftime("%Y-%m-%d %H:%M:%S"), a.decided_by or "-")
    out.print(table)


def _decide(approval_id: str, decision: str, note: str | None, workspace: str) -> None:
    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        # wait: this process exits afterwards, so the resumed run finishes (or pauses) here first.
        return await s.approvals.decide(operator(ws.id, workspace), approval_id, decision, note=note,
                                        wait=True)

    a = run_with_services(fn)
    out.print(f"approval {a.id} {a.status} by {a.decided_by} (run {a.run_id})", highlight=False)


@approvals_app.command("approve")
def approvals_approve(approval_id: str, note: NoteOpt = None, workspace: WorkspaceOpt = "default") -> None:
    """Approve a pending action: the tool runs and the run continues."""
    _decide(approval_id, "approve", note, workspace)


@approvals_app.command("reject")
def approvals_reject(approval_id: str, note: NoteOpt = None, workspace: WorkspaceOpt = "default") -> None:
    """Reject a pending action: the agent is told why and continues without it."""
    _decide(approval_id, "reject", note, workspace)

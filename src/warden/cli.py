"""The ``warden`` command. Management commands act on the configured database
directly, so they work before the server starts."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from warden.config import Settings, load_settings
from warden.errors import ConfigError, WardenError
from warden.services import Services

T = TypeVar("T")
app = typer.Typer(help="Warden: governed AI agents on your own LLM keys.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
ws_app = typer.Typer(help="Workspaces.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(ws_app, name="workspaces")
out = Console()
err = Console(stderr=True)


def id_table(*columns: str) -> Table:
    """A table whose first column is an id, never truncated (people copy ids)."""
    table = Table()
    table.add_column("id", no_wrap=True, min_width=24)
    for name in columns:
        table.add_column(name)
    return table


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc), 2)
        raise  # unreachable: _fail exits


def run_with_services(fn: Callable[[Services], Awaitable[T]], *, bootstrap: bool = True) -> T:
    """Start the services (no HTTP server), run ``fn``, close; errors become one line."""
    settings = _settings()

    async def main() -> T:
        services = await Services.start(settings, bootstrap=bootstrap)
        try:
            return await fn(services)
        finally:
            await services.close()

    try:
        return asyncio.run(main())
    except (WardenError, ConfigError) as exc:
        _fail(getattr(exc, "message", str(exc)))
        raise  # unreachable


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (WARDEN_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (WARDEN_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (WARDEN_WORKERS).")] = None,
) -> None:
    """Run the HTTP server (migrates the database first)."""
    from warden.logs import configure_logging

    for name, value in (("WARDEN_HOST", host), ("WARDEN_PORT", port), ("WARDEN_WORKERS", workers)):
        if value is not None:
            os.environ[name] = str(value)
    settings = _settings()
    configure_logging(settings.log_level)

    async def prepare() -> None:
        # Migrate and bootstrap once, before any worker starts serving.
        services = await Services.start(settings)
        await services.close()

    try:
        asyncio.run(prepare())
    except (WardenError, ConfigError) as exc:
        _fail(getattr(exc, "message", str(exc)))
    err.print(f"Warden listening on http://{settings.host}:{settings.port}", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    # Same pid, same environment (the options above are in it): the serving process
    # starts without the CLI and alembic loaded (see ``warden.server``).
    os.execv(sys.executable, [sys.executable, "-m", "warden.server"])


@app.command("migrate")
def migrate_cmd() -> None:
    """Bring the database schema up to date."""
    from warden.store import migrate
    from warden.store.db import Database

    settings = _settings()

    async def main() -> str | None:
        db = Database(settings.db_url)
        try:
            return await migrate.upgrade(db)
        finally:
            await db.close()

    rev = asyncio.run(main())
    out.print(f"database at revision {rev}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")],
    workspace: Annotated[str, typer.Option(help="Workspace name.")] = "default",
    role: Annotated[str, typer.Option(help="admin or member.")] = "member",
    budget: Annotated[str | None, typer.Option(
        help="Spending limit of this key, AMOUNT/PERIOD in USD: 10/month, 2.5/day, 100/total.")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute for this key.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute for this key.")] = None,
) -> None:
    """Create an API key and print it once."""
    from warden.tenancy.budgets import BudgetSpec, parse_budget

    try:
        limit = parse_budget(budget) if budget is not None else None
    except WardenError as exc:
        _fail(exc.message, 2)

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        created = await s.accounts.create_key(ws.id, name, role, rpm_limit=rpm,  # type: ignore[arg-type]
                                              tpm_limit=tpm)
        if limit is not None:
            await s.budgets.put(ws.id, BudgetSpec(scope="key", scope_id=created.id,
                                                  limit_usd=limit[0], period=limit[1]))
        return created

    created = run_with_services(fn)
    err.print(f"created {created.id} ({created.role}) in workspace '{workspace}'; "
              "this is the only time the key is shown:", highlight=False)
    print(created.key)


@keys_app.command("list")
def keys_list(workspace: Annotated[str | None, typer.Option(help="Workspace name.")] = None) -> None:
    """List API keys (never the keys themselves)."""

    async def fn(s: Services):
        ws_id = (await s.accounts.workspace_by_name(workspace)).id if workspace else None
        names = {w.id: w.name for w in await s.accounts.list_workspaces()}
        return [(k, names.get(k.workspace_id, "?")) for k in await s.accounts.list_keys(ws_id)]

    table = id_table("name", "workspace", "role", "prefix", "created", "revoked")
    for k, ws_name in run_with_services(fn):
        table.add_row(k.id, k.name, ws_name, k.role, k.prefix + "…",
                      k.created_at.strftime("%Y-%m-%d %H:%M"),
                      k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key."""
    key = run_with_services(lambda s: s.accounts.revoke_key(key_id))
    out.print(f"revoked {key.id} ({key.name})")


@ws_app.command("create")
def ws_create(name: str) -> None:
    """Create a workspace."""
    ws = run_with_services(lambda s: s.accounts.create_workspace(name))
    out.print(f"created workspace {ws.name} ({ws.id})")


@ws_app.command("list")
def ws_list() -> None:
    """List workspaces."""
    table = id_table("name", "created")
    for w in run_with_services(lambda s: s.accounts.list_workspaces()):
        table.add_row(w.id, w.name, w.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


# --- BYOK and the vault --------------------------------------------------------

byok_app = typer.Typer(help="Provider keys (BYOK), encrypted at rest.", no_args_is_help=True)
vault_app = typer.Typer(help="The master key that encrypts provider keys.", no_args_is_help=True)
app.add_typer(byok_app, name="byok")
app.add_typer(vault_app, name="vault")
WorkspaceOpt = Annotated[str, typer.Option(help="Workspace name.")]


def _secret_arg(value: str | None, what: str) -> str | None:
    """``-`` reads the secret from standard input, keeping it out of shell history."""
    if value != "-":
        return value
    text = sys.stdin.readline().strip()
    if not text:
        _fail(f"no {what} on standard input")
    return text


@byok_app.command("add")
def byok_add(
    provider: Annotated[str, typer.Argument(help="Provider id (see GET /api/providers).")],
    key: Annotated[str | None, typer.Option("--key", help="The API key, or - to read it from stdin.")] = None,
    label: Annotated[str, typer.Option(help="Tells several keys of one provider apart.")] = "default",
    base_url: Annotated[str | None, typer.Option("--base-url", help="Override the provider's URL.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="A model it serves (repeatable).")] = None,
    workspace: WorkspaceOpt = "default",
) -> None:
    """Store a provider key (encrypted); prints its masked view."""
    data = {"provider": provider, "api_key": _secret_arg(key, "key"), "label": label,
            "base_url": base_url, "models": [{"id": m} for m in model] if model else None}

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        return await s.byok.create(ws.id, data, actor="cli")

    view = run_with_services(fn)
    out.print(f"added {view.id} ({view.provider}/{view.label}) {view.masked or 'no key'} "
              f"{view.fingerprint or ''}".rstrip(), highlight=False)


@byok_app.command("list")
def byok_list(workspace: WorkspaceOpt = "default") -> None:
    """List provider keys (masked; environment ones included for 'default')."""

    async def fn(s: Services):
        return await s.byok.list((await s.accounts.workspace_by_name(workspace)).id)

    # Narrow enough for 80 columns; fingerprints and base URLs are in GET /api/byok.
    table = id_table("provider/label", "key", "status", "source")
    for v in run_with_services(fn):
        table.add_row(v.id, f"{v.provider}/{v.label}", v.masked or "-", v.status, v.source)
    out.print(table)


@byok_app.command("test")
def byok_test(cred_id: str, workspace: WorkspaceOpt = "default") -> None:
    """Call the provider's model list with the key; exits 1 unless it works."""

    async def fn(s: Services):
        return await s.byok.test((await s.accounts.workspace_by_name(workspace)).id, cred_id)

    result = run_with_services(fn)
    out.print(f"{result.status} ({result.latency_ms:.0f} ms): {result.detail}", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


@byok_app.command("remove")
def byok_remove(cred_id: str, workspace: WorkspaceOpt = "default") -> None:
    """Delete a stored provider key."""

    async def fn(s: Services):
        return await s.byok.delete((await s.accounts.workspace_by_name(workspace)).id, cred_id)

    view = run_with_services(fn)
    out.print(f"removed {view.id} ({view.provider}/{view.label})", highlight=False)


@vault_app.command("generate-key")
def vault_generate_key() -> None:
    """Print a fresh master key (base64 of 32 random bytes)."""
    from warden.vault.cipher import generate_master_key

    print(generate_master_key())


@vault_app.command("rotate")
def vault_rotate(
    new_key: Annotated[str, typer.Option("--new-key", help="New master key (base64), or - for stdin.")],
) -> None:
    """Re-encrypt every provider key under a new master key, in one transaction."""
    from warden.vault.keyring import decode_key

    try:
        raw = decode_key(_secret_arg(new_key, "key") or "", "--new-key")
    except ConfigError as exc:
        _fail(str(exc), 2)
        raise  # unreachable
    result = run_with_services(lambda s: s.byok.rotate_master_key(raw, actor="cli"), bootstrap=False)
    out.print(f"re-encrypted {result.count} credentials under master key id {result.new_key_id}",
              highlight=False)
    if result.key_file_updated:
        out.print("master.key now holds the new key; running servers pick it up on their own",
                  highlight=False)
    else:
        err.print("WARDEN_MASTER_KEY is set: update it to the new key on every instance "
                  "(while rolling, 'NEW,OLD' lets old and new instances both work)", highlight=False)


route_app = typer.Typer(help="Routing.", no_args_is_help=True)
app.add_typer(route_app, name="route")


@route_app.command("explain")
def route_explain(
    prompt: str,
    model: Annotated[str, typer.Option(help="auto, a model group, provider/model or a model id.")] = "auto",
    tools: Annotated[bool, typer.Option("--tools", help="The request offers tools.")] = False,
    image: Annotated[bool, typer.Option("--image", help="The request carries an image.")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="The request's max_tokens.")] = None,
    prefer: Annotated[str, typer.Option(help="value, cost, quality or latency.")] = "value",
    workspace: Annotated[str, typer.Option(help="Workspace name.")] = "default",
) -> None:
    """Show the routing plan for a prompt: complexity, steps with scores and reasons."""
    from warden.api.route import ExplainBody, build_request
    from warden.gateway.context import CallContext
    from warden.gateway.context import RouteOptions

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        body = ExplainBody(model=model, prompt=prompt, tools=tools, image=image, max_tokens=max_tokens)
        ctx = CallContext(ws.id, None, "cli", RouteOptions.from_dict({"prefer": prefer}))
        plan, _ = await s.gateway.plan(build_request(body), ctx)
        return plan

    plan = run_with_services(fn)
    c = plan.complexity
    out.print(f"model [bold]{plan.model_requested}[/bold] ({plan.kind}), complexity "
              f"[bold]{c.level}[/bold] (score {c.score:.2f}): {'; '.join(c.reasons) or 'no signals'}")
    table = Table("#", "deployment", "score", "reason")
    for i, step in enumerate(plan.steps, 1):
        table.add_row(str(i), step.deployment.name, f"{step.score:.3f}", step.reason)
    out.print(table)
    for who, why in plan.rejected[:20]:
        out.print(f"[dim]excluded {who}: {why}[/dim]", highlight=False)


@app.command("usage")
def usage_cmd(
    group_by: Annotated[str, typer.Option(help="model, provider, key or day.")] = "model",
    workspace: Annotated[str, typer.Option(help="Workspace name.")] = "default",
) -> None:
    """Spend so far, grouped."""
    from warden.tenancy.usage import summarize

    if group_by not in ("model", "provider", "key", "day"):
        _fail("--group-by must be model, provider, key or day", 2)

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        return await summarize(s.db, ws.id, group_by)  # type: ignore[arg-type]

    table = Table(group_by, "requests", "errors", "input tokens", "output tokens", "cost (USD)")
    for r in run_with_services(fn):
        cost = f"{r.cost_usd}" + (f" (+{r.unpriced_requests} unpriced)" if r.unpriced_requests else "")
        table.add_row(r.group or "-", str(r.requests), str(r.errors), str(r.input_tokens),
                      str(r.output_tokens), cost)
    out.print(table)


# --- agents ---------------------------------------------------------------------

agents_app = typer.Typer(help="Agents: instructions, model policy, tools, tier.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")


def _cli_principal(workspace_id: str, workspace: str):  # noqa: ANN202 - a Principal
    from warden.tenancy.accounts import Principal

    # The CLI acts on the database directly, with the operator's (admin) authority.
    return Principal(workspace_id, workspace, "cli", "admin")


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
        return await s.agents.create(ws.id, spec, principal=_cli_principal(ws.id, workspace))

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


# --- approvals and audit (governance) ------------------------------------------------

approvals_app = typer.Typer(help="Actions waiting for a human: list, approve, reject.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log: verify, export.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")
app.add_typer(audit_app, name="audit")


@approvals_app.command("list")
def approvals_list(
    status: Annotated[str | None, typer.Option(help="pending, approved, rejected or expired.")] = "pending",
    workspace: WorkspaceOpt = "default",
) -> None:
    """List approvals (pending ones by default)."""

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        return await s.approvals.list(_cli_principal(ws.id, workspace), status=status or None, limit=500)

    table = id_table("status", "agent", "tool", "level", "run", "requested", "decided by")
    for a in run_with_services(fn):
        table.add_row(a.id, a.status, a.agent_id, a.tool, str(a.risk_level or "-"), a.run_id,
                      a.requested_at.strftime("%Y-%m-%d %H:%M:%S"), a.decided_by or "-")
    out.print(table)


def _decide(approval_id: str, decision: str, note: str | None, workspace: str) -> None:
    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        # wait: this process exits afterwards, so the resumed run finishes (or pauses) here first.
        return await s.approvals.decide(_cli_principal(ws.id, workspace), approval_id, decision, note=note,
                                        wait=True)

    a = run_with_services(fn)
    out.print(f"approval {a.id} {a.status} by {a.decided_by} (run {a.run_id})", highlight=False)


NoteOpt = Annotated[str | None, typer.Option(help="Why; the agent reads it on a rejection.")]


@approvals_app.command("approve")
def approvals_approve(approval_id: str, note: NoteOpt = None, workspace: WorkspaceOpt = "default") -> None:
    """Approve a pending action: the tool runs and the run continues."""
    _decide(approval_id, "approve", note, workspace)


@approvals_app.command("reject")
def approvals_reject(approval_id: str, note: NoteOpt = None, workspace: WorkspaceOpt = "default") -> None:
    """Reject a pending action: the agent is told why and continues without it."""
    _decide(approval_id, "reject", note, workspace)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check every event's link and hash; exit 1 naming the first broken event."""

    async def fn(s: Services):
        return await s.audit_log.verify()

    result = run_with_services(fn, bootstrap=False)
    if not result.ok:
        _fail(f"audit chain broken at event {result.broken_seq}: {result.reason} "
              f"({result.count} event(s) before it verified)")
    out.print(f"audit chain ok: {result.count} events", highlight=False)


@audit_app.command("export")
def audit_export(
    format: Annotated[str, typer.Option("--format", help="jsonl (one event per line).")] = "jsonl",
    workspace: Annotated[str | None, typer.Option(help="Only this workspace (default: all).")] = None,
) -> None:
    """Write the audit log to stdout, one JSON event per line, in chain order."""
    if format != "jsonl":
        _fail("--format: only jsonl is supported", 2)
    import orjson

    async def fn(s: Services):
        ws_id = (await s.accounts.workspace_by_name(workspace)).id if workspace else None
        async for event in s.audit_log.export(ws_id):
            sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
        sys.stdout.flush()

    run_with_services(fn, bootstrap=False)


def main() -> None:
    app(prog_name="warden")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

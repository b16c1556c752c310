"""Tenancy commands: API keys, workspaces, provider keys (BYOK), the master key,
and spend (``warden usage``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from warden.cli.common import WorkspaceOpt, err, fail, id_table, out, run_with_services
from warden.errors import ConfigError, WardenError
from warden.services import Services

keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
ws_app = typer.Typer(help="Workspaces.", no_args_is_help=True)
byok_app = typer.Typer(help="Provider keys (BYOK), encrypted at rest.", no_args_is_help=True)
vault_app = typer.Typer(help="The master key that encrypts provider keys.", no_args_is_help=True)


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
        fail(exc.message, 2)

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


def _secret_arg(value: str | None, what: str) -> str | None:
    """``-`` reads the secret from standard input, keeping it out of shell history."""
    if value != "-":
        return value
    text = sys.stdin.readline().strip()
    if not text:
        fail(f"no {what} on standard input")
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
    from warden.vault.keyring import generate_master_key

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
        fail(str(exc), 2)
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


def usage_cmd(
    group_by: Annotated[str, typer.Option(help="model, provider, key or day.")] = "model",
    workspace: Annotated[str, typer.Option(help="Workspace name.")] = "default",
) -> None:
    """Spend so far, grouped."""
    from warden.tenancy.usage import summarize

    if group_by not in ("model", "provider", "key", "day"):
        fail("--group-by must be model, provider, key or day", 2)

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        return await summarize(s.db, ws.id, group_by)  # type: ignore[arg-type]

    table = Table(group_by, "requests", "errors", "input tokens", "output tokens", "cost (USD)")
    for r in run_with_services(fn):
        cost = f"{r.cost_usd}" + (f" (+{r.unpriced_requests} unpriced)" if r.unpriced_requests else "")
        table.add_row(r.group or "-", str(r.requests), str(r.errors), str(r.input_tokens),
                      str(r.output_tokens), cost)
    out.print(table)

"""Tenancy commands: API keys, workspaces, provider keys (BYOK), the master key,
and spend (``warden usage``)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from warden.cli.common import (
    Col,
    JsonOpt,
    WorkspaceOpt,
    direct,
    dispatch,
    err,
    fail,
    key_workspace,
    out,
    run_with_services,
    settings_or_exit,
    show,
)
from warden.errors import ConfigError, WardenError

if TYPE_CHECKING:
    from warden.cli.client import Client
    from warden.services import Services

keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
ws_app = typer.Typer(help="Workspaces.", no_args_is_help=True)
byok_app = typer.Typer(help="Provider keys (BYOK), encrypted at rest.", no_args_is_help=True)
vault_app = typer.Typer(help="The master key that encrypts provider keys.", no_args_is_help=True)


def _ws(s: Services, workspace: str | None):  # noqa: ANN202 - a Workspace row
    return s.accounts.workspace_by_name(workspace or "default")


def _key_row(k: Any, ws_name: str | None = None) -> dict[str, Any]:
    from warden.api.keys import KeyView

    row = KeyView.model_validate(k, from_attributes=True).model_dump(mode="json")
    return {**row, "workspace": ws_name} if ws_name else row


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")],
    workspace: WorkspaceOpt = None,
    role: Annotated[str, typer.Option(help="admin or member.")] = "member",
    budget: Annotated[str | None, typer.Option(
        help="Spending limit of this key, AMOUNT/PERIOD in USD: 10/month, 2.5/day, 100/total.")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute for this key.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute for this key.")] = None,
    agent: Annotated[str | None, typer.Option(
        help="Bind the key to this agent (name or id): its calls are the agent's spend.")] = None,
) -> None:
    """Create an API key and print it once."""
    from warden.tenancy.budgets import BudgetSpec, parse_budget

    limit = None
    try:
        limit = parse_budget(budget) if budget is not None else None
    except WardenError as exc:
        fail(exc.message, 2)

    def remote(c: Client) -> tuple[str, str, str]:
        key_workspace(workspace)
        created = c.post("/api/keys", {"name": name, "role": role, "rpm_limit": rpm, "tpm_limit": tpm,
                                       "agent": agent})
        if limit is not None:
            c.put("/api/budgets", {"scope": "key", "scope_id": created["id"],
                                   "limit_usd": str(limit[0]), "period": limit[1]})
        return created["id"], created["role"] + _bound(created["agent_id"]), created["key"]

    async def local(s: Services) -> tuple[str, str, str]:
        ws = await _ws(s, workspace)
        created = await s.accounts.create_key(ws.id, name, role, rpm_limit=rpm,  # type: ignore[arg-type]
                                              tpm_limit=tpm, agent=agent)
        if limit is not None:
            await s.budgets.put(ws.id, BudgetSpec(scope="key", scope_id=created.id,
                                                  limit_usd=limit[0], period=limit[1]))
        return created.id, created.role + _bound(created.agent_id), created.key

    key_id, key_role, raw = dispatch(remote, local)
    err.print(f"created {key_id} ({key_role}); this is the only time the key is shown:", highlight=False,
              soft_wrap=True)  # one line: ids are never cut
    print(raw)


def _bound(agent_id: str | None) -> str:
    return f", bound to agent {agent_id}" if agent_id else ""


@keys_app.command("list")
def keys_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List API keys (never the keys themselves)."""

    def remote(c: Client) -> list[dict[str, Any]]:
        key_workspace(workspace)
        return c.get("/api/keys")

    async def local(s: Services) -> list[dict[str, Any]]:
        ws_id = (await _ws(s, workspace)).id if workspace else None
        names = {w.id: w.name for w in await s.accounts.list_workspaces()}
        return [_key_row(k, names.get(k.workspace_id, "?")) for k in await s.accounts.list_keys(ws_id)]

    show(dispatch(remote, local), [Col("id", "id", id=True), Col("name", "name"), Col("role", "role"),
                                   Col("agent", "agent_id", id=True), Col("prefix", "prefix"),
                                   Col("created", "created_at"),
                                   Col("revoked", "revoked_at")], as_json=as_json)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key."""
    key = dispatch(lambda c: c.delete(f"/api/keys/{key_id}"),
                   lambda s: _revoked(s, key_id))
    out.print(f"revoked {key['id']} ({key['name']})", highlight=False)


async def _revoked(s: Services, key_id: str) -> dict[str, Any]:
    return _key_row(await s.accounts.revoke_key(key_id))


@ws_app.command("create")
def ws_create(name: str) -> None:
    """Create a workspace."""
    ws = dispatch(lambda c: c.post("/api/workspaces", {"name": name}), lambda s: _ws_created(s, name))
    out.print(f"created workspace {ws['name']} ({ws['id']})", highlight=False)


def _ws_row(w: Any) -> dict[str, Any]:
    return {"id": w.id, "name": w.name, "created_at": w.created_at.isoformat()}


async def _ws_created(s: Services, name: str) -> dict[str, Any]:
    return _ws_row(await s.accounts.create_workspace(name))


async def _ws_list(s: Services) -> list[dict[str, Any]]:
    return [_ws_row(w) for w in await s.accounts.list_workspaces()]


@ws_app.command("list")
def ws_list(as_json: JsonOpt = False) -> None:
    """List workspaces."""
    show(dispatch(lambda c: c.get("/api/workspaces"), _ws_list),
         [Col("id", "id", id=True), Col("name", "name"), Col("created", "created_at")], as_json=as_json)


def _secret_arg(value: str | None, what: str) -> str | None:
    """``-`` reads the secret from standard input, keeping it out of shell history."""
    if value != "-":
        return value
    text = sys.stdin.readline().strip()
    if not text:
        fail(f"no {what} on standard input")
    return text


def _cred(v: Any) -> dict[str, Any]:
    return v.model_dump(mode="json")


@byok_app.command("add")
def byok_add(
    provider: Annotated[str, typer.Argument(help="Provider id (see GET /api/providers).")],
    key: Annotated[str | None, typer.Option("--key", help="The API key, or - to read it from stdin.")] = None,
    label: Annotated[str, typer.Option(help="Tells several keys of one provider apart.")] = "default",
    base_url: Annotated[str | None, typer.Option("--base-url", help="Override the provider's URL.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="A model it serves (repeatable).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Store a provider key (encrypted); prints its masked view."""
    data = {"provider": provider, "api_key": _secret_arg(key, "key"), "label": label,
            "base_url": base_url, "models": [{"id": m} for m in model] if model else None}

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.post("/api/byok", {k: v for k, v in data.items() if v is not None})

    async def local(s: Services) -> dict[str, Any]:
        return _cred(await s.byok.create((await _ws(s, workspace)).id, data, actor="cli"))

    view = dispatch(remote, local)
    out.print(f"added {view['id']} ({view['provider']}/{view['label']}) {view.get('masked') or 'no key'} "
              f"{view.get('fingerprint') or ''}".rstrip(), highlight=False)


@byok_app.command("list")
def byok_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List provider keys (masked; environment ones included for 'default')."""

    def remote(c: Client) -> list[dict[str, Any]]:
        key_workspace(workspace)
        return c.get("/api/byok")

    async def local(s: Services) -> list[dict[str, Any]]:
        return [_cred(v) for v in await s.byok.list((await _ws(s, workspace)).id)]

    rows = [{**v, "name": f"{v['provider']}/{v['label']}"} for v in dispatch(remote, local)]
    show(rows, [Col("id", "id", id=True), Col("provider/label", "name"), Col("key", "masked"),
                Col("status", "status"), Col("source", "source"), Col("base URL", "base_url")],
         as_json=as_json)


@byok_app.command("test")
def byok_test(cred_id: str, workspace: WorkspaceOpt = None) -> None:
    """Call the provider's model list with the key; exits 1 unless it works."""

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.post(f"/api/byok/{cred_id}/test")

    async def local(s: Services) -> dict[str, Any]:
        return (await s.byok.test((await _ws(s, workspace)).id, cred_id)).model_dump(mode="json")

    result = dispatch(remote, local)
    out.print(f"{result['status']} ({result['latency_ms']:.0f} ms): {result['detail']}", highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


@byok_app.command("remove")
def byok_remove(cred_id: str, workspace: WorkspaceOpt = None) -> None:
    """Delete a stored provider key."""

    def remote(c: Client) -> dict[str, Any]:
        key_workspace(workspace)
        return c.delete(f"/api/byok/{cred_id}")

    async def local(s: Services) -> dict[str, Any]:
        return _cred(await s.byok.delete((await _ws(s, workspace)).id, cred_id))

    view = dispatch(remote, local)
    out.print(f"removed {view['id']} ({view['provider']}/{view['label']})", highlight=False)


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
    direct(settings_or_exit(), "re-encrypting on the database directly")
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
    group_by: Annotated[str, typer.Option(
        help="model, provider, key, day, session (a coding agent's session) or agent.")] = "model",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Spend so far, grouped."""
    from warden.tenancy.usage import summarize

    if group_by not in ("model", "provider", "key", "day", "session", "agent"):
        fail("--group-by must be model, provider, key, day, session or agent", 2)

    def remote(c: Client) -> list[dict[str, Any]]:
        key_workspace(workspace)
        return c.get("/api/usage", group_by=group_by)["rows"]

    async def local(s: Services) -> list[dict[str, Any]]:
        rows = await summarize(s.db, (await _ws(s, workspace)).id, group_by)  # type: ignore[arg-type]
        return [{**asdict(r), "cost_usd": str(r.cost_usd)} for r in rows]

    rows = dispatch(remote, local)
    for r in rows:
        r["cost"] = str(r["cost_usd"]) + (f" (+{r['unpriced_requests']} unpriced)"
                                          if r.get("unpriced_requests") else "")
    show(rows, [Col(group_by, "group", id=True), Col("requests", "requests"), Col("errors", "errors"),
                Col("input tokens", "input_tokens"), Col("output tokens", "output_tokens"),
                Col("cost (USD)", "cost")], as_json=as_json)

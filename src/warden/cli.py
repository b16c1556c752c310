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
    import uvicorn

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
    uvicorn.run("warden.app:create_app_from_env", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, loop="uvloop", http="httptools",
                log_config=None, access_log=False, lifespan="on", server_header=False)


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
) -> None:
    """Create an API key and print it once."""

    async def fn(s: Services):
        ws = await s.accounts.workspace_by_name(workspace)
        return await s.accounts.create_key(ws.id, name, role)  # type: ignore[arg-type]

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

    table = Table("id", "name", "workspace", "role", "prefix", "created", "revoked")
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
    table = Table("id", "name", "created")
    for w in run_with_services(lambda s: s.accounts.list_workspaces()):
        table.add_row(w.id, w.name, w.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


def main() -> None:
    app(prog_name="warden")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

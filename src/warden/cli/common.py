"""What every command shares: the consoles, one-line failures, settings, and
running a coroutine against started services."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from warden.config import Settings, load_settings
from warden.errors import ConfigError, WardenError
from warden.services import Services

T = TypeVar("T")
out = Console()
err = Console(stderr=True)
WorkspaceOpt = Annotated[str, typer.Option(help="Workspace name.")]
NoteOpt = Annotated[str | None, typer.Option(help="Why; the agent reads it on a rejection.")]


def id_table(*columns: str) -> Table:
    """A table whose first column is an id, never truncated (people copy ids)."""
    table = Table()
    table.add_column("id", no_wrap=True, min_width=24)
    for name in columns:
        table.add_column(name)
    return table


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
        raise  # unreachable: _fail exits


def run_with_services(fn: Callable[[Services], Awaitable[T]], *, bootstrap: bool = True) -> T:
    """Start the services (no HTTP server), run ``fn``, close; errors become one line."""
    settings = settings_or_exit()

    async def main() -> T:
        services = await Services.start(settings, bootstrap=bootstrap)
        try:
            return await fn(services)
        finally:
            await services.close()

    try:
        return asyncio.run(main())
    except (WardenError, ConfigError) as exc:
        fail(getattr(exc, "message", str(exc)))
        raise  # unreachable




def operator(workspace_id: str, workspace: str):  # noqa: ANN202 - a Principal
    from warden.tenancy.accounts import Principal

    # The CLI acts on the database directly, with the operator's (admin) authority.
    return Principal(workspace_id, workspace, "cli", "admin")

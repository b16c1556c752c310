"""What every command shares: the consoles, one-line failures, settings, tables
that fit the terminal (or ``--json``), and the two ways a command runs.

A command runs as a client of the server of its data directory when one is
reachable (``cli/client.py``), so the server's settings, health and live state
apply. With none, a command that can acts on the database directly and says so
in one line; it never creates a database (only ``serve`` and ``init`` do)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from warden.config import Settings, load_settings
from warden.errors import ConfigError, WardenError

if TYPE_CHECKING:
    from warden.cli.client import Client
    from warden.services import Services

T = TypeVar("T")
out = Console()
err = Console(stderr=True)
WorkspaceOpt = Annotated[str | None, typer.Option(
    help="Workspace name (default: 'default'; through a server: the key's own workspace).")]
NoteOpt = Annotated[str | None, typer.Option(help="Why; the agent reads it on a rejection.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]


@dataclass(frozen=True)
class Col:
    """A table column: ``key`` in each row; an id is never cut (people copy ids)."""

    title: str
    key: str
    id: bool = False


def show(rows: Sequence[dict[str, Any]], cols: Sequence[Col], *, as_json: bool = False) -> None:
    """Rows as a table that fits the terminal, or as JSON. Ids keep their full width;
    other columns wrap, and when even that does not fit, the last ones are dropped
    (named under the table)."""
    if as_json:
        print(json.dumps(list(rows), indent=2, default=str))
        return
    texts = [[_cell(r.get(c.key)) for c in cols] for r in rows]
    widest = [max([len(c.title) if c.id else 0, *(len(t[i]) for t in texts)], default=0)
              for i, c in enumerate(cols)]
    need = [w if c.id else max(3, min(w, 16), *(len(word) for word in c.title.split()))
            for w, c in zip(widest, cols, strict=True)]
    keep = list(range(len(cols)))
    while len(keep) > 1 and sum(need[i] + 3 for i in keep) + 2 > out.width:
        droppable = [i for i in keep if not cols[i].id]
        if not droppable:
            break
        keep.remove(droppable[-1])
    table = Table()
    for i in keep:
        c = cols[i]
        table.add_column(c.title, no_wrap=c.id, min_width=need[i], overflow="fold")
    for t in texts:
        table.add_row(*(t[i] for i in keep))
    # Ids alone wider than the terminal: let the terminal wrap the lines, never cut an id.
    out.print(table, width=max(out.width, sum(need[i] + 3 for i in keep) + 1), crop=False)
    dropped = [cols[i].title for i in range(len(cols)) if i not in keep]
    if dropped:
        err.print(f"(not shown at this width: {', '.join(dropped)}; --json has every field)",
                  highlight=False, soft_wrap=True)


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        return value[:16].replace("T", " ")  # an ISO time, to the minute
    return str(value)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc), 2)
        raise  # unreachable: _fail exits


def sqlite_path(settings: Settings) -> Path | None:
    return Path(settings.db_url.split(":///", 1)[1]) if settings.is_sqlite else None


def database_or_exit(settings: Settings) -> str:
    """Where the database is; refuses (naming the data directory) when it does not exist
    yet: a command run with another data directory than the server's must not quietly
    start a second, empty one."""
    path = sqlite_path(settings)
    if path is None:
        return settings.db_url.split("@")[-1]
    if not path.exists():
        fail(f"no Warden database in {settings.data_dir} (and no server running for it): start the "
             "server with `warden serve` or create it with `warden init`; if your server uses "
             "another data directory, set WARDEN_DATA_DIR (or WARDEN_URL) to it")
    return str(path)


def direct(settings: Settings, what: str = "acting on the database directly") -> None:
    """The one line a command prints when it works on the database, not through a server."""
    err.print(f"{what}: {database_or_exit(settings)}", highlight=False, soft_wrap=True)


def dispatch(remote: Callable[[Client], T], local: Callable[[Services], Awaitable[T]] | None = None) -> T:
    """Run ``remote`` against the server of this data directory; with none, ``local`` on
    its database (announced), or fail naming how to start one."""
    from warden.cli.client import Client, Refused, find_key, find_server

    settings = settings_or_exit()
    try:
        server = find_server(settings)
        if server is not None:
            client = Client(server, find_key(settings))
            try:
                return remote(client)
            finally:
                client.close()
    except Refused as exc:
        fail(str(exc))
    if local is None:
        fail(f"no Warden server is running for {settings.data_dir}: start one with `warden serve` "
             "(or set WARDEN_URL to yours)")
    direct(settings, f"no server running for {settings.data_dir}; acting on the database directly")
    return run_with_services(local)  # type: ignore[arg-type]


def run_with_services(fn: Callable[[Services], Awaitable[T]], *, bootstrap: bool = True) -> T:
    """Start the services (no HTTP server), run ``fn``, close; errors become one line."""
    # Imported here: the whole stack, which `warden serve` and client-mode commands never need.
    from warden.services import Services

    settings = settings_or_exit()

    async def main() -> T:
        # Not a serving instance: a decision recorded here is carried out by a server.
        services = await Services.start(settings, bootstrap=bootstrap, serving=False)
        try:
            return await fn(services)
        finally:
            await services.close()

    try:
        return asyncio.run(main())
    except (WardenError, ConfigError) as exc:
        fail(getattr(exc, "message", str(exc)))
        raise  # unreachable




def key_workspace(workspace: str | None) -> None:
    """Through a server a command acts on its key's workspace; another one needs its own key."""
    if workspace not in (None, "default"):
        fail(f"through the server a command acts on the workspace of its key: export "
             f"WARDEN_KEY=<an admin key of workspace '{workspace}'> and drop --workspace", 2)


def operator(workspace_id: str, workspace: str):  # noqa: ANN202 - a Principal
    from warden.tenancy.accounts import Principal

    # The CLI acts on the database directly, with the operator's (admin) authority.
    return Principal(workspace_id, workspace, "cli", "admin")

"""``warden serve``, ``warden init``, ``warden migrate`` and
``warden status``: the commands about the server and its data directory. ``init``
and ``migrate`` are bootstrap commands: they act on the database directly."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from warden import __version__
from warden.cli.common import JsonOpt, err, fail, out, settings_or_exit, sqlite_path
from warden.config import Settings
from warden.errors import ConfigError, WardenError

if TYPE_CHECKING:
    from warden.startup import Started


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (WARDEN_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (WARDEN_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (WARDEN_WORKERS).")] = None,
) -> None:
    """Run the HTTP server (migrates the database first)."""
    # ``warden serve`` itself starts in warden/entry.py, past the CLI; this command is
    # what answers ``--help`` and options that entry leaves to typer (a bad value).
    for name, value in (("WARDEN_HOST", host), ("WARDEN_PORT", port), ("WARDEN_WORKERS", workers)):
        if value is not None:
            os.environ[name] = str(value)
    settings_or_exit()
    sys.stdout.flush()
    sys.stderr.flush()
    # Same pid, same environment (the options above are in it): the serving process
    # starts without the CLI loaded (see ``warden.server``).
    os.execv(sys.executable, [sys.executable, "-m", "warden.server"])


def init_cmd() -> None:
    """Create (or bring up to date) the database and the first admin key, without serving."""
    from warden.startup import prepare

    settings = settings_or_exit()
    path = sqlite_path(settings)
    where = str(path) if path is not None else settings.db_url.split("@")[-1]
    err.print(f"bootstrapping the database directly: {where}", highlight=False, soft_wrap=True)
    try:
        started = asyncio.run(prepare(settings))
    except (WardenError, ConfigError) as exc:
        fail(getattr(exc, "message", str(exc)))
        return
    _initialised(settings, started)


def _initialised(settings: Settings, started: Started) -> None:
    out.print(f"data directory {settings.data_dir} ready", highlight=False, soft_wrap=True)
    if started.key_file is not None:
        out.print(f"admin key in {started.key_file}{' (new)' if started.new_key else ''}",
                  highlight=False, soft_wrap=True)
    out.print("next: warden serve", highlight=False)


def migrate_cmd() -> None:
    """Bring the database schema up to date."""
    from warden.store import migrate
    from warden.store.db import Database

    settings = settings_or_exit()
    path = sqlite_path(settings)
    err.print(f"migrating the database directly: {path or settings.db_url.split('@')[-1]}",
              highlight=False, soft_wrap=True)

    async def main() -> str | None:
        db = Database(settings.db_url)
        try:
            return await migrate.upgrade(db)
        finally:
            await db.close()

    rev = asyncio.run(main())
    out.print(f"database at revision {rev}")


def status_cmd(as_json: JsonOpt = False) -> None:
    """The server (reachable?), data directory, database, Redis, provider keys and
    their health, budgets. Exits 1 when no server answers."""
    from warden.cli.client import Refused

    try:
        _status(as_json)
    except Refused as exc:
        fail(str(exc))


def _status(as_json: bool) -> None:
    from warden.cli.client import Client, find_key, find_server

    settings = settings_or_exit()
    server = find_server(settings)
    report: dict[str, Any] = {"version": __version__, "data_dir": str(settings.data_dir),
                              "server": server.url if server else None,
                              "found_by": server.source if server else None}
    if server is None:
        path = sqlite_path(settings)
        report["database"] = ("missing" if path is not None and not path.exists() else "present") \
            if path is not None else settings.db_url.split("@")[-1]
        _print_status(report, as_json)
        raise typer.Exit(1)
    client = Client(server, find_key(settings))
    try:
        ready = client.http.get("/readyz").json()
        report["checks"] = {name: f"{ready['backends'].get(name, '?')}: {state}"
                            for name, state in ready.get("checks", {}).items()}
        report["credentials"] = [{"id": v["id"], "provider": f"{v['provider']}/{v['label']}",
                                  "status": v["status"], "source": v["source"]}
                                 for v in client.get("/api/byok")]
        budgets = client.get("/api/budgets")
        report["budgets"] = [{"scope": f"{b['scope']} {b['scope_id']}", "period": b["period"],
                              "limit_usd": b["limit_usd"], "spent_usd": b["spent_usd"]}
                             for b in budgets["budgets"]]
    finally:
        client.close()
    _print_status(report, as_json)


def _print_status(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        import json

        print(json.dumps(report, indent=2))
        return
    server = report["server"]
    out.print(f"server          {server} (from {report['found_by']})" if server else
              "server          not running for this data directory (start it: warden serve)",
              highlight=False, soft_wrap=True)
    out.print(f"data directory  {report['data_dir']}", highlight=False, soft_wrap=True)
    if "database" in report:
        out.print(f"database        {report['database']}", highlight=False)
    for name, state in report.get("checks", {}).items():
        out.print(f"{name:<15} {state}", highlight=False)
    creds = report.get("credentials")
    if creds is not None:
        out.print("provider keys   " + (", ".join(f"{c['provider']} ({c['status']}, {c['id']})"
                                                for c in creds) or
                                      "none: add one with warden byok add PROVIDER --key -"),
                  highlight=False, soft_wrap=True)
    budgets = report.get("budgets")
    if budgets is not None:
        out.print("budgets         " + (", ".join(f"{b['scope']}: {b['spent_usd']} of {b['limit_usd']} USD "
                                                f"per {b['period']}" for b in budgets) or "none"),
                  highlight=False, soft_wrap=True)


def version_callback(value: bool) -> None:
    if value:
        print(f"warden {__version__}")
        raise typer.Exit()


"""``warden serve`` and ``warden migrate``."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer

from warden.cli.common import err, fail, out, settings_or_exit
from warden.errors import ConfigError, WardenError
from warden.services import Services


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
    settings = settings_or_exit()
    configure_logging(settings.log_level)

    async def prepare() -> None:
        # Migrate and bootstrap once, before any worker starts serving.
        services = await Services.start(settings)
        await services.close()

    try:
        asyncio.run(prepare())
    except (WardenError, ConfigError) as exc:
        fail(getattr(exc, "message", str(exc)))
    err.print(f"Warden listening on http://{settings.host}:{settings.port}", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    # Same pid, same environment (the options above are in it): the serving process
    # starts without the CLI and alembic loaded (see ``warden.server``).
    os.execv(sys.executable, [sys.executable, "-m", "warden.server"])


def migrate_cmd() -> None:
    """Bring the database schema up to date."""
    from warden.store import migrate
    from warden.store.db import Database

    settings = settings_or_exit()

    async def main() -> str | None:
        db = Database(settings.db_url)
        try:
            return await migrate.upgrade(db)
        finally:
            await db.close()

    rev = asyncio.run(main())
    out.print(f"database at revision {rev}")

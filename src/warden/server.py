"""The serving process: ``python -m warden.server`` runs uvicorn on the app, nothing else.

``warden serve`` migrates the database and writes the bootstrap admin key in its own
process, then replaces itself (``os.execv``, same pid, same signals) with this module:
the process that serves never imports the CLI (typer, rich: ~10 MB resident) or
alembic (~8 MB). Run on its own, this module expects a migrated database.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from warden.app import create_app, tune_process
from warden.config import load_settings
from warden.errors import ConfigError
from warden.logs import configure_logging


def create_served_app() -> FastAPI:
    """Entry for ``uvicorn --factory`` in each worker process (database already migrated)."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings, after_start=tune_process, run_migrations=False)


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:  # the same one line ``warden serve`` prints, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run("warden.server:create_served_app", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, loop="uvloop", http="httptools",
                log_config=None, access_log=False, lifespan="on", server_header=False)


if __name__ == "__main__":
    main()

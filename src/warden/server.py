"""The serving process: ``warden serve`` (warden/entry.py) and ``python -m warden.server``.

Once, before any worker serves: ``startup.prepare`` (migrate, open the vault,
bootstrap the admin key) and the welcome; then uvicorn on the app. The process that serves never imports the CLI (typer, rich, httpx: ~10 MB
resident), and alembic only when the schema is behind.

While it serves, ``<data dir>/server.json`` holds its address (``{"url", "pid"}``):
that is how the CLI finds the server of a data directory and becomes its HTTP
client (``cli/client.py``). The file is removed at a clean stop; one left by a
killed server is recognised as stale because nothing answers at its address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from warden.app import create_app, tune_process
from warden.config import Settings, load_settings
from warden.errors import ConfigError, WardenError
from warden.logs import configure_logging
from warden.startup import MigrationFailed, prepare, welcome


def server_url(settings: Settings) -> str:
    """The address a local client uses: a wildcard bind is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(settings.host, settings.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def write_address(settings: Settings) -> Path:
    """Write ``<data dir>/server.json`` (0600, replaced atomically)."""
    path = settings.address_file
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": server_url(settings), "pid": os.getpid()}, fh)
    os.replace(tmp, path)
    return path


def remove_address(path: Path) -> None:
    """Remove the address file if it is still this process's (a newer server may own it)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def create_served_app() -> FastAPI:
    """Entry for ``uvicorn --factory`` in each worker process (``main`` has migrated)."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings, after_start=tune_process, run_migrations=False)


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:  # one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    try:
        started = asyncio.run(prepare(settings, serving=True))
    except (WardenError, ConfigError) as exc:
        print(f"error: {getattr(exc, 'message', str(exc))}", file=sys.stderr)
        raise SystemExit(1) from None
    except MigrationFailed as exc:
        print(f"error: the database migration failed:\n{exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(welcome(settings, started, server_url(settings)), file=sys.stderr, flush=True)
    address = write_address(settings)
    # uvicorn re-raises the signal that stopped it once it has shut down; with this
    # handler that is an exit that runs the ``finally`` below, not a kill.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _serve(settings)
    finally:
        remove_address(address)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve(settings: Settings) -> None:
    uvicorn.run("warden.server:create_served_app", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, loop="uvloop", http="httptools",
                log_config=None, access_log=False, lifespan="on", server_header=False,
                # uvicorn kills a worker that misses its 5 s health ping; one still
                # importing the app on a loaded machine would be respawned forever.
                timeout_worker_healthcheck=60)


if __name__ == "__main__":
    main()

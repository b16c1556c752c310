"""The serving process: ``warden serve`` (warden/entry.py) and ``python -m warden.server``.

Once, before any worker serves: migrate the database, check the vault opens every
stored secret, write the bootstrap admin key, print the welcome; then uvicorn on the
app. The process that serves never imports the CLI (typer, rich, httpx: ~10 MB
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
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from warden import __version__
from warden.app import create_app, tune_process
from warden.config import Settings, load_settings
from warden.errors import ConfigError, WardenError
from warden.logs import configure_logging, redact

if TYPE_CHECKING:
    from warden.store.db import Database


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


@dataclass(frozen=True)
class Started:
    key_file: Path | None  # None: the key is WARDEN_ADMIN_KEY
    new_key: bool
    providers: int


async def prepare(settings: Settings, *, serving: bool = False) -> Started:
    """Migrate and bootstrap once (before any worker serves; ``warden init`` too); what the
    welcome tells. Only the store, migrations, vault and accounts are built here. When
    ``serving``, a schema behind is brought up by a child process (``warden migrate``):
    alembic would otherwise stay resident in the server (~12 MB) for its whole life."""
    from warden.store import migrate
    from warden.store.db import Database, private_dir
    from warden.tenancy.accounts import Accounts, bootstrap_admin
    from warden.tenancy.vault_open import open_vault

    private_dir(settings.data_dir)
    db = Database(settings.db_url)
    try:
        quiet = settings.log_level != "debug"
        alembic = logging.getLogger("alembic")
        level = alembic.level
        if quiet:  # thirteen INFO lines that bury the welcome
            alembic.setLevel(logging.WARNING)
        try:
            if serving and not await migrate.at_head(db):
                await _migrate_apart(settings)
            else:
                await migrate.upgrade(db)
        finally:
            alembic.setLevel(level)
        await open_vault(db, settings)
        accounts = Accounts(db)
        new_key = await bootstrap_admin(accounts, settings.data_dir, settings.admin_key)
        if new_key is not None:
            logging.getLogger("warden").warning("bootstrap admin key written to %s (mode 0600)", new_key)
        providers = await _provider_count(db, (await accounts.workspace_by_name("default")).id)
    finally:
        await db.close()
    key_file = None if settings.admin_key else settings.data_dir / "admin.key"
    return Started(key_file, new_key is not None, providers)


async def _migrate_apart(settings: Settings) -> None:
    """``warden migrate`` on this process's database, in a child; its output only on failure."""
    env = {**os.environ, "WARDEN_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["WARDEN_DATABASE_URL"] = settings.database_url
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warden", "migrate", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await child.communicate()
    if child.returncode != 0:
        raise MigrationFailed(redact(output.decode(errors="replace").strip()))


class MigrationFailed(Exception):
    """``warden migrate`` failed in the child; the message is its (redacted) output."""


async def _provider_count(db: Database, workspace_id: str) -> int:
    """What ``warden byok list`` counts for the default workspace: its credentials and each
    provider whose environment key no active credential shadows (``Byok.list``), without
    importing the gateway's catalog and adapters (~0.4 CPU-s) for one number."""
    from sqlalchemy import select

    from warden.gateway.providers.registry import PROVIDERS
    from warden.store.models import Credential

    async with db.session() as s:
        rows = (await s.execute(select(Credential.provider, Credential.status)
                                .where(Credential.workspace_id == workspace_id))).all()
    active = {provider for provider, status in rows if status == "active"}
    env = [p for p in PROVIDERS.values() if p.id not in active
           and any(os.environ.get(name, "").strip() for name in p.env)]
    return len(rows) + len(env)


def welcome(settings: Settings, started: Started, url: str) -> str:
    """The short block a first (and every) start prints before the logs."""
    lines = [f"Warden {__version__} on {url}", f"  data directory  {settings.data_dir}"]
    if started.key_file is None:
        lines.append("  admin key       WARDEN_ADMIN_KEY (as set in this environment)")
    else:
        lines += [f"  admin key       {started.key_file}{' (new)' if started.new_key else ''}; the CLI "
                  "finds it, for curl and SDKs:",
                  f"                  export WARDEN_KEY=$(cat {started.key_file})"]
    if started.providers == 0:
        nxt = "warden byok add PROVIDER --key -   (e.g. openai; the key is read from stdin)"
    else:
        nxt = 'warden chat -m auto "Hello"'
    lines += [f"  next            {nxt}", f"  in a browser    {url}/  (API docs: {url}/docs)"]
    return "\n".join(lines)


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

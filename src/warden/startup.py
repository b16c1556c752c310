"""What a start does once before anything serves (``warden serve``, ``warden init``):
migrate the database, check the vault opens every stored secret, write the bootstrap
admin key, and the welcome that says so. Its own module, without the app: ``warden
init`` needs this and none of the serving stack."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from warden import __version__
from warden.config import Settings
from warden.logs import redact

if TYPE_CHECKING:
    from warden.store.db import Database


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

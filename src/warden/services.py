"""The composition root: builds and owns every long-lived service of a process.

API routes reach services through ``app.state.services``; the CLI builds the
same container (without the HTTP server) so management commands work before
the server ever starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from warden.accounts import Accounts, bootstrap_admin
from warden.config import Settings
from warden.store import migrate
from warden.store.db import Database
from warden.store.models import Credential
from warden.vault import Vault, check_key_matches, load_master_key

log = logging.getLogger("warden")


@dataclass
class Services:
    settings: Settings
    db: Database
    accounts: Accounts
    vault: Vault
    admin_key_path: Path | None = None
    _closers: list = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, *, run_migrations: bool = True,
                    bootstrap: bool = True) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = Database(settings.db_url)
        try:
            if run_migrations:
                await migrate.upgrade(db)
            vault = await _open_vault(db, settings)
            accounts = Accounts(db, cache_ttl=settings.key_cache_ttl)
            services = cls(settings=settings, db=db, accounts=accounts, vault=vault)
            if bootstrap:
                services.admin_key_path = await bootstrap_admin(
                    accounts, settings.data_dir, settings.admin_key
                )
                if services.admin_key_path is not None:
                    log.warning("bootstrap admin key written to %s (mode 0600)", services.admin_key_path)
        except BaseException:
            await db.close()
            raise
        return services

    async def readiness(self) -> dict[str, str]:
        """Each dependency's state, for ``/readyz``: "ok" or why not."""
        return {"database": "ok" if await self.db.ping() else "unreachable"}

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()
        await self.db.close()


async def _open_vault(db: Database, settings: Settings) -> Vault:
    """Load the master key, refusing to start if it cannot open existing secrets."""
    async with db.session() as s:
        key_ids = {k for k in (await s.execute(select(Credential.key_id).distinct())).scalars() if k}
    master = load_master_key(settings.master_key, settings.data_dir, has_encrypted_data=bool(key_ids))
    vault = Vault(master)
    check_key_matches(vault, key_ids)
    return vault

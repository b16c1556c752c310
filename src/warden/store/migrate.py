"""Run Alembic migrations on the configured database (at serve start and `warden migrate`)."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from warden.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every instance.
_PG_MIGRATION_LOCK = 0x5741_5244


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def _upgrade(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


@asynccontextmanager
async def _sqlite_file_lock(db: Database) -> AsyncIterator[None]:
    """SQLite has no advisory locks: a lock file beside the database serialises
    migrations across the processes (workers) sharing it."""
    path = make_url(db.url).database
    if not path or path == ":memory:":
        yield
        return
    # 0600 like the database beside it (open() alone would make it 0644).
    with open(os.open(f"{path}.migrate-lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as fh:
        await asyncio.to_thread(fcntl.flock, fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


async def upgrade(db: Database, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; several instances starting at once take turns."""
    if db.is_sqlite:
        # A connection of its own, without the foreign-key pragma: a batch migration
        # that rebuilds a parent table must not cascade-delete its children.
        engine = create_async_engine(db.url, poolclass=NullPool)
        try:
            async with _sqlite_file_lock(db), engine.begin() as conn:
                await conn.run_sync(_upgrade, revision)
                return await conn.run_sync(_current)
        finally:
            await engine.dispose()
    async with db.engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        await conn.run_sync(_upgrade, revision)
        return await conn.run_sync(_current)


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)

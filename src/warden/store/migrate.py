"""Run Alembic migrations on the configured database (at serve start and `warden migrate`).

Alembic (~0.4 CPU-s of imports, and it loads every migration and the whole schema) is
imported only when the schema is not already at head: a start on an up-to-date
database reads the ``alembic_version`` row with one query and compares it with the
head read from the migration files' ``revision =`` lines (``script_head``)."""

from __future__ import annotations

import ast
import asyncio
import fcntl
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from warden.store.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every instance.
_PG_MIGRATION_LOCK = 0x5741_5244
# ``revision = '0016'`` / ``down_revision: str | None = '0015'`` at the start of a line.
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.M)


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def script_head(versions: Path = MIGRATIONS / "versions") -> str | None:
    """The one revision no migration file names as its ``down_revision``, read from the
    files' text (what alembic's ``ScriptDirectory`` would find, without importing it or
    the migrations). None when that is not plain (several heads, an unreadable line):
    the caller then asks alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        found = dict(_REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        try:
            rev = ast.literal_eval(found["revision"])
            down = ast.literal_eval(found.get("down_revision", "None"))
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(rev, str):
            return None
        revisions.add(rev)
        parents.update((down,) if isinstance(down, str) else down or ())
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _upgrade(conn: Connection, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def _current(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


async def _stored_revision(db: Database) -> str | None:
    """The revision in ``alembic_version`` if it holds exactly one (None: no table yet)."""
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except DBAPIError:  # a new database: no version table
        return None
    return rows[0][0] if len(rows) == 1 else None


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


async def at_head(db: Database) -> bool:
    """The schema is at the migrations' head: read without alembic (or its lock: a migration
    commits its schema and version together, so a version at head means the schema is there)."""
    head = script_head()
    return head is not None and await _stored_revision(db) == head


async def upgrade(db: Database, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; several instances starting at once take turns."""
    if revision == "head" and await at_head(db):
        return script_head()
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

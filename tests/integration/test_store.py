"""Migrations, the audit chain and bootstrap, on SQLite and on real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, update

from tests.support.app import ADMIN_KEY, PG_URL, requires_pg, reset_pg
from warden.tenancy.accounts import Accounts, bootstrap_admin, hash_key
from warden.config import load_settings
from warden.services import Services
from warden.store import audit, migrate
from warden.store.db import Database
from warden.store.models import AuditEvent

EXPECTED_TABLES = {"workspaces", "api_keys", "credentials", "model_groups", "spend",
                   "audit_events", "audit_head", "alembic_version"}


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def db(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    else:
        await reset_pg(PG_URL)
        database = Database(PG_URL)
    yield database
    await database.close()


async def test_migrations_build_the_schema(db: Database) -> None:
    assert await migrate.current_revision(db) is None
    rev = await migrate.upgrade(db)
    assert rev == migrate.head_revision() and rev
    assert EXPECTED_TABLES <= await _tables(db)
    # Running again is a no-op, and downgrade/upgrade round-trips.
    assert await migrate.upgrade(db) == rev
    async with db.engine.begin() as conn:
        from alembic import command

        def down(c):
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = c
            command.downgrade(cfg, "base")

        await conn.run_sync(down)
    assert await _tables(db) <= {"alembic_version"}
    assert await migrate.upgrade(db) == rev


async def test_concurrent_migrations_take_turns(db: Database) -> None:
    others = [Database(db.url) for _ in range(3)]
    try:
        revs = await asyncio.gather(*(migrate.upgrade(d) for d in [db, *others]))
    finally:
        for d in others:
            await d.close()
    assert set(revs) == {migrate.head_revision()}


async def test_audit_chain_is_linear_under_concurrency_and_detects_tampering(db: Database) -> None:
    await migrate.upgrade(db)

    async def write(i: int) -> None:
        async def tx(s):
            await audit.append(s, workspace_id="ws_x", actor="test", action="thing.done",
                               target=f"t{i}", data={"i": i, "note": "ünïcode"})
        await db.run_tx(tx)

    await asyncio.gather(*(write(i) for i in range(25)))
    async with db.session() as s:
        result = await audit.verify(s)
        assert result.ok and result.count == 25
        seqs = list((await s.execute(select(AuditEvent.seq).order_by(AuditEvent.seq))).scalars())
        assert seqs == list(range(1, 26))
    async with db.transaction() as s:
        await s.execute(update(AuditEvent).where(AuditEvent.seq == 7).values(actor="mallory"))
    async with db.session() as s:
        result = await audit.verify(s, batch=4)
        assert not result.ok and result.broken_seq == 7 and result.count == 6
        assert "hash" in (result.reason or "")


async def test_audit_verify_finds_deleted_tail_and_gap(db: Database) -> None:
    await migrate.upgrade(db)
    for i in range(5):
        await db.run_tx(lambda s, i=i: audit.append(s, workspace_id="w", actor="a", action="x",
                                                   data={"i": i}))
    from sqlalchemy import delete

    async with db.transaction() as s:
        await s.execute(delete(AuditEvent).where(AuditEvent.seq == 5))
    async with db.session() as s:
        r = await audit.verify(s)
        assert (r.ok, r.count, r.broken_seq) == (False, 4, 5)
    async with db.transaction() as s:
        await s.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    async with db.session() as s:
        r = await audit.verify(s)
        assert (r.ok, r.broken_seq, r.reason) == (False, 2, "event missing")


async def test_admin_key_file_written_once_with_0600(tmp_path: Path) -> None:
    data = tmp_path / "d"
    settings = load_settings(data_dir=data)
    svc = await Services.start(settings)
    try:
        path = data / "admin.key"
        assert svc.admin_key_path == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        key = path.read_text().strip()
        principal = await svc.accounts.authenticate(key)
        assert principal.role == "admin" and principal.workspace_name == "default"
        # Second start: no new key, same file.
        assert await bootstrap_admin(svc.accounts, data, None) is None
        assert path.read_text().strip() == key
        assert len(await svc.accounts.list_keys()) == 1
    finally:
        await svc.close()
    # A wiped database re-imports the surviving file's key instead of minting another.
    (data / "warden.db").unlink()
    for extra in ("warden.db-wal", "warden.db-shm"):
        (data / extra).unlink(missing_ok=True)
    for f in ("master.key",):
        (data / f).unlink()
    svc = await Services.start(settings)
    try:
        assert (await svc.accounts.authenticate(key)).role == "admin"
    finally:
        await svc.close()


async def test_env_admin_key_is_bootstrapped(any_services: Services) -> None:
    p = await any_services.accounts.authenticate(ADMIN_KEY)
    assert p.role == "admin"
    keys = await any_services.accounts.list_keys()
    assert [k.key_hash for k in keys] == [hash_key(ADMIN_KEY)]


async def test_key_cache_expires_for_other_instances(any_services: Services) -> None:
    """Instance B learns of a revocation made by instance A once its cache entry ages out."""
    now = [0.0]
    other = Accounts(any_services.db, cache_ttl=3.0, clock=lambda: now[0])
    created = await any_services.accounts.create_key(
        (await any_services.accounts.workspace_by_name("default")).id, "temp")
    assert (await other.authenticate(created.key)).key_id == created.id
    await any_services.accounts.revoke_key(created.id)
    assert (await other.authenticate(created.key)).key_id == created.id  # still cached
    now[0] = 3.5
    from warden.errors import Unauthorized

    with pytest.raises(Unauthorized):
        await other.authenticate(created.key)


async def test_upgrade_keeps_existing_rows(db: Database) -> None:
    from sqlalchemy import text

    await migrate.upgrade(db, "0001")
    async with db.engine.begin() as c:
        await c.execute(text("INSERT INTO workspaces (id, name, created_at) "
                             "VALUES ('ws_1', 'default', CURRENT_TIMESTAMP)"))
        await c.execute(text("INSERT INTO api_keys (id, workspace_id, name, role, key_hash, prefix, "
                             "created_at) VALUES ('key_1', 'ws_1', 'k', 'admin', 'h', 'wk-x', "
                             "CURRENT_TIMESTAMP)"))
    assert await migrate.upgrade(db) == migrate.head_revision()
    async with db.engine.connect() as c:
        assert (await c.execute(text("SELECT count(*) FROM api_keys"))).scalar() == 1
        assert (await c.execute(text("SELECT name FROM workspaces"))).scalar() == "default"

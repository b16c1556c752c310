"""The SQLite files and the data directory are this user's only: the database and
its -wal/-shm 0600, the data directory 0700, also when an older start left them looser."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support.app import ADMIN_KEY
from warden.config import load_settings
from warden.services import Services
from warden.store.db import Database, private_dir


@pytest.fixture(autouse=True)
def _usual_umask() -> Iterator[None]:
    """The common 022, under which SQLite alone would create the files 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _write_something(db: Database) -> None:
    async with db.transaction() as s:
        await s.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
        await s.execute(text("INSERT INTO t VALUES (1)"))


async def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "new" / "warden.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await _write_something(db)
        files = {p.name: _mode(p) for p in path.parent.iterdir()}
    finally:
        await db.close()
    assert files == {"warden.db": 0o600, "warden.db-wal": 0o600, "warden.db-shm": 0o600}
    assert _mode(path.parent) == 0o700


async def test_a_database_an_older_version_left_0644_is_tightened(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    path = shared / "warden.db"
    old = Database(f"sqlite+aiosqlite:///{path}")
    await _write_something(old)
    await old.close()
    for p in shared.iterdir():
        p.chmod(0o644)
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await _write_something(db)
        modes = {p.name: _mode(p) for p in shared.iterdir()}
    finally:
        await db.close()
    assert modes and set(modes.values()) == {0o600}, modes
    assert _mode(shared) == 0o755  # a database's directory other than the data dir is not ours to change


def test_private_dir_creates_0700_and_tightens_an_existing_0755(tmp_path: Path) -> None:
    fresh, existing = tmp_path / "a" / "b", tmp_path / "old"
    existing.mkdir(mode=0o755)
    private_dir(fresh)
    private_dir(existing)
    assert (_mode(fresh), _mode(existing)) == (0o700, 0o700)


async def test_a_start_on_an_existing_0755_data_dir_makes_it_0700(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    services = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False))
    try:
        await services.accounts.create_workspace("modes", actor="test")  # a write: -wal and -shm exist
        modes = {p.name: _mode(p) for p in data_dir.iterdir() if p.name.startswith("warden.db")}
    finally:
        await services.close()
    assert _mode(data_dir) == 0o700
    assert modes == {"warden.db": 0o600, "warden.db-wal": 0o600, "warden.db-shm": 0o600,
                     "warden.db.migrate-lock": 0o600}

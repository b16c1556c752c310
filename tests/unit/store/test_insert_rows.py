"""``Database.insert_rows``: on a SQLite file the insert runs on a synchronous engine in
one worker thread (one hop instead of aiosqlite's five). What was inserted is committed
when it returns, seen by the async engine; the driver's errors keep their types (the
spend writer sorts a refused row from a database that is down by them); ``:memory:``
(which a second engine could not share) takes the async path."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.exc import IntegrityError

from warden.store.db import Database

meta = MetaData()
items = Table("items", meta, Column("id", Integer, primary_key=True), Column("name", String(20)))


async def _db(url: str) -> Database:
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    return db


async def _names(db: Database) -> list[str]:
    async with db.session() as s:
        return list((await s.execute(select(items.c.name).order_by(items.c.id))).scalars())


async def test_rows_are_committed_in_the_file_by_the_time_it_returns(tmp_path: Path) -> None:
    db = await _db(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        await db.insert_rows(items, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
        assert await _names(db) == ["a", "b"]
        assert db._inserter is not None  # the synchronous engine did it
        # a reader on a connection of its own (another process, say) sees them too
        other = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
        async with other.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(items))).scalar_one() == 2
        await other.close()
    finally:
        await db.close()
    assert db._inserter is None  # closed with the database


async def test_a_refused_row_raises_the_drivers_error_and_nothing_of_its_batch_stays(tmp_path: Path) -> None:
    db = await _db(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        await db.insert_rows(items, [{"id": 1, "name": "a"}])
        with pytest.raises(IntegrityError):
            await db.insert_rows(items, [{"id": 2, "name": "b"}, {"id": 1, "name": "again"}])
        assert await _names(db) == ["a"]  # one transaction: the good row went back with the bad
        async with db.transaction() as s:  # the async engine can still write: no lock left behind
            await s.execute(text("INSERT INTO items (id, name) VALUES (3, 'c')"))
        assert await _names(db) == ["a", "c"]
    finally:
        await db.close()


async def test_an_in_memory_database_takes_the_async_path() -> None:
    db = await _db("sqlite+aiosqlite:///:memory:")
    try:
        await db.insert_rows(items, [{"id": 1, "name": "a"}])
        assert await _names(db) == ["a"]
        assert db._inserter is None
    finally:
        await db.close()

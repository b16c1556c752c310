"""The head revision read from the migration files' text equals alembic's, and a start
on a database already at head migrates nothing without importing alembic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from warden.store import migrate
from warden.store.db import Database


def test_the_cheap_head_is_alembics_head() -> None:
    # Whatever migration files are there: no constant to keep in step with them.
    assert migrate.script_head() == migrate.head_revision() != ""


def _versions(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    return tmp_path


def test_the_cheap_head_follows_the_chain_and_a_merge(tmp_path: Path) -> None:
    versions = _versions(tmp_path, {
        "a.py": "revision = 'a'\ndown_revision = None\n",
        "b.py": 'revision: str = "b"\ndown_revision: str | None = "a"\n',
        "c.py": "revision = 'c'\ndown_revision = 'a'\n",
        "m.py": "revision = 'm'\ndown_revision = ('b', 'c')\n",
    })
    assert migrate.script_head(versions) == "m"


@pytest.mark.parametrize("files", [
    {"a.py": "revision = 'a'\ndown_revision = None\n",  # two heads
     "b.py": "revision = 'b'\ndown_revision = None\n"},
    {"a.py": "down_revision = None\n"},  # no revision line
    {"a.py": "revision = make_id()\n"},  # not a literal
    {"a.py": "revision = None\n"},
])
def test_an_unclear_head_leaves_it_to_alembic(tmp_path: Path, files: dict[str, str]) -> None:
    assert migrate.script_head(_versions(tmp_path, files)) is None


@pytest.mark.parametrize("first", [None, "0014"])  # a new database, one behind head
async def test_a_database_behind_or_new_is_migrated_to_head(tmp_path: Path,
                                                             first: str | None) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        if first is not None:
            assert await migrate.upgrade(db, first) == first
        assert await migrate.upgrade(db) == migrate.head_revision()
        assert await migrate.upgrade(db) == migrate.head_revision()  # at head: nothing to do
    finally:
        await db.close()


_PROBE = """
import asyncio, json, sys
from warden.store import migrate
from warden.store.db import Database

async def main():
    db = Database(sys.argv[1])
    try:
        return await migrate.upgrade(db)
    finally:
        await db.close()

rev = asyncio.run(main())
print(json.dumps([rev, "alembic" in sys.modules]))
"""


def test_a_database_at_head_is_left_as_it_is_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"

    def run() -> list:
        out = subprocess.run([sys.executable, "-c", _PROBE, url], capture_output=True, text=True,
                             timeout=120, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    head = migrate.head_revision()
    assert run() == [head, True]  # a new database: alembic builds it
    assert run() == [head, False]  # at head: one query, no alembic

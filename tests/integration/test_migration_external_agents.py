"""Migration 0010 on SQLite and PostgreSQL: agents stored before it are hosted, keys
stored before it are unbound, a bound key outlives its deleted agent unbound (the
registry revokes it first), and the downgrade removes both columns."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from tests.support.app import PG_URL, requires_pg, reset_pg
from warden.store import migrate
from warden.store.db import Database

WHEN = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def db(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    else:
        await reset_pg(PG_URL)
        database = Database(PG_URL)
    yield database
    await database.close()


async def _columns(db: Database, table: str) -> set[str]:
    async with db.engine.connect() as conn:
        return {c["name"] for c in await conn.run_sync(lambda c: inspect(c).get_columns(table))}


async def test_0010_keeps_what_was_there_and_comes_back_out(db: Database) -> None:
    assert await migrate.upgrade(db, "0009") == "0009"
    async with db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws_1', 'w', :t)"),
                           {"t": WHEN})
        await conn.execute(text(
            "INSERT INTO agents (id, workspace_id, name, instructions, model_policy, tools, mcp_servers, "
            "tool_levels, max_steps, tier, tier_sticky, created_at, updated_at) VALUES ('agt_1', 'ws_1', "
            "'old', '', '{}', '[]', '[]', '{}', 8, 'student', false, :t, :t)"), {"t": WHEN})
        await conn.execute(text(
            "INSERT INTO api_keys (id, workspace_id, name, role, key_hash, prefix, created_at) "
            "VALUES ('key_1', 'ws_1', 'k', 'member', 'h1', 'wk-abcd', :t)"), {"t": WHEN})
    assert await migrate.upgrade(db, "0010") == "0010"
    async with db.engine.begin() as conn:
        assert (await conn.execute(text("SELECT kind FROM agents"))).scalar_one() == "hosted"
        assert (await conn.execute(text("SELECT agent_id FROM api_keys"))).scalar_one() is None
        await conn.execute(text("UPDATE api_keys SET agent_id = 'agt_1'"))
    with pytest.raises(Exception, match="(?i)foreign key"):  # no binding to an agent that is not there
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE api_keys SET agent_id = 'agt_none'"))
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM agents WHERE id = 'agt_1'"))
        assert (await conn.execute(text("SELECT id, agent_id FROM api_keys"))).one() == ("key_1", None)

    async with db.engine.begin() as conn:
        from alembic import command

        def down(c):  # noqa: ANN001, ANN202
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = c
            command.downgrade(cfg, "0009")

        await conn.run_sync(down)
    assert "kind" not in await _columns(db, "agents")
    assert "agent_id" not in await _columns(db, "api_keys")
    assert await migrate.upgrade(db) == migrate.head_revision()

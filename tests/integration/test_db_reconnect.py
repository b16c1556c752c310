"""PostgreSQL drops the pool's connections (a restart, a failover): the Database recovers.

``store/db.py`` pools without ``pool_pre_ping``, which with asyncpg costs BEGIN, ``;`` and
ROLLBACK on every checkout. Instead, the first query on a dead connection fails, SQLAlchemy
invalidates the whole pool (every connection made before), and later queries reconnect.
"""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from tests.support.app import PG_URL, requires_pg

from warden.store.db import Database


async def _backend_pid(db: Database) -> int:
    async with db.session() as s:
        await s.execute(text("SELECT pg_sleep(0.05)"))  # hold the connection so the pool grows
        return int(await s.scalar(text("SELECT pg_backend_pid()")))


@requires_pg
async def test_the_pool_recovers_after_postgresql_drops_every_connection() -> None:
    db = Database(PG_URL)  # type: ignore[arg-type]
    try:
        pooled = set(await asyncio.gather(*(_backend_pid(db) for _ in range(4))))
        assert len(pooled) > 1
        url = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        admin = await asyncpg.connect(url)
        try:
            await admin.execute("SELECT pg_terminate_backend(p) FROM unnest($1::int[]) AS p",
                                sorted(pooled))
        finally:
            await admin.close()

        outcomes: list[int | None] = []
        for _ in range(len(pooled) + 2):
            try:
                outcomes.append(await _backend_pid(db))
            except Exception:  # noqa: BLE001 - the driver's "connection was closed"
                outcomes.append(None)

        # At most the first query meets a dead connection; none is reused after it.
        assert None not in outcomes[1:]
    finally:
        await db.close()

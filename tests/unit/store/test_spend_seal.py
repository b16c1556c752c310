"""The spend ledger sealed in the audit chain (store/spend_seal.py, store/spend_sealer.py),
on SQLite and PostgreSQL: the spend writer commits rows unsealed; a sealer run gives
each workspace's rows one ``spend.sealed`` event whose seq they carry; ``verify``
catches an edited cost or token count, a deleted row, a forged row (with a real
seal's seq or a made-up one) and a row moved between seals, naming the seal; rows
not sealed yet are only counted; a governance write that moved the head meanwhile
costs a retry, never a fork, and so does another sealer; an idle run is one query;
the loop outlives a failing database; migration 0016 comes back out, and the rows
from before it are sealed by the first run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete, event, func, inspect, insert, select, text, update

from tests.support.app import PG_URL, requires_pg, reset_pg
from warden.store import audit, migrate, spend_seal
from warden.store.audit import AuditConflict
from warden.store.db import Database
from warden.store.models import AuditEvent, AuditHead, SpendRow
from warden.store.spend import SpendWriter
from warden.store.spend_sealer import SpendSealer


def row(request_id: str, workspace_id: str = "ws_a", **over: Any) -> dict[str, Any]:
    base = {"request_id": request_id, "workspace_id": workspace_id, "api_key_id": "key_1", "agent_id": "agt_1",
            "provider": "openai", "model": "gpt-4o-mini", "credential_id": None, "input_tokens": 10,
            "output_tokens": 20, "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0,
            "cost_usd": Decimal("0.0000258"), "latency_ms": 2.5, "ttft_ms": None, "attempts": 1, "status": "ok"}
    return {**base, **over}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def db(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    else:
        await reset_pg(PG_URL)
        database = Database(PG_URL)
    await migrate.upgrade(database)
    yield database
    await database.close()


async def write(db: Database, *rows: dict[str, Any], seal: bool = True) -> SpendWriter:
    """Commit ``rows`` as the spend writer does, then (``seal``) one sealer run over them."""
    writer = SpendWriter(db)
    for r in rows:
        writer.record(r)
    assert await writer.flush() == len(rows)
    if seal:
        assert await SpendSealer(db, interval=1).seal_once() == len(rows)
    return writer


async def verify(db: Database) -> audit.VerifyResult:
    async with db.session() as s:
        return await audit.verify(s, batch=3)  # batches smaller than the chain: seals across them


async def seq_of(db: Database, request_id: str) -> int:
    async with db.session() as s:
        q = select(SpendRow.audit_seq).where(SpendRow.request_id == request_id)
        return (await s.execute(q)).scalar_one()


async def sql(db: Database, stmt: Any) -> None:
    async with db.transaction() as s:
        await s.execute(stmt)


async def test_each_workspace_of_a_batch_gets_one_seal_its_rows_carry(db: Database) -> None:
    await write(db, row("a1"), row("b1", "ws_b"), row("a2", cost_usd=None), row("a3"))
    async with db.session() as s:
        events = list((await s.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars())
        seqs = dict((await s.execute(select(SpendRow.request_id, SpendRow.audit_seq))).all())
    assert [(e.seq, e.workspace_id, e.actor, e.action) for e in events] == [
        (1, "ws_a", "warden", "spend.sealed"), (2, "ws_b", "warden", "spend.sealed")]
    assert seqs == {"a1": 1, "a2": 1, "a3": 1, "b1": 2}
    assert events[0].data["rows"] == 3 and events[0].data["cost_pico"] == 2 * 25_800_000  # a2 unpriced
    assert events[1].data["rows"] == 1 and len(events[1].data["digest"]) == 64
    result = await verify(db)
    assert (result.ok, result.count, result.seals, result.sealed_rows, result.unsealed_rows) == (True, 2, 2, 4, 0)


async def test_an_edited_cost_breaks_its_seal(db: Database) -> None:
    await write(db, row("x1"))
    await write(db, row("y1"), row("y2"))
    await sql(db, update(SpendRow).where(SpendRow.request_id == "y2").values(cost_usd=Decimal("0.0000001")))
    result = await verify(db)
    assert (result.ok, result.broken_seq, result.count) == (False, 2, 1)
    assert result.reason == ("spend seal broken: their cost is 25900000 pico-USD, it sealed 51600000")


async def test_an_edited_token_count_breaks_the_digest(db: Database) -> None:
    await write(db, row("t1"), row("t2"))
    await sql(db, update(SpendRow).where(SpendRow.request_id == "t1").values(output_tokens=2))
    result = await verify(db)
    assert (result.ok, result.broken_seq) == (False, 1)
    assert result.reason == "spend seal broken: their contents differ from what it sealed"


async def test_a_deleted_row_breaks_its_seal(db: Database) -> None:
    await write(db, row("d1"), row("d2"))
    await sql(db, delete(SpendRow).where(SpendRow.request_id == "d1"))
    result = await verify(db)
    assert (result.ok, result.broken_seq) == (False, 1)
    assert result.reason == ("spend seal broken: 1 row(s) carry it, it sealed 2; "
                             "their cost is 25800000 pico-USD, it sealed 51600000")


async def test_a_forged_row_with_a_real_seals_seq_breaks_it(db: Database) -> None:
    await write(db, row("f1"))
    await sql(db, insert(SpendRow).values(**{**row("forged", cost_usd=Decimal(0)), "ts": datetime.now(UTC),
                                             "audit_seq": 1}))
    result = await verify(db)
    assert (result.ok, result.broken_seq) == (False, 1)
    assert result.reason.startswith("spend seal broken: 2 row(s) carry it, it sealed 1")


async def test_a_forged_row_with_a_made_up_seq_is_named(db: Database) -> None:
    await write(db, row("m1"))
    async with db.transaction() as s:  # an event that is no seal: its seq seals nothing
        await audit.append(s, workspace_id="ws_a", actor="admin", action="thing.done")
    for seq in (2, 99):
        await sql(db, insert(SpendRow).values(**{**row(f"forged-{seq}"), "ts": datetime.now(UTC), "audit_seq": seq}))
    result = await verify(db)
    assert (result.ok, result.broken_seq, result.count) == (False, 2, 2)
    assert result.reason == ("spend seal broken: 1 spend row(s) carry seq 2, which is no spend seal in the "
                             "chain (forged rows)")


async def test_a_row_moved_to_another_seal_breaks_the_first(db: Database) -> None:
    await write(db, row("p1"), row("p2"))
    await write(db, row("q1"))
    await sql(db, update(SpendRow).where(SpendRow.request_id == "p2").values(audit_seq=2))
    result = await verify(db)
    assert (result.ok, result.broken_seq) == (False, 1)
    assert "1 row(s) carry it, it sealed 2" in result.reason


async def test_a_broken_seal_before_a_broken_link_is_named_first(db: Database) -> None:
    for i in range(3):
        await write(db, row(f"s{i}"))
    await sql(db, update(SpendRow).where(SpendRow.request_id == "s0").values(model="other"))
    await sql(db, update(AuditEvent).where(AuditEvent.seq == 2).values(actor="mallory"))
    result = await verify(db)
    assert (result.ok, result.broken_seq, result.reason) == (
        False, 1, "spend seal broken: their contents differ from what it sealed")


@contextlib.contextmanager
def on_statements(engine: Any, when: str, fn: Any) -> Iterator[None]:
    """``fn`` on each statement ``engine`` runs (``before_``/``after_cursor_execute``) in the block."""
    event.listen(engine, when, fn)
    try:
        yield
    finally:
        event.remove(engine, when, fn)


async def test_rows_are_committed_unsealed_and_the_next_run_seals_them(db: Database) -> None:
    await write(db, row("first"))
    await write(db, row("n1"), row("n2", "ws_b"), row("n3"), seal=False)
    assert await seq_of(db, "n1") is None
    result = await verify(db)  # the tail not yet sealed: counted, not broken
    assert (result.ok, result.seals, result.sealed_rows, result.unsealed_rows) == (True, 1, 1, 3)
    sealer = SpendSealer(db, interval=1)
    assert await sealer.seal_once() == 3
    assert (await seq_of(db, "n1"), await seq_of(db, "n2"), await seq_of(db, "n3")) == (2, 3, 2)
    result = await verify(db)
    assert (result.ok, result.count, result.seals, result.sealed_rows, result.unsealed_rows) == (True, 3, 3, 4, 0)


async def test_a_backlog_is_sealed_in_batches_oldest_first(db: Database) -> None:
    await write(db, *(row(f"b{i}", f"ws_{i % 2}") for i in range(7)), seal=False)
    sealer = SpendSealer(db, interval=1, batch=3)
    assert await sealer.seal_once() == 3
    async with db.session() as s:
        got = dict((await s.execute(select(SpendRow.request_id, SpendRow.audit_seq))).all())
    assert got == {"b0": 1, "b1": 2, "b2": 1, "b3": None, "b4": None, "b5": None, "b6": None}
    assert await sealer.seal_pending() == 4
    result = await verify(db)
    assert (result.ok, result.seals, result.sealed_rows, result.unsealed_rows) == (True, 5, 7, 0)


async def test_an_idle_run_is_one_query_and_appends_nothing(db: Database) -> None:
    await write(db, row("i1"))
    engine = db._sync_writer().engine if db.one_hop_writes else db.engine.sync_engine
    statements: list[str] = []

    def seen(conn, cursor, statement, *_):  # noqa: ANN001 - SQLAlchemy's event signature
        statements.append(statement)

    with on_statements(engine, "before_cursor_execute", seen):
        assert await SpendSealer(db, interval=1).seal_once() == 0
    assert len(statements) == 1 and "audit_seq IS NULL" in statements[0]
    result = await verify(db)
    assert (result.ok, result.count, result.seals) == (True, 1, 1)


async def test_two_sealers_seal_every_row_once_on_one_linear_chain(db: Database) -> None:
    """Two instances (each its own engine and pool) sealing the same backlog at once,
    while rows keep coming and a governance writer appends: every row in exactly one
    seal, one chain."""
    other = Database(db.url)
    try:
        await write(db, *(row(f"r{i}", f"ws_{i % 3}") for i in range(600)), seal=False)
        a, b = SpendSealer(db, interval=1, batch=50), SpendSealer(other, interval=1, batch=50)

        async def more() -> None:
            for k in range(5):
                await write(db, *(row(f"late{k}-{i}", "ws_late") for i in range(20)), seal=False)
                await db.run_tx(lambda s: audit.append(s, workspace_id="ws_a", actor="admin", action="thing.done"))

        sealed = await asyncio.gather(a.seal_pending(), b.seal_pending(), more())
        sealed_after = await a.seal_pending()
        assert sealed[0] + sealed[1] + sealed_after == 700
        result = await verify(db)
        assert (result.ok, result.sealed_rows, result.unsealed_rows) == (True, 700, 0)
        async with db.session() as s:
            events = list((await s.execute(select(AuditEvent.seq, AuditEvent.action, AuditEvent.data)
                                            .order_by(AuditEvent.seq))).all())
            head = (await s.execute(select(AuditHead.seq))).scalar_one()
        assert [e.seq for e in events] == list(range(1, head + 1))  # linear: no gap, no fork
        assert sum(e.data["rows"] for e in events if e.action == spend_seal.ACTION) == 700
        assert result.seals == sum(1 for e in events if e.action == spend_seal.ACTION)
    finally:
        await other.close()


async def test_rows_another_instance_seals_while_this_one_reads_them_are_left_to_it(tmp_path: Path) -> None:
    """On a SQLite file a run reads and digests its rows apart from the one writer, then
    stamps them: when another instance sealed them in between, this run seals nothing
    (no second seal, no retry loop) and the next run finds only what is new."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await migrate.upgrade(db)
    other = Database(db.url)
    try:
        await write(db, row("t1"), row("t2", "ws_b"), seal=False)
        loop, rival, raced = asyncio.get_running_loop(), SpendSealer(other, interval=1), []

        def after_read(conn, cursor, statement, *_):  # noqa: ANN001 - SQLAlchemy's event signature
            if "audit_seq IS NULL" in statement and not raced:  # this run has read: the rival seals now
                raced.append(asyncio.run_coroutine_threadsafe(rival.seal_once(), loop).result(30))

        with on_statements(db._sync_writer().engine, "after_cursor_execute", after_read):
            assert await SpendSealer(db, interval=1).seal_once() == 0
        assert raced == [2]
        await write(db, row("t3"), seal=False)
        assert await SpendSealer(db, interval=1).seal_once() == 1
        result = await verify(db)
        assert (result.ok, result.seals, result.sealed_rows, result.unsealed_rows) == (True, 3, 3, 0)
    finally:
        await other.close()
        await db.close()


async def test_the_loop_outlives_a_failing_database_and_seals_when_it_is_back(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    await write(db, row("o1"), seal=False)
    await sql(db, text("ALTER TABLE spend RENAME TO spend_away"))  # every run fails meanwhile
    sealer = SpendSealer(db, interval=0.01)
    sealer.start()
    try:
        for _ in range(1000):  # bounded: wait for two failed runs, not for a time
            if sum("spend seal failed" in r.getMessage() for r in caplog.records) >= 2:
                break
            await asyncio.sleep(0.01)
        assert sum("spend seal failed" in r.getMessage() for r in caplog.records) >= 2
        await sql(db, text("ALTER TABLE spend_away RENAME TO spend"))
        for _ in range(1000):
            if await seq_of(db, "o1") is not None:
                break
            await asyncio.sleep(0.01)
        assert await seq_of(db, "o1") == 1
        await write(db, row("o2"), seal=False)
    finally:
        await sealer.close()  # seals what is left at close
    assert await seq_of(db, "o2") == 2 and (await verify(db)).ok


async def test_costs_times_and_defaults_are_sealed_as_stored(db: Database) -> None:
    """What is hashed is what the database gives back: a cost past 12 decimals is rounded
    first, a float cost and a non-UTC time are normalized, left-out columns take their defaults."""
    odd = row("odd", cost_usd=Decimal("0.0000000000015"), ts=datetime(2026, 12, 3, 9, tzinfo=timezone(timedelta(hours=5))))
    sparse = {"request_id": "sparse", "workspace_id": "ws_a", "status": "ok", "cost_usd": 0.25}
    await write(db, odd, sparse, row("big", cost_usd=Decimal("123.456789012345")))
    result = await verify(db)
    assert result.ok and result.sealed_rows == 3
    async with db.session() as s:
        got = dict((await s.execute(select(SpendRow.request_id, SpendRow.cost_usd))).all())
    assert got["odd"] == Decimal("0.000000000002") and got["sparse"] == Decimal("0.25")


async def test_a_row_the_database_refuses_is_set_aside(db: Database) -> None:
    writer = SpendWriter(db)
    writer.record(row("bad-cost", cost_usd="a lot"))
    writer.record(row("bad-ts", ts="yesterday"))
    writer.record(row("bad-field", model=object()))
    writer.record(row("fine"))
    assert await writer.flush() == 1 and writer.dropped == 3 and not writer._down
    assert await SpendSealer(db, interval=1).seal_once() == 1
    result = await verify(db)
    assert result.ok and result.sealed_rows == 1


async def test_a_refused_row_leaves_the_others_sealed(db: Database) -> None:
    writer = SpendWriter(db)
    for r in (row("r1"), row("r2", status=None), row("r3", "ws_b")):  # status is NOT NULL
        writer.record(r)
    assert await writer.flush() == 2 and writer.dropped == 1
    assert await SpendSealer(db, interval=1).seal_once() == 2
    result = await verify(db)
    assert (result.ok, result.seals, result.sealed_rows) == (True, 2, 2)


async def test_governance_writes_between_and_beside_seals_keep_one_chain(db: Database) -> None:
    async def governed(i: int) -> None:
        await db.run_tx(lambda s: audit.append(s, workspace_id="ws_a", actor="admin", action="thing.done",
                                               data={"i": i}))

    async def commit_and_seal(i: int) -> None:
        await write(db, row(f"c{i}"), seal=False)
        await SpendSealer(db, interval=1).seal_once()  # may seal another's row too: none twice

    await write(db, row("g0"))
    await governed(0)  # the head moved under the sealer's remembered one
    await write(db, row("g1"))
    await asyncio.gather(*(commit_and_seal(i) for i in range(5)), *(governed(i) for i in range(1, 6)))
    await SpendSealer(db, interval=1).seal_once()
    result = await verify(db)
    async with db.session() as s:
        head = (await s.execute(select(AuditHead.seq))).scalar_one()
    assert result.ok and result.sealed_rows == 7 and result.unsealed_rows == 0
    assert result.count == head == 6 + result.seals and await seq_of(db, "g1") == 3


async def test_run_core_tx_retries_a_lost_race_and_gives_up_in_the_end(db: Database) -> None:
    tries = []

    def lose_once(conn: Any) -> int:
        tries.append(1)
        if len(tries) == 1:
            raise AuditConflict()
        return conn.execute(text("SELECT 2")).scalar_one()

    assert await db.run_core_tx(lose_once) == 2 and len(tries) == 2

    def always_lose(conn: Any) -> None:
        raise AuditConflict()

    with pytest.raises(AuditConflict):
        await db.run_core_tx(always_lose, attempts=2)


def test_a_head_moved_between_read_and_compare_and_set_is_a_conflict(tmp_path: Path) -> None:
    """Another writer commits between the append's read of the head and its compare-and-set:
    the append raises, the caller's transaction retries (on a connection of its own)."""
    path = tmp_path / "w.db"
    asyncio.run(_migrated(f"sqlite+aiosqlite:///{path}"))
    engine, other = create_engine(f"sqlite:///{path}"), create_engine(f"sqlite:///{path}")

    done = []

    def interleave(conn, cursor, statement, *_):  # noqa: ANN001 - SQLAlchemy's event signature
        if statement.startswith("UPDATE audit_head") and not done:
            done.append(1)
            with other.begin() as c:
                audit.append_sync(c, workspace_id="w", actor="other", action="x")

    event.listen(engine, "before_cursor_execute", interleave)
    try:
        with pytest.raises(AuditConflict), engine.begin() as conn:
            audit.append_sync(conn, workspace_id="w", actor="me", action="x")
        with engine.begin() as conn:  # the retry
            assert audit.append_sync(conn, workspace_id="w", actor="me", action="x")["seq"] == 2
    finally:
        engine.dispose()
        other.dispose()


async def _migrated(url: str) -> None:
    db = Database(url)
    await migrate.upgrade(db)
    await db.close()


async def test_append_sync_on_a_session_writes_the_same_chain(db: Database) -> None:
    async with db.transaction() as s:
        got = await s.run_sync(lambda ss: audit.append_sync(ss, workspace_id="w", actor="a", action="x"))
    assert got["seq"] == 1 and (await verify(db)).ok


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def bare(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    else:
        await reset_pg(PG_URL)
        database = Database(PG_URL)
    yield database
    await database.close()


async def _spend_schema(db: Database) -> tuple[set[str], set[str]]:
    def look(c: Any) -> tuple[set[str], set[str]]:
        i = inspect(c)
        return {col["name"] for col in i.get_columns("spend")}, {ix["name"] for ix in i.get_indexes("spend")}

    async with db.engine.connect() as conn:
        return await conn.run_sync(look)


async def test_0016_leaves_old_rows_unsealed_and_comes_back_out(bare: Database) -> None:
    assert await migrate.upgrade(bare, "0015") == "0015"
    async with bare.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO spend (ts, request_id, workspace_id, input_tokens, output_tokens, cache_read_tokens, "
            "cache_write_tokens, reasoning_tokens, cost_usd, attempts, status) VALUES "
            "(:ts, 'before', 'ws_a', 1, 2, 0, 0, 0, 0.5, 1, 'ok')"), {"ts": datetime(2026, 12, 1, tzinfo=UTC)})
    assert await migrate.upgrade(bare) == migrate.head_revision()
    columns, indexes = await _spend_schema(bare)
    assert "audit_seq" in columns and "ix_spend_audit_seq" in indexes
    assert await seq_of(bare, "before") is None
    await write(bare, row("after"), seal=False)
    assert await SpendSealer(bare, interval=1).seal_once() == 2  # the old row too, by the first run
    result = await verify(bare)
    assert (result.ok, result.seals, result.sealed_rows, result.unsealed_rows) == (True, 1, 2, 0)
    async with bare.engine.begin() as conn:
        from alembic import command

        def down(c: Any) -> None:
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = c
            command.downgrade(cfg, "0015")

        await conn.run_sync(down)
    columns, indexes = await _spend_schema(bare)
    assert "audit_seq" not in columns and "ix_spend_audit_seq" not in indexes
    async with bare.session() as s:
        assert (await s.execute(select(func.count()).select_from(SpendRow.__table__))).scalar_one() == 2


def test_the_digest_does_not_depend_on_row_order() -> None:
    now = datetime.now(UTC)
    rows = [{**row(f"o{i}"), "ts": now, "session_id": None} for i in range(3)]
    assert spend_seal.summary(rows) == spend_seal.summary(rows[::-1])
    assert spend_seal.summary(rows) != spend_seal.summary(rows[:2])


@pytest.fixture
async def sqlite_db(tmp_path: Path):
    """The interleaving hook needs the SQLite inserter's engine: no PostgreSQL twin."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await migrate.upgrade(database)
    yield database
    await database.close()


async def test_a_head_moved_after_the_stamps_costs_a_retry_not_a_wrong_seal(sqlite_db: Database) -> None:
    """A governance write commits between the sealer's read of the head and its append:
    the stamps carry a seq the event did not get, so the run starts again."""
    db = sqlite_db
    assert db.one_hop_writes
    await write(db, row("h1"), seal=False)
    other = create_engine(db._sync_writer().engine.url)
    done: list[int] = []

    def interleave(conn, cursor, statement, *_):  # noqa: ANN001 - SQLAlchemy's event signature
        if statement.startswith("UPDATE spend") and not done:
            done.append(1)
            with other.begin() as c:
                audit.append_sync(c, workspace_id="ws_a", actor="admin", action="thing.done")

    try:
        with on_statements(db._sync_writer().engine, "before_cursor_execute", interleave):
            assert await SpendSealer(db, interval=1).seal_once() == 1
    finally:
        other.dispose()
    assert done and await seq_of(db, "h1") == 2
    result = await verify(db)
    assert (result.ok, result.count, result.seals, result.sealed_rows) == (True, 2, 1, 1)


async def test_a_seal_failing_at_close_is_logged(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    sealer = SpendSealer(db, interval=60)
    sealer.start()
    sealer.start()  # once is enough
    await sql(db, text("ALTER TABLE spend RENAME TO spend_away"))
    try:
        await sealer.close()
    finally:
        await sql(db, text("ALTER TABLE spend_away RENAME TO spend"))
    assert any("spend seal at close failed" in r.getMessage() for r in caplog.records)
    await sealer.close()  # not running: nothing to do

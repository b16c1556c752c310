"""The async SQL engine: SQLite (embedded default, WAL) or PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, insert, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from warden.store.audit import AuditConflict

T = TypeVar("T")


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the single writer; busy_timeout waits instead of failing.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def private_dir(path: Path) -> None:
    """Create ``path`` 0700, or tighten it to 0700 if it exists looser and is ours: it
    holds the database and the keys, so nobody else may even list it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        path.chmod(0o700)


def _private_sqlite_file(path: Path) -> None:
    """The SQLite file 0600 before SQLite opens it (SQLite itself creates 0644); its -wal
    and -shm take the database file's mode. A file a looser version left is tightened."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            st = p.stat()
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                p.chmod(0o600)


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict = {"echo": echo}
        self._sqlite_file: URL | None = None  # a SQLite file (not :memory:): rows go in by _Inserter
        self._inserter: _Inserter | None = None  # made on first use
        if self.is_sqlite:
            db_path = make_url(url).database
            if db_path and db_path != ":memory:":
                _private_sqlite_file(Path(db_path))
                self._sqlite_file = make_url(url).set(drivername="sqlite")  # same file, pysqlite
        else:
            # No pre-ping: with asyncpg it is BEGIN, ';', ROLLBACK on every checkout. After a
            # restart one query fails, invalidates the whole pool, and the next reconnects.
            kwargs.update(pool_size=10, max_overflow=20, pool_recycle=1800)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer: queue this process's writers instead of having a
        # read snapshot fail when it upgrades to a write.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as s:
            yield s

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits on success and rolls back on any error."""
        async with self._write_lock or nullcontext(), self.sessionmaker() as s, s.begin():
            yield s

    async def insert_rows(self, table: Any, rows: list[dict[str, Any]]) -> None:
        """``INSERT`` ``rows`` into ``table`` (a mapped class or a table) in one transaction.

        On a SQLite file the transaction runs on a synchronous engine over the same
        file, in its own thread: one thread hop. Through aiosqlite it made five
        (cursor, execute, close, commit, the pool's reset), each a wake-up of the event
        loop; the spend writer's commit, which every completed response waits for,
        spent ~2 ms of a busy machine's time in them (0.35 ms this way)."""
        if self._sqlite_file is None:
            async with self.transaction() as s:
                await s.execute(insert(table), rows)
            return
        async with self._write_lock or nullcontext():
            await self._sync_writer().call_core(lambda conn: conn.execute(insert(table), rows))

    def _sync_writer(self) -> _Inserter:
        assert self._sqlite_file is not None
        if self._inserter is None:
            self._inserter = _Inserter(self._sqlite_file, echo=self.engine.echo)
        return self._inserter

    @property
    def one_hop_writes(self) -> bool:
        """A SQLite file: :meth:`run_sync_tx` writes a whole transaction in one thread hop."""
        return self._sqlite_file is not None

    async def run_sync_tx(self, fn: Callable[[Session], T], *, attempts: int = 20) -> T:
        """``fn`` in one transaction of a synchronous session on the inserter's thread (only
        when ``one_hop_writes``), again from the start if it lost an audit-chain race: one
        thread hop for the transaction, where aiosqlite makes several per statement."""
        for attempt in range(attempts):
            try:
                async with self._write_lock or nullcontext():
                    return await self._sync_writer().call(fn)
            except AuditConflict:
                await asyncio.sleep(0.002 * (attempt + 1))
        raise AuditConflict()

    async def run_core_tx(self, fn: Callable[[Connection], T], *, attempts: int = 20) -> T:
        """``fn`` in one transaction of a synchronous Core ``Connection``, again from the start
        if it lost an audit-chain race: on a SQLite file on the inserter's thread, elsewhere
        on the async engine (``run_sync``). No ORM session: the spend sealer's transaction
        (store/spend_sealer.py) reads and stamps thousands of rows."""
        for attempt in range(attempts):
            try:
                async with self._write_lock or nullcontext():
                    if self._sqlite_file is not None:
                        return await self._sync_writer().call_core(fn)
                    async with self.engine.begin() as conn:
                        return await conn.run_sync(fn)
            except AuditConflict:
                await asyncio.sleep(0.002 * (attempt + 1))
        raise AuditConflict()

    async def read_core(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` on a synchronous Core connection that only reads: on a SQLite file on a
        worker thread beside the inserter's, so a long read (the spend sealer's) never
        holds up the file's one writer; elsewhere on the async engine (``run_sync``)."""
        if self._sqlite_file is None:
            async with self.engine.connect() as conn:
                return await conn.run_sync(fn)
        engine = self._sync_writer().engine

        def read() -> T:
            with engine.connect() as conn:
                return fn(conn)

        return await asyncio.to_thread(read)

    async def run_tx(self, fn: Callable[[AsyncSession], Awaitable[T]], *, attempts: int = 20) -> T:
        """Run ``fn`` in a transaction, again from the start if it lost an audit-chain race."""
        for attempt in range(attempts):
            try:
                async with self.transaction() as s:
                    return await fn(s)
            except AuditConflict:
                await asyncio.sleep(0.002 * (attempt + 1))
        raise AuditConflict()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any driver error means "not reachable" here
            return False

    async def close(self) -> None:
        if self._inserter is not None:
            await self._inserter.close()
            self._inserter = None
        await self.engine.dispose()


class _Inserter:
    """A synchronous engine over a SQLite file and the one thread that uses it."""

    def __init__(self, url: URL, *, echo: bool) -> None:
        self.engine: Engine = create_engine(url, echo=echo)
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="warden-sqlite-insert")

    def _in_session(self, fn: Callable[[Session], T]) -> T:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            return fn(s)

    async def call(self, fn: Callable[[Session], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, self._in_session, fn)

    def _in_connection(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return fn(conn)

    async def call_core(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, self._in_connection, fn)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self.engine.dispose)
        self.thread.shutdown(wait=False)


def dialect_insert(s: AsyncSession, table: type) -> Any:
    """``INSERT`` in the session's dialect (for ``on_conflict_do_nothing``). The dialect
    module is imported here: a SQLite deployment never loads PostgreSQL's (~2 MB)."""
    if s.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)

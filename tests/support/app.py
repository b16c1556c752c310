"""What every kind of test shares: the admin key, the PostgreSQL / Redis servers CI
provides (each test run gets its own PostgreSQL database), an HTTP client on the
real ASGI app, and a live Warden on a loopback port."""

from __future__ import annotations

import os

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.secret_scan import SCAN, ScanningApp
from warden.app import create_app
from warden.config import Settings
from warden.services import Services

ADMIN_KEY = "wk-test-admin-0123456789abcdefghijklmnop"
REDIS_URL = os.environ.get("WARDEN_TEST_REDIS_URL")


def _own_database(base_url: str) -> str:
    """A database of this test run's own on the server WARDEN_TEST_DATABASE_URL names,
    so runs sharing one server (developers, CI) never reset each other's schema."""
    import asyncio
    import secrets

    from sqlalchemy.engine import make_url

    name = f"warden_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def create() -> None:
        engine = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await engine.dispose()

    asyncio.run(create())
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(base_url: str, url: str) -> None:
    import asyncio

    from sqlalchemy.engine import make_url

    async def drop() -> None:
        engine = create_async_engine(base_url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        await engine.dispose()

    asyncio.run(drop())


_PG_BASE_URL = os.environ.get("WARDEN_TEST_DATABASE_URL")
PG_URL = _own_database(_PG_BASE_URL) if _PG_BASE_URL else None


if os.environ.get("CI") and not (PG_URL and REDIS_URL):
    # In CI the scale-out tests must run, never silently skip.
    raise pytest.UsageError("CI needs WARDEN_TEST_DATABASE_URL and WARDEN_TEST_REDIS_URL")

requires_pg = pytest.mark.skipif(not PG_URL, reason="WARDEN_TEST_DATABASE_URL is not set")
requires_redis = pytest.mark.skipif(not REDIS_URL, reason="WARDEN_TEST_REDIS_URL is not set")



async def reset_pg(url: str) -> None:
    """Drop everything in the test database so each test starts from an empty schema."""
    SCAN.pg_url = url  # the test uses PostgreSQL: its rows are scanned after it
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


def client_for(services: Services, key: str | None = ADMIN_KEY) -> httpx.AsyncClient:
    app = ScanningApp(create_app(services=services))
    headers = {"authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://warden.test", headers=headers)


class LiveWarden:
    """A real Warden (uvicorn on a loopback port) in a background thread with its
    own event loop, so sync SDK clients and async tests alike talk real HTTP."""

    def __init__(self, settings: Settings) -> None:
        import threading

        self.settings = settings
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self.services: Services | None = None
        self.loop = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        import asyncio

        import uvicorn

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.services = await Services.start(self.settings)
            app = ScanningApp(create_app(services=self.services))
            config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                    access_log=False, lifespan="off", loop="asyncio")
            self.server = uvicorn.Server(config)
            serving = asyncio.create_task(self.server.serve())
            while not self.server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)
            self.port = self.server.servers[0].sockets[0].getsockname()[1]
            self._ready.set()
            await serving
            await self.services.close()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test by start()
            self.error = exc
            self._ready.set()

    def start(self) -> LiveWarden:
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def call(self, coro):  # noqa: ANN001, ANN201 - run a coroutine on the server's loop
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)


def drop_own_database() -> None:
    """At the end of the session: drop this run's PostgreSQL database."""
    if _PG_BASE_URL and PG_URL:
        _drop_database(_PG_BASE_URL, PG_URL)

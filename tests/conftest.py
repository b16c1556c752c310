"""Shared fixtures: settings on a temporary data dir, started services, an HTTP
client on the real ASGI app, and the PostgreSQL / Redis servers CI provides."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncio
import logging

import httpx
import pytest

from tests.support.app import ADMIN_KEY, PG_URL, client_for, drop_own_database, requires_pg, reset_pg
from tests.support.secret_scan import SCAN, ScanningHandler, data_files, pg_rows
from warden.config import Settings, load_settings
from warden.services import Services

def pytest_sessionstart(session: pytest.Session) -> None:
    logging.getLogger().addHandler(ScanningHandler())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_own_database()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI (``WARDEN_TEST_NO_SKIP=1``, set by ``.ci/run``) a skipped test fails: a
    missing browser, client or database must not pass as coverage."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("WARDEN_TEST_NO_SKIP") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where everything it needs is installed: {report.longrepr}"


@pytest.fixture(autouse=True)
def _no_secret_leaves(tmp_path: Path) -> Iterator[None]:
    """After every test: no secret the process held in its replies, logs or stored bytes
    (tests/support/secret_scan.py)."""
    SCAN.take()
    SCAN.pg_url = None
    yield
    SCAN.check_files(data_files(tmp_path))
    if SCAN.pg_url:
        for table, row in asyncio.run(pg_rows(SCAN.pg_url)):
            SCAN.check(f"PostgreSQL table {table}", row)
    found = SCAN.take()
    if found:
        pytest.fail("secrets leaked: " + "; ".join(found), pytrace=False)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's own WARDEN_* or provider variables."""
    for name in list(os.environ):
        if name.startswith("WARDEN_") and not name.startswith("WARDEN_TEST_"):
            monkeypatch.delenv(name)
        if name.endswith("_API_KEY") or name == "GOOGLE_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(autouse=True)
async def _close_upstream_client() -> AsyncIterator[None]:
    """Each test's event loop closes its pooled upstream client, as a server does at shutdown."""
    yield
    from warden.gateway.providers.http import aclose_client

    await aclose_client()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    svc = await Services.start(settings)
    yield svc
    await svc.close()


@pytest.fixture
async def pg_services(data_dir: Path) -> AsyncIterator[Services]:
    if not PG_URL:
        pytest.skip("WARDEN_TEST_DATABASE_URL is not set")
    await reset_pg(PG_URL)
    svc = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY,
                                             database_url=PG_URL, access_log=False))
    yield svc
    await svc.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def any_services(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[Services]:
    """Started services on each database in turn."""
    url = None
    if request.param == "postgresql":
        await reset_pg(PG_URL)
        url = PG_URL
    svc = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY,
                                             database_url=url, access_log=False))
    yield svc
    await svc.close()


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(services) as c:
        yield c


@pytest.fixture
async def anon(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(services, key=None) as c:
        yield c



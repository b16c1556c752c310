"""The suite's byte scan (issue 13, item 2): no secret the process holds — provider keys,
master keys, the bootstrap admin key — in any reply, log line or stored byte.

Every test is watched, not only the ones about secrets:

- replies: the apps the suite talks to (``client_for``, ``LiveWarden``) are wrapped in
  :class:`ScanningApp`, which reads every body chunk and WebSocket frame as it is sent;
- logs: :class:`ScanningHandler` renders each record through the server's own
  redacting pipeline (``warden.logs.make_handler``), so it sees exactly the line a
  server would write;
- stored rows: after the test, every file of its data directories and, for tests on
  PostgreSQL, every row of every table are read as bytes.

The secrets are the ones ``warden.logs.register_secret`` holds at the moment of the
check, kept for the rest of the session (a key must not leak after it was deleted
either). A finding fails the test that produced it, naming where, never the value.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from warden import logs

_PROVIDER_KEYS = ("cred:", "env:")
_TAIL = 512  # bytes of the previous chunk kept, so a secret split across two chunks is found


class SecretScan:
    def __init__(self) -> None:
        self.known: dict[str, str] = {}  # secret -> owner
        self.findings: list[str] = []
        self.pg_url: str | None = None

    def refresh(self) -> None:
        self.known.update({s: o for o, s in logs._secrets._owners.items()})

    def check(self, where: str, data: bytes | str) -> None:
        self.refresh()
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        for secret, owner in self.known.items():
            if secret in text:
                self.findings.append(f"{owner} in {where}")

    def check_files(self, paths: Iterable[Path]) -> None:
        self.refresh()
        for path in paths:
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            for secret, owner in self.known.items():
                if path.suffix == ".key" and not owner.startswith(_PROVIDER_KEYS):
                    continue  # admin.key, master.key…: the files whose job is to hold that key
                if secret.encode() in raw or secret.encode("utf-16-le") in raw:
                    self.findings.append(f"{owner} in file {path.name}")

    def take(self) -> list[str]:
        found, self.findings = sorted(set(self.findings)), []
        return found


SCAN = SecretScan()


class ScanningApp:
    """ASGI wrapper: the app's replies, scanned chunk by chunk as they are sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:  # state, routes… as on the app itself
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        where = f"reply to {scope.get('method', 'WS')} {scope.get('path')}"
        tail = b""

        async def scanning_send(message: dict) -> None:
            nonlocal tail
            kind = message["type"]
            if kind == "http.response.body":
                chunk = message.get("body", b"")
                SCAN.check(where, tail + chunk)
                tail = (tail + chunk)[-_TAIL:]
            elif kind == "websocket.send":
                SCAN.check(where, message.get("text") or message.get("bytes") or b"")
            elif kind == "websocket.close" and message.get("reason"):
                SCAN.check(where, message["reason"])
            await send(message)

        await self.app(scope, receive, scanning_send)


class ScanningHandler(logging.Handler):
    """Renders every record as the server's handler would, and scans the line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._server_handler = logs.make_handler(None)

    def emit(self, record: logging.LogRecord) -> None:
        record = copy.copy(record)  # the server's filter rewrites records; others must see them as sent
        try:
            if self._server_handler.filter(record):
                SCAN.check(f"log line of {record.name}", self._server_handler.format(record))
        except Exception:  # a record that cannot be rendered is the logging tests' business
            pass


def data_files(root: Path) -> list[Path]:
    """What a test's servers stored under ``root``: its data directories and database files."""
    found: list[Path] = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        in_data_dir = any(part == "data" or part.startswith("data") for part in path.relative_to(root).parts[:-1])
        if in_data_dir or ".db" in path.name or path.suffix in (".sqlite", ".jsonl", ".journal"):
            found.append(path)
    return found


async def pg_rows(url: str) -> list[tuple[str, str]]:
    """Every row of every table of the PostgreSQL database at ``url``, as text."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    rows: list[tuple[str, str]] = []
    try:
        async with engine.connect() as conn:
            tables = (await conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars().all()
            for table in tables:
                for (row,) in await conn.execute(text(f'SELECT t::text FROM "{table}" t')):
                    rows.append((table, row))
    finally:
        await engine.dispose()
    return rows

"""A run's events: numbered, pushed at once to live followers in this process,
and written to ``run_events`` in small batches so a client that lost its
connection (or follows from another instance) can replay them.

Text deltas are the bulk of a run's events, so they are batched; any other
event flushes the batch at once (a tool call, a pause or the end of a run is
durable before anything else happens).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import insert

from warden.store.agent_models import RunEvent
from warden.store.db import Database
from warden.store.base import utcnow

DELTA = "message.delta"
TERMINAL = frozenset({"run.completed", "run.failed", "run.cancelled"})
STOPS_STREAM = TERMINAL | {"run.paused"}  # where a turn's own stream ends
_DELTA_BATCH = 32


class RunChannel:
    """In-process pub/sub of one run's events (this execution of it)."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.closed = False
        self._changed = asyncio.Event()

    def publish(self, event: dict[str, Any]) -> None:
        self.history.append(event)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every event with ``seq > after`` in order, live, until the channel closes."""
        index = 0
        while True:
            changed = self._changed
            while index < len(self.history):
                event = self.history[index]
                index += 1
                if event["seq"] > after:
                    yield event
            if self.closed:
                return
            await changed.wait()


class EventLog:
    """Numbers, publishes and persists the events of one run."""

    def __init__(self, db: Database, run_id: str, session_id: str, channel: RunChannel,
                 *, last_seq: int = 0) -> None:
        self.db = db
        self.run_id = run_id
        self.session_id = session_id
        self.channel = channel
        self.seq = last_seq
        self._pending: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    def emit(self, type_: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        event = self.record(type_, data)
        self._pending.append(event)
        return event

    @property
    def needs_flush(self) -> bool:
        return bool(self._pending) and (self._pending[-1]["type"] != DELTA or len(self._pending) >= _DELTA_BATCH)

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            now = utcnow()
            async with self.db.transaction() as s:
                await s.execute(insert(RunEvent), [
                    {"run_id": self.run_id, "seq": e["seq"], "type": e["type"], "data": _payload(e),
                     "created_at": now} for e in batch
                ])

    def record(self, type_: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Number and publish an event the caller has already written (see :func:`event_rows`)."""
        self.seq += 1
        event = {"type": type_, "run_id": self.run_id, "session_id": self.session_id, "seq": self.seq, **(data or {})}
        self.channel.publish(event)
        return event


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("type", "run_id", "session_id", "seq")}


def event_rows(run_id: str, after: int, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """``run_events`` rows for (type, data) pairs numbered from ``after + 1``, to insert
    in the caller's transaction."""
    now = utcnow()
    return [{"run_id": run_id, "seq": after + i, "type": type_, "data": data, "created_at": now}
            for i, (type_, data) in enumerate(items, start=1)]


def from_row(row: RunEvent, session_id: str) -> dict[str, Any]:
    return {"type": row.type, "run_id": row.run_id, "session_id": session_id, "seq": row.seq, **row.data}

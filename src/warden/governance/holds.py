"""Callers held while a human decides an external agent's call (issue 17).

One ``asyncio.Event`` per approval id, shared by every caller joined to it, so a
thousand held calls cost a thousand small awaits and nothing per tick. Three
things wake them: a decision on this instance (``release``), a state-store message
from another instance (``on_message`` on ``GATE_TOPIC``), and, as the safety net
for a lost message, one periodic query over *all* held ids together (``poll_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import select

from warden.store.db import Database
from warden.store.governance_models import Approval

log = logging.getLogger("warden.governance")

GATE_TOPIC = "gate.decided"  # key: an approval id of an external call that was decided
_POLL_CHUNK = 500  # ids per IN (...) of the safety-net query


class Holds:
    def __init__(self, db: Database, *, poll_s: float = 3.0, progress_s: float = 5.0,
                 publish: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self.db = db
        self.poll_s = poll_s
        self.progress_s = progress_s
        self.publish = publish
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}
        self._poller: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        """How many callers are held right now (all approvals)."""
        return sum(self._waiting.values())

    async def wait(self, approval_id: str, timeout_s: float,
                   on_hold: Callable[[float, str], Awaitable[None]] | None = None) -> bool:
        """Hold until the approval is decided (True) or ``timeout_s`` passes (False)."""
        event = self._events.setdefault(approval_id, asyncio.Event())
        self._waiting[approval_id] = self._waiting.get(approval_id, 0) + 1
        self._ensure_poller()
        started = time.monotonic()
        try:
            while not event.is_set():
                left = timeout_s - (time.monotonic() - started)
                if left <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(left, self.progress_s))
                if not event.is_set() and on_hold is not None:
                    await on_hold(time.monotonic() - started, approval_id)
            return True
        finally:
            self._waiting[approval_id] -= 1
            if self._waiting[approval_id] <= 0:
                self._waiting.pop(approval_id, None)
                self._events.pop(approval_id, None)

    def release(self, approval_id: str) -> None:
        """Wake this instance's callers held on the approval."""
        event = self._events.get(approval_id)
        if event is not None:
            event.set()

    async def announce(self, approval_id: str) -> None:
        """A decision was recorded here: wake the holders here and on every other instance."""
        self.release(approval_id)
        if self.publish is not None:
            try:
                await self.publish(GATE_TOPIC, approval_id)
            except Exception:  # the poll is the safety net
                log.warning("announcing approval %s failed", approval_id, exc_info=True)

    def on_message(self, topic: str, key: str) -> None:
        if topic == GATE_TOPIC:
            self.release(key)

    # --- the safety net ---------------------------------------------------------

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_forever(), name="warden-gate-holds-poll")

    async def _poll_forever(self) -> None:
        while self._events:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll_once()
            except Exception:  # the database may be briefly away; next tick
                log.warning("polling held approvals failed", exc_info=True)

    async def poll_once(self) -> int:
        """One query for all held approvals (chunked): wake those no longer pending."""
        ids = list(self._events)
        woken = 0
        for i in range(0, len(ids), _POLL_CHUNK):
            chunk = ids[i:i + _POLL_CHUNK]
            async with self.db.session() as s:
                decided = list((await s.execute(select(Approval.id).where(
                    Approval.id.in_(chunk), Approval.status != "pending"))).scalars())
            for approval_id in decided:
                self.release(approval_id)
                woken += 1
        return woken

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

"""Agents by id for the governed-call hot path (``Gate.agent_for``: a key bound to an
agent acts as it on every ``/mcp`` request): a dict lookup while the copy is fresh,
one query shared by concurrent misses (singleflight.py), as API keys are cached
(tenancy/accounts.py). The copies are shared: read them, never change them.

A change drops this instance's copy at once and is broadcast (topic ``agent``) so
the other instances drop theirs; the TTL bounds the delay if that message is lost.
Who changes an agent says so: the registry (update, delete) after its commit, and
maturity's tier moves at their transaction's commit (:meth:`AgentCache.on_commit`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from warden.singleflight import SingleFlight
from warden.state.base import FLUSH_ALL
from warden.store.agent_models import Agent
from warden.store.db import Database

TOPIC = "agent"  # invalidation topic; key: the agent id
Notify = Callable[[str, str], Awaitable[None]]


class AgentCache:
    def __init__(self, db: Database, *, ttl: float = 5.0, notify: Notify | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.ttl = ttl
        self.notify = notify  # the broadcast to other instances; None: this instance only
        self._clock = clock
        self._cache: dict[str, tuple[float, Agent | None]] = {}  # id -> (expires at, agent or None: gone)
        self._loads: SingleFlight[str, Agent | None] = SingleFlight()
        self._sending: set[asyncio.Task[None]] = set()

    async def get(self, agent_id: str) -> Agent | None:
        now = self._clock()
        hit = self._cache.get(agent_id)
        if hit is not None and hit[0] > now:
            return hit[1]

        async def load() -> Agent | None:
            async with self.db.session() as s:
                agent = await s.get(Agent, agent_id)
            if len(self._cache) > 100_000:  # bound memory
                self._cache.clear()
            self._cache[agent_id] = (now + self.ttl, agent)
            return agent

        return await self._loads.run(agent_id, load)

    def forget(self, agent_id: str | None = None) -> None:
        if agent_id is None:
            self._cache.clear()
        else:
            self._cache.pop(agent_id, None)

    async def forget_everywhere(self, agent_id: str) -> None:
        """After a committed change of the agent: here now, elsewhere by the broadcast."""
        self.forget(agent_id)
        if self.notify is not None:
            await self.notify(TOPIC, agent_id)

    def on_commit(self, s: AsyncSession, agent_id: str) -> None:
        """Forget the agent everywhere once ``s``'s transaction commits (not before: another
        instance would read the old row again and keep it for the TTL)."""

        def committed(_session: object) -> None:
            self.forget(agent_id)
            task = asyncio.get_running_loop().create_task(self.forget_everywhere(agent_id))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

        event.listen(s.sync_session, "after_commit", committed, once=True)

    def on_message(self, topic: str, key: str) -> None:
        """The subscriber: another instance (or this one) changed an agent."""
        if topic == FLUSH_ALL:
            self.forget()
        elif topic == TOPIC:
            self.forget(None if key == FLUSH_ALL else key)

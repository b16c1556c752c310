"""The runs executing in this process, and the timings they keep.

A run executes as its own task, not inside the HTTP request, so a paused run
holds no worker and followers can come and go. Every part of the runtime shares
one :class:`LiveRuns`: the loop adds a run when it starts or goes on, followers
read its channel, the heartbeat beats for it (renewing this instance's lease on
it), and the sweep leaves it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from warden.agents.events import STOPS_STREAM, RunChannel
from warden.agents.runs.outcome import RunOutcome
from warden.store.base import utcnow


class LeaseLost(Exception):
    """A write of a run found it no longer this instance's: stop, and write nothing more."""


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    tool_timeout_s: float = 30.0
    heartbeat_s: float = 10.0
    stale_after_s: float = 60.0  # a running run whose heartbeat is older is abandoned
    sweep_every_s: float = 30.0
    # An SSE stream of a run sends a comment this often when it has nothing else to
    # send (a paused or quiet run), so proxies do not cut the idle connection.
    keepalive_s: float = 15.0
    # How long this instance's claim on a run it executes lasts; the heartbeat renews it.
    lease_s: float = 30.0

    def lease_until(self) -> datetime:
        return utcnow() + timedelta(seconds=self.lease_s)


@dataclass(slots=True)
class RunHandle:
    run_id: str
    session_id: str
    channel: RunChannel
    task: asyncio.Task[RunOutcome]


@dataclass(slots=True)
class _Live:
    handle: RunHandle
    cancellable: bool = True
    lost: bool = False  # its lease went elsewhere (cancelled, or taken over): write nothing more
    ending: bool = False  # its task is writing the run's end: nobody else's to stop


class LiveRuns:
    """The runs this process executes now, by id; ``config`` is read at each use, so
    every part sees the same timings."""

    def __init__(self, config: RuntimeConfig, instance_id: str | None = None) -> None:
        self.config = config
        # This process's name as a runs' owner: host, pid and a random part (a pid comes back).
        self.instance_id = instance_id or f"{socket.gethostname()[:48]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._runs: dict[str, _Live] = {}

    def add(self, handle: RunHandle) -> RunHandle:
        self._runs[handle.run_id] = _Live(handle)
        return handle

    def drop(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._runs

    def channel(self, run_id: str) -> RunChannel | None:
        live = self._runs.get(run_id)
        return live.handle.channel if live is not None else None

    def executing(self) -> list[str]:
        """The runs whose task still runs (the ones to keep a heartbeat for)."""
        return [rid for rid, live in self._runs.items() if not live.handle.task.done()]

    def in_session(self, session_id: str) -> list[str]:
        return [rid for rid, live in self._runs.items() if live.handle.session_id == session_id]

    def hold(self, run_id: str) -> None:
        """The run waits for a human now: its client leaving no longer cancels it."""
        live = self._runs.get(run_id)
        if live is not None:
            live.cancellable = False

    async def cancel(self, run_id: str, *, even_held: bool = False) -> bool:
        """Cancel a run executing here (a held one only ``even_held``). True if it was cancelled."""
        live = self._runs.get(run_id)
        if live is None or live.handle.task.done() or not (live.cancellable or even_held):
            return False
        live.handle.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(live.handle.task)
        return True

    def mark_ending(self, run_id: str) -> None:
        live = self._runs.get(run_id)
        if live is not None:
            live.ending = True

    def is_ending(self, run_id: str) -> bool:
        live = self._runs.get(run_id)
        return live is not None and live.ending

    def is_lost(self, run_id: str) -> bool:
        live = self._runs.get(run_id)
        return live is not None and live.lost

    async def lose(self, run_id: str) -> bool:
        """The run is no longer this process's (cancelled by an admin, or its lease expired and
        another instance took it): stop its task without writing its end. True if it ran here."""
        live = self._runs.get(run_id)
        if live is None or live.handle.task.done() or live.ending:
            return False
        live.lost = True
        live.handle.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(live.handle.task)
        return True

    async def release_all(self) -> list[str]:
        """Shutting down: stop every run executing here without ending it; returns their ids
        (the caller expires their leases, so another instance, or this server started
        again, takes them over at once)."""
        ids = self.executing()
        for run_id in ids:
            await self.lose(run_id)
        return ids


async def stream_turn(handle: RunHandle) -> AsyncIterator[dict[str, Any]]:
    """The events of a turn its starter sees: from ``run.started`` to the end or a pause."""
    async for event in handle.channel.follow(0):
        yield event
        if event["type"] in STOPS_STREAM:
            return

"""Concurrent callers asking for the same thing share one in-flight computation.

Under load, a cache entry that expires sends every waiting request to the
database at once; with :class:`SingleFlight` they await one query instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """``await load()``, unless a call for ``key`` is already running: then its result
        (or its exception). A waiter's cancellation does not cancel the shared call;
        if the caller that runs it is cancelled, a waiter runs ``load`` itself."""
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled, not the shared call
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]
        future.set_result(value)
        return value

"""The Redis backend's pub/sub listener: one background task, reconnecting by itself.

It subscribes to a fixed set of channels and hands every message to
``on_message``. After a reconnect it calls ``on_gap`` before anything else,
since messages published while it was away are lost for good (pub/sub keeps
nothing). ``listening`` is set while all channels are subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("warden.state.redis")

# Errors that mean "the store is not there right now", not "we sent nonsense".
DOWN = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError)

_BACKOFF = (0.1, 2.0)  # first and longest wait between reconnects, seconds


class Listener:
    def __init__(
        self,
        client: Redis,
        channels: tuple[str, ...],
        on_message: Callable[[str, str], Awaitable[None]],
        on_gap: Callable[[], Awaitable[None]],
    ) -> None:
        self._client = client
        self._channels = channels
        self._on_message = on_message
        self._on_gap = on_gap
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def ensure(self) -> None:
        """Start the task if it is not running (first use, or it was stopped)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="warden-state-listener"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        backoff, connected_before = _BACKOFF[0], False
        while True:
            pubsub: PubSub = self._client.pubsub()
            try:
                await pubsub.subscribe(*self._channels)
                confirmed = 0
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == len(self._channels):
                            backoff = _BACKOFF[0]
                            if connected_before:
                                await self._on_gap()
                            connected_before = True
                            self.listening.set()
                    elif message["type"] == "message":
                        await self._on_message(message["channel"], message["data"])
            except DOWN:
                log.warning("shared state listener lost its connection; reconnecting")
            except Exception:  # keep listening whatever went wrong
                log.exception("shared state listener failed; restarting")
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF[1])

"""Redis-backed shared state, for any number of Warden instances.

Atomicity. Every read-modify-write is one Lua script (``_redis_scripts``),
loaded with ``register_script`` (EVALSHA, falling back to EVAL/SCRIPT LOAD
after a restart wiped the script cache). All keys a script touches are passed
in KEYS, so a script never reads undeclared keys. Multi-key scripts need the
keys on one node: use a single Redis (or a primary with replicas), not Cluster.

Time. Scripts read the server's ``TIME`` so instances with skewed clocks agree
on reservation expiry, rate windows and breaker cooldowns. Only relative
durations ever come back to Python (e.g. "cooldown ends in 3.2 s"), which are
then laid on the local monotonic clock. Tests may inject ``clock``; it is then
sent with every call instead of ``TIME`` (all instances in a test share it).
Key TTLs are only garbage collection: correctness never depends on them.

Money. Counters are integer pico-USD kept exact by ``HINCRBY`` and by decimal
string arithmetic inside Lua (doubles would round above ~9,000 USD).

Failure. Short socket timeouts and one immediate reconnect attempt (a pooled
connection may be stale after Redis restarted). Anything connection-shaped
becomes :class:`StateUnavailable`; the pool reconnects on the next call, so the
instance recovers by itself when Redis returns.

Circuit breakers on the hot path. ``breaker_allow`` runs per request, so each
instance keeps a *local view* per deployment: the state and when it may next
change. A view younger than ``breaker_refresh_s`` (0.5 s) answers without a
round trip when it says "closed" (allow) or "open/half-open, cooldown not
over" (deny). Only when a cooldown has run out does the call go to Redis,
where a script atomically lets exactly one caller across all instances claim
the half-open probe. Every transition is PUBLISHed on a breaker channel; the
listener drops that deployment's view so the next call re-reads it. So a
breaker opened anywhere reaches every instance in milliseconds, and within
``breaker_refresh_s`` even if a pub/sub message is lost. ``breaker_record``
skips Redis for a success on a closed view (it changes nothing).

Invalidation. ``publish`` sends ``[topic, key]`` on one channel; a background
listener task (``_redis_listener.py``, started on first use) delivers to local
callbacks, reconnects with backoff on its own, and after a reconnect tells
subscribers ``(FLUSH_ALL, FLUSH_ALL)`` since messages may have been missed
meanwhile. The Lua this runs lives in ``_redis_scripts.py``; budgets and rate
limits (reserve, admit, settle, rate buckets) in ``_redis_counters.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from warden.state import _redis_scripts as lua
from warden.state._redis_counters import RedisCounters, store_errors
from warden.state._redis_listener import DOWN, Listener
from warden.state.base import (
    DEFAULT_RESERVATION_TTL_S,
    FLUSH_ALL,
    BreakerConfig,
    BreakerState,
    InvalidationCallback,
    StateUnavailable,
    deliver,
)

log = logging.getLogger(__name__)

_BREAKER_KEEP_MS = 86_400_000  # an untouched open breaker is forgotten after a day


@dataclass(slots=True)
class _View:
    state: BreakerState
    changes_at: float  # store-clock seconds when open/half_open may move on
    fetched: float  # time.monotonic() of the read


class RedisState(RedisCounters):
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "warden:",
        clock: Callable[[], float] | None = None,
        breaker: BreakerConfig | None = None,
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
        breaker_refresh_s: float = 0.5,
        subscribe_wait_s: float = 2.0,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._clock = clock
        self._breaker_cfg = breaker or BreakerConfig()
        self._reservation_ttl_s = reservation_ttl_s
        self._breaker_refresh_s = breaker_refresh_s
        self._subscribe_wait_s = subscribe_wait_s
        self._inv_channel = f"{prefix}inv"
        self._breaker_channel = f"{prefix}breaker"
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(getattr(lua, name))
            for name in (
                "RESERVE",
                "ADMIT",
                "FINISH",
                "SETTLE",
                "USAGE",
                "RATE",
                "BREAKER_ALLOW",
                "BREAKER_RECORD",
                "BREAKER_READ",
                "BREAKER_TRIP",
            )
        }
        self._views: dict[str, _View] = {}
        self._callbacks: list[InvalidationCallback] = []
        self._listener = Listener(
            client, (self._inv_channel, self._breaker_channel), self._on_message, self._after_gap
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout_s: float = 1.0,
        connect_timeout_s: float = 0.5,
        **kwargs: Any,
    ) -> RedisState:
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, **kwargs)

    # ------------------------------------------------------------ helpers

    def _local_now(self) -> float:
        return time.monotonic() if self._clock is None else self._clock()

    # ------------------------------------------------------------ breakers

    async def breaker_allow(self, deployment_id: str) -> bool:
        self._listener.ensure()
        view = self._fresh_view(deployment_id)
        if view is not None:
            if view.state == "closed":
                return True
            if self._local_now() < view.changes_at:
                return False
        cfg = self._breaker_cfg
        allowed, state, until_us = await self._run(
            "BREAKER_ALLOW",
            [self._key("cb", deployment_id)],
            [
                self._now_arg(),
                str(int(cfg.cooldown_s * 1_000_000)),
                self._breaker_channel,
                deployment_id,
                _BREAKER_KEEP_MS,
            ],
        )
        self._set_view(deployment_id, state, int(until_us))
        return int(allowed) == 1

    async def breaker_record(self, deployment_id: str, ok: bool) -> BreakerState:
        self._listener.ensure()
        view = self._fresh_view(deployment_id)
        if ok and view is not None and view.state == "closed":
            return "closed"
        cfg = self._breaker_cfg
        state, until_us = await self._run(
            "BREAKER_RECORD",
            [self._key("cb", deployment_id), self._key("cbf", deployment_id)],
            [
                self._now_arg(),
                "1" if ok else "0",
                cfg.failures,
                str(int(cfg.window_s * 1_000_000)),
                str(int(cfg.cooldown_s * 1_000_000)),
                self._breaker_channel,
                deployment_id,
                uuid.uuid4().hex,
                _BREAKER_KEEP_MS,
            ],
        )
        self._set_view(deployment_id, state, int(until_us))
        return cast(BreakerState, state)

    async def breaker_trip(self, deployment_id: str, cooldown_s: float) -> None:
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self._listener.ensure()
        cooldown_us = int(cooldown_s * 1_000_000)
        await self._run(
            "BREAKER_TRIP",
            [self._key("cb", deployment_id), self._key("cbf", deployment_id)],
            [self._now_arg(), str(cooldown_us), self._breaker_channel, deployment_id, _BREAKER_KEEP_MS],
        )
        self._set_view(deployment_id, "open", cooldown_us)

    async def breaker_states(self, deployment_ids: Iterable[str]) -> dict[str, BreakerState]:
        self._listener.ensure()
        ids = list(deployment_ids)
        # Snapshot now: the listener may drop views while we await the read.
        views = {d: v for d in ids if (v := self._fresh_view(d)) is not None}
        stale = [d for d in dict.fromkeys(ids) if d not in views]
        if stale:
            out = await self._run(
                "BREAKER_READ",
                [self._key("cb", d) for d in stale],
                [self._now_arg(), str(int(self._breaker_cfg.cooldown_s * 1_000_000))],
            )
            for i, dep in enumerate(stale):
                views[dep] = self._set_view(dep, out[2 * i], int(out[2 * i + 1]))
        now = self._local_now()
        states: dict[str, BreakerState] = {}
        for dep in ids:
            view = views[dep]
            if view.state == "open" and now >= view.changes_at:
                states[dep] = "half_open"  # a probe may be claimed
            else:
                states[dep] = view.state
        return states

    def _fresh_view(self, deployment_id: str) -> _View | None:
        view = self._views.get(deployment_id)
        if view is None or time.monotonic() - view.fetched >= self._breaker_refresh_s:
            return None
        return view

    def _set_view(self, deployment_id: str, state: str, until_us: int) -> _View:
        view = _View(
            cast(BreakerState, state), self._local_now() + until_us / 1_000_000, time.monotonic()
        )
        self._views[deployment_id] = view
        return view

    # ------------------------------------------------------------ invalidation

    async def publish(self, topic: str, key: str) -> None:
        with store_errors():
            await self._redis.publish(self._inv_channel, orjson.dumps([topic, key]))

    async def subscribe(self, callback: InvalidationCallback) -> Callable[[], None]:
        """Register ``callback``; waits until the listener is subscribed so a
        message published after this returns is not missed. If the store is
        down this raises StateUnavailable, but the callback stays registered
        and starts receiving once the listener connects."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        self._listener.ensure()
        try:
            await asyncio.wait_for(self._listener.listening.wait(), self._subscribe_wait_s)
        except TimeoutError:
            raise StateUnavailable() from None
        return unsubscribe

    async def _on_message(self, channel: str, data: str) -> None:
        if channel == self._breaker_channel:
            self._views.pop(data, None)
            return
        try:
            topic, key = orjson.loads(data)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            log.warning("ignoring malformed invalidation message")
            return
        await deliver(self._callbacks, topic, key)

    async def _after_gap(self) -> None:
        self._views.clear()
        await deliver(self._callbacks, FLUSH_ALL, FLUSH_ALL)

    # ------------------------------------------------------------ health

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except DOWN:
            return False

    async def close(self) -> None:
        await self._listener.stop()
        self._callbacks.clear()
        await self._redis.aclose()

"""What only Redis can show: several instances sharing state, the server clock,
and outages with recovery."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from tests.support.state import BREAKER, FakeClock, RedisFactory, ThrowawayRedis, eventually

from warden.errors import ServiceUnavailable
from warden.state import BudgetScope, RateLimit, StateUnavailable, create_state
from warden.state import _redis_scripts as lua
from warden.state.base import FLUSH_ALL
from warden.state.redis import RedisState

# ---------------------------------------------------------------- two instances


async def test_concurrent_reserves_across_two_instances_admit_exactly_k(
    redis_factory: RedisFactory,
) -> None:
    a, b = redis_factory(), redis_factory()
    k, amount = 5, 1_000_000_007
    scopes = [BudgetScope("ws:shared", k * amount), BudgetScope("key:shared", None)]

    results = await asyncio.gather(
        *((a if i % 2 else b).reserve(scopes, amount, f"r{i}") for i in range(64))
    )

    assert sum(r.ok for r in results) == k
    assert await a.usage("ws:shared") == (0, k * amount)
    assert await b.usage("key:shared") == (0, k * amount)


async def test_settle_on_another_instance_than_reserve(redis_factory: RedisFactory) -> None:
    a, b = redis_factory(), redis_factory()
    await a.reserve([BudgetScope("ws:x", 100)], 50, "r1")

    assert await b.settle("r1", 20) is True
    assert await a.settle("r1", 20) is False
    assert await a.usage("ws:x") == (20, 0)


async def test_rate_burst_across_two_instances_admits_exactly_n(
    redis_factory: RedisFactory,
) -> None:
    a, b = redis_factory(), redis_factory()
    limits = [RateLimit("rpm:key", 12, 60), RateLimit("rpm:ws", 100, 60)]

    batches = await asyncio.gather(
        *((a if i % 2 else b).rate_acquire_many(limits) for i in range(64))
    )

    assert sum(batch.allowed for batch in batches) == 12
    # The workspace limit only lost what was actually admitted.
    assert (await a.rate_acquire("rpm:ws", 100, 60)).remaining == 100 - 12 - 1


async def test_breaker_state_is_shared_between_instances(
    redis_factory: RedisFactory, clock: FakeClock
) -> None:
    a, b = redis_factory(), redis_factory()
    assert await b.breaker_allow("dep") is True  # b now holds a "closed" local view

    for _ in range(BREAKER.failures):
        await a.breaker_record("dep", False)

    # b drops its view on the pub/sub message (or after 0.5 s at worst).
    await eventually(lambda: _denied(b, "dep"))
    assert await b.breaker_states(["dep"]) == {"dep": "open"}

    clock.advance(BREAKER.cooldown_s)
    verdicts = await asyncio.gather(
        *(store.breaker_allow("dep") for store in (a, b) for _ in range(8))
    )
    assert verdicts.count(True) == 1
    prober = (a, b)[verdicts.index(True) // 8]
    other = b if prober is a else a

    assert await prober.breaker_record("dep", False) == "open"  # probe failed: re-open
    await eventually(lambda: _state_is(other, "dep", "open"))
    assert await other.breaker_allow("dep") is False

    clock.advance(BREAKER.cooldown_s)
    assert await other.breaker_allow("dep") is True  # the next probe
    assert await other.breaker_record("dep", True) == "closed"
    await eventually(lambda: prober.breaker_allow("dep"))
    assert await prober.breaker_states(["dep"]) == {"dep": "closed"}


async def test_endpoint_trip_reaches_other_instances_with_its_cooldown(
    redis_factory: RedisFactory, clock: FakeClock
) -> None:
    a, b = redis_factory(), redis_factory()
    assert await b.breaker_allow("ep:c@host") is True  # a "closed" local view on b

    await a.breaker_trip("ep:c@host", 1.0)

    await eventually(lambda: _denied(b, "ep:c@host"))
    clock.advance(1.0)  # the trip's cooldown, not the store's (5 s)
    assert await b.breaker_states(["ep:c@host"]) == {"ep:c@host": "half_open"}
    verdicts = await asyncio.gather(*(s.breaker_allow("ep:c@host") for s in (a, b) for _ in range(4)))
    assert verdicts.count(True) == 1
    prober = (a, b)[verdicts.index(True) // 4]
    assert await prober.breaker_record("ep:c@host", True) == "closed"
    other = b if prober is a else a
    await eventually(lambda: other.breaker_allow("ep:c@host"))


async def _denied(store: RedisState, dep: str) -> bool:
    return not await store.breaker_allow(dep)


async def _state_is(store: RedisState, dep: str, state: str) -> bool:
    return (await store.breaker_states([dep]))[dep] == state


async def test_invalidation_reaches_other_instances(redis_factory: RedisFactory) -> None:
    a, b = redis_factory(), redis_factory()
    got: list[tuple[str, str]] = []
    arrived = asyncio.Event()

    def on_message(topic: str, key: str) -> None:
        got.append((topic, key))
        arrived.set()

    await b.subscribe(on_message)
    await a.publish("api_key", "sha256:abcd")
    await asyncio.wait_for(arrived.wait(), 5)

    assert got == [("api_key", "sha256:abcd")]


async def test_malformed_message_is_skipped(redis_factory: RedisFactory, redis_url: str) -> None:
    store = redis_factory()
    got: list[tuple[str, str]] = []
    arrived = asyncio.Event()

    def on_message(topic: str, key: str) -> None:
        got.append((topic, key))
        arrived.set()

    await store.subscribe(on_message)
    raw = Redis.from_url(redis_url)
    await raw.publish(f"{redis_factory.prefix}inv", b"not json")
    await raw.publish(f"{redis_factory.prefix}inv", b"[1]")
    await raw.aclose()
    await store.publish("t", "k")
    await asyncio.wait_for(arrived.wait(), 5)

    assert got == [("t", "k")]


# ---------------------------------------------------------------- round trips


class _CountingRedis(Redis):
    """A real client that records the name of every command it sends."""

    sent: list[str]

    async def execute_command(self, *args, **options):  # noqa: ANN002, ANN003, ANN201
        self.sent.append(str(args[0]).upper())
        return await super().execute_command(*args, **options)


async def test_settle_with_scopes_and_adjust_many_take_one_round_trip_each(
    redis_factory: RedisFactory, redis_url: str
) -> None:
    client = _CountingRedis.from_url(redis_url, decode_responses=True)
    client.sent = []
    store = RedisState(client, prefix=redis_factory.prefix, clock=redis_factory.clock)
    scopes = [BudgetScope("ws:rt", 1000), BudgetScope("key:rt", None)]
    limits = [RateLimit("tpm:k", 500, 60, cost=300), RateLimit("tpm:ws", 900, 60, cost=300)]
    try:
        await store.rate_acquire_many(limits)
        await store.reserve(scopes, 100, "rt1")
        # A fresh server has not seen FINISH yet (EVALSHA, NOSCRIPT, a load): count from a warm cache.
        await client.script_load(lua.FINISH)
        client.sent.clear()

        assert await store.settle("rt1", 60, scopes=scopes) is True
        assert client.sent == ["EVALSHA"]  # no GET of the reservation first
        results = await store.rate_adjust_many([(rl, -200) for rl in limits])
        assert client.sent == ["EVALSHA", "EVALSHA"]
        assert [r.remaining for r in results] == [400, 800]

        # Without scopes (or with wrong ones) the record is read: still correct.
        await store.reserve(scopes, 100, "rt2")
        client.sent.clear()
        assert await store.release("rt2", scopes=[BudgetScope("ws:rt", 1)]) is True
        assert client.sent == ["EVALSHA", "GET", "EVALSHA"]
        assert await store.usage("ws:rt") == (60, 0)
    finally:
        await store.close()


# ---------------------------------------------------------------- server clock


async def test_server_clock_budget_reservation_expires(redis_factory: RedisFactory) -> None:
    store = redis_factory(clock=None)
    scope = BudgetScope("ws:real", 10)
    assert (await store.reserve([scope], 10, "short", ttl_s=0.05)).ok

    # Wait on the server's clock, not ours: poll until the hold is gone.
    await eventually(lambda: _usage_is(store, "ws:real", (0, 0)))

    assert (await store.reserve([scope], 10, "next")).ok


async def _usage_is(store: RedisState, key: str, expected: tuple[int, int]) -> bool:
    return tuple(await store.usage(key)) == expected


async def test_server_clock_rate_burst_and_breaker(redis_factory: RedisFactory) -> None:
    store = redis_factory(clock=None)

    results = await asyncio.gather(*(store.rate_acquire("rpm:real", 6, 3600) for _ in range(20)))
    assert sum(r.allowed for r in results) == 6
    assert (await store.rate_adjust("rpm:real", 6, 3600, -6)).remaining == 6

    for _ in range(BREAKER.failures):
        await store.breaker_record("real-dep", False)
    assert await store.breaker_allow("real-dep") is False
    assert await store.breaker_states(["real-dep"]) == {"real-dep": "open"}


# ---------------------------------------------------------------- outages


async def test_unreachable_redis_raises_state_unavailable() -> None:
    store = RedisState.from_url("redis://127.0.0.1:1/0", subscribe_wait_s=0.3)
    calls = [
        store.reserve([BudgetScope("a", 1)], 1, "r"),
        store.settle("r", 1),
        store.release("r"),
        store.usage("a"),
        store.rate_acquire("k", 1, 60),
        store.rate_adjust("k", 1, 60, -1),
        store.breaker_allow("d"),
        store.breaker_record("d", False),
        store.breaker_states(["d"]),
        store.publish("t", "k"),
        store.subscribe(lambda topic, key: None),
    ]
    try:
        for call in calls:
            with pytest.raises(StateUnavailable) as info:
                await call
            assert isinstance(info.value, ServiceUnavailable)
            assert info.value.code == "state_unavailable" and info.value.status == 503
            assert "127.0.0.1" not in info.value.message
        assert await store.ping() is False
    finally:
        await store.close()


async def test_recovers_by_itself_when_redis_returns(throwaway_redis: ThrowawayRedis) -> None:
    store = RedisState.from_url(throwaway_redis.url, breaker=BREAKER)
    peer = RedisState.from_url(throwaway_redis.url)
    got: list[tuple[str, str]] = []
    await store.subscribe(lambda topic, key: got.append((topic, key)))
    scope = BudgetScope("ws:outage", 100)
    try:
        assert (await store.reserve([scope], 10, "before")).ok

        throwaway_redis.stop()
        with pytest.raises(StateUnavailable):
            await store.reserve([scope], 10, "during")
        assert await store.ping() is False

        throwaway_redis.start()  # empty: --save '' and no AOF
        # The very first call after the restart works: stale pooled
        # connections are replaced and the scripts reloaded on their own.
        assert (await store.reserve([scope], 10, "after")).ok
        assert await store.usage("ws:outage") == (0, 10)
        assert await store.ping() is True

        # The listener reconnected and told subscribers to drop their caches.
        await eventually(lambda: _has(got, (FLUSH_ALL, FLUSH_ALL)))
        await peer.publish("api_key", "revoked")
        await eventually(lambda: _has(got, ("api_key", "revoked")))
    finally:
        await store.close()
        await peer.close()


async def _has(items: list[tuple[str, str]], item: tuple[str, str]) -> bool:
    return item in items


async def test_create_state_picks_the_backend(redis_url: str) -> None:
    memory = create_state(None)
    redis_store = create_state(redis_url, prefix="wt:factory:")
    try:
        assert type(memory).__name__ == "MemoryState"
        assert isinstance(redis_store, RedisState)
        assert await redis_store.ping() is True
    finally:
        await memory.close()
        await redis_store.close()

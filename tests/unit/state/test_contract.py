"""One contract, two backends: every test here runs on memory and on Redis."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.state import BREAKER, FakeClock, eventually

from warden.state import BudgetScope, RateLimit, StateStore
from warden.state.base import FLUSH_ALL

# ---------------------------------------------------------------- budgets


async def test_reserve_is_all_or_nothing_across_scopes(store: StateStore) -> None:
    ws, key = BudgetScope("ws:w1", 100), BudgetScope("key:k1", 50)

    first = await store.reserve([ws, key], 40, "r1")
    assert first.ok and first.denied_scope is None
    assert first.remaining_pico == {"ws:w1": 60, "key:k1": 10}

    second = await store.reserve([ws, key], 20, "r2")
    assert not second.ok
    assert second.denied_scope == "key:k1"
    assert second.remaining_pico == {"ws:w1": 60, "key:k1": 10}
    # The workspace had room, but nothing was held there either.
    assert await store.usage("ws:w1") == (0, 40)
    assert await store.usage("key:k1") == (0, 40)


async def test_64_concurrent_reserves_admit_exactly_k(store: StateStore) -> None:
    k, amount = 7, 3
    scope = BudgetScope("ws:race", k * amount)

    results = await asyncio.gather(*(store.reserve([scope], amount, f"r{i}") for i in range(64)))

    assert sum(r.ok for r in results) == k
    assert {r.denied_scope for r in results if not r.ok} == {"ws:race"}
    assert await store.usage("ws:race") == (0, k * amount)


async def test_settle_lower_charges_actual_and_frees_the_rest(store: StateStore) -> None:
    scope = BudgetScope("ws:lo", 100)
    await store.reserve([scope], 30, "r1")

    assert await store.settle("r1", 12) is True

    assert await store.usage("ws:lo") == (12, 0)
    assert (await store.reserve([scope], 88, "r2")).ok
    assert not (await store.reserve([scope], 1, "r3")).ok


async def test_settle_higher_records_overspend(store: StateStore) -> None:
    scope = BudgetScope("ws:hi", 50)
    await store.reserve([scope], 30, "r1")

    assert await store.settle("r1", 45) is True

    assert await store.usage("ws:hi") == (45, 0)
    denied = await store.reserve([scope], 10, "r2")
    assert not denied.ok and denied.remaining_pico == {"ws:hi": 5}
    assert (await store.reserve([scope], 5, "r3")).ok


async def test_overspent_scope_reports_zero_remaining(store: StateStore) -> None:
    scope = BudgetScope("ws:over", 10)
    await store.reserve([scope], 10, "r1")
    await store.settle("r1", 25)

    denied = await store.reserve([scope], 0, "r2")

    assert denied.ok is False
    assert denied.remaining_pico == {"ws:over": 0}


async def test_release_charges_nothing_and_ends_the_reservation(store: StateStore) -> None:
    scope = BudgetScope("ws:rel", 10)
    await store.reserve([scope], 10, "r1")

    assert await store.release("r1") is True

    assert await store.usage("ws:rel") == (0, 0)
    assert await store.settle("r1", 5) is False
    assert await store.release("r1") is False
    assert await store.usage("ws:rel") == (0, 0)


async def test_settle_is_idempotent(store: StateStore) -> None:
    scopes = [BudgetScope("ws:idem", 100), BudgetScope("agent:a1", None)]
    await store.reserve(scopes, 20, "r1")

    assert await store.settle("r1", 15) is True
    assert await store.settle("r1", 15) is False

    assert await store.usage("ws:idem") == (15, 0)
    assert await store.usage("agent:a1") == (15, 0)


async def test_concurrent_settles_charge_once(store: StateStore) -> None:
    scope = BudgetScope("ws:dup", 100)
    await store.reserve([scope], 20, "r1")

    applied = await asyncio.gather(*(store.settle("r1", 9) for _ in range(8)))

    assert applied.count(True) == 1
    assert await store.usage("ws:dup") == (9, 0)


async def test_unknown_reservation_is_not_settled(store: StateStore) -> None:
    assert await store.settle("never-made", 10) is False
    assert await store.release("never-made") is False


async def test_abandoned_reservation_expires(store: StateStore, clock: FakeClock) -> None:
    scope = BudgetScope("ws:exp", 10)
    await store.reserve([scope], 10, "crashed", ttl_s=60)
    assert not (await store.reserve([scope], 1, "blocked")).ok

    clock.advance(61)

    assert await store.usage("ws:exp") == (0, 0)
    assert (await store.reserve([scope], 10, "next")).ok


async def test_late_settle_after_expiry_still_charges_once(
    store: StateStore, clock: FakeClock
) -> None:
    scope = BudgetScope("ws:late", 100)
    await store.reserve([scope], 40, "slow", ttl_s=60)
    clock.advance(61)
    await store.reserve([scope], 10, "other")  # purges the expired hold

    assert await store.settle("slow", 30) is True
    assert await store.settle("slow", 30) is False

    assert await store.usage("ws:late") == (30, 10)


async def test_unlimited_scope_counts_but_never_refuses(store: StateStore) -> None:
    scope = BudgetScope("agent:free", None)

    result = await store.reserve([scope], 10**15, "r1")

    assert result.ok and result.remaining_pico == {"agent:free": None}
    assert await store.usage("agent:free") == (0, 10**15)


async def test_money_beyond_double_precision_stays_exact(store: StateStore) -> None:
    # 10,000 USD in pico-USD is 1e16 > 2**53: doubles would round here.
    limit = 10**16 + 7
    scope = BudgetScope("ws:big", limit)

    assert (await store.reserve([scope], 10**16, "a")).ok
    seven = await store.reserve([scope], 7, "b")
    assert seven.ok and seven.remaining_pico == {"ws:big": 0}
    assert not (await store.reserve([scope], 1, "c")).ok

    await store.settle("a", 10**16 + 3)
    assert await store.usage("ws:big") == (10**16 + 3, 7)


async def test_zero_amount_reserve_is_allowed_until_limit(store: StateStore) -> None:
    scope = BudgetScope("ws:zero", 0)

    result = await store.reserve([scope], 0, "z")

    assert result.ok and result.remaining_pico == {"ws:zero": 0}
    assert await store.settle("z", 0) is True
    assert await store.usage("ws:zero") == (0, 0)


async def test_reservation_id_cannot_be_reused(store: StateStore) -> None:
    scope = BudgetScope("ws:reuse", 100)
    await store.reserve([scope], 1, "same")
    with pytest.raises(ValueError, match="already used"):
        await store.reserve([scope], 1, "same")
    await store.settle("same", 1)
    with pytest.raises(ValueError, match="already used"):
        await store.reserve([scope], 1, "same")


async def test_reserve_rejects_malformed_arguments(store: StateStore) -> None:
    with pytest.raises(ValueError):
        await store.reserve([], 1, "r")
    with pytest.raises(ValueError):
        await store.reserve([BudgetScope("a", 1), BudgetScope("a", 2)], 1, "r")
    with pytest.raises(ValueError):
        await store.reserve([BudgetScope("a", 1)], -1, "r")
    await store.reserve([BudgetScope("a", 10)], 1, "ok")
    with pytest.raises(ValueError):
        await store.settle("ok", -5)


async def test_usage_of_unknown_scope_is_zero(store: StateStore) -> None:
    assert await store.usage("nobody") == (0, 0)


async def test_scope_ttl_is_accepted_and_counts(store: StateStore) -> None:
    scope = BudgetScope("ws:w1:month:2026-11", 100, ttl_s=3600)
    await store.reserve([scope], 10, "r1")
    await store.settle("r1", 8)
    assert await store.usage("ws:w1:month:2026-11") == (8, 0)


# ---------------------------------------------------------------- rate limits


async def test_burst_admits_exactly_n_then_refuses(store: StateStore) -> None:
    results = await asyncio.gather(*(store.rate_acquire("rpm:k1", 10, 60) for _ in range(64)))

    allowed = [r for r in results if r.allowed]
    denied = [r for r in results if not r.allowed]
    assert len(allowed) == 10
    assert sorted(r.remaining for r in allowed) == list(range(10))
    assert all(r.remaining == 0 for r in denied)
    # One slot frees every 60/10 = 6 s (the fake clock did not move).
    assert all(r.retry_after_s == pytest.approx(6.0) for r in denied)
    assert all(r.reset_after_s == pytest.approx(60.0) for r in denied)


async def test_rate_refills_one_slot_per_interval(store: StateStore, clock: FakeClock) -> None:
    for _ in range(5):
        assert (await store.rate_acquire("rpm:r", 5, 60)).allowed
    assert not (await store.rate_acquire("rpm:r", 5, 60)).allowed

    clock.advance(12)  # 60/5 = 12 s per slot

    refilled = await store.rate_acquire("rpm:r", 5, 60)
    assert refilled.allowed and refilled.remaining == 0
    again = await store.rate_acquire("rpm:r", 5, 60)
    assert not again.allowed and again.retry_after_s == pytest.approx(12.0)

    clock.advance(60)
    fresh = await store.rate_acquire("rpm:r", 5, 60)
    assert fresh.allowed and fresh.remaining == 4
    assert fresh.reset_after_s == pytest.approx(12.0)


async def test_multi_acquire_is_all_or_nothing(store: StateStore) -> None:
    rpm, tpm = RateLimit("rpm:k", 5, 60), RateLimit("tpm:k", 100, 60, cost=80)
    assert (await store.rate_acquire_many([rpm, tpm])).allowed

    batch = await store.rate_acquire_many([rpm, RateLimit("tpm:k", 100, 60, cost=30)])

    assert batch.allowed is False
    rpm_result, tpm_result = batch.results
    assert rpm_result.allowed is True and rpm_result.remaining == 4  # had room, took nothing
    assert tpm_result.allowed is False and tpm_result.remaining == 20
    assert tpm_result.retry_after_s == pytest.approx(10 * 60 / 100)
    # The refused tpm did not consume a request slot.
    assert (await store.rate_acquire("rpm:k", 5, 60)).remaining == 3


async def test_token_adjust_refunds_and_charges(store: StateStore) -> None:
    estimate = await store.rate_acquire("tpm:adj", 100, 60, cost=90)
    assert estimate.allowed and estimate.remaining == 10

    refunded = await store.rate_adjust("tpm:adj", 100, 60, -60)
    assert refunded.allowed and refunded.remaining == 70
    assert (await store.rate_acquire("tpm:adj", 100, 60, cost=50)).allowed

    charged = await store.rate_adjust("tpm:adj", 100, 60, 40)
    assert charged.remaining == 0
    assert not (await store.rate_acquire("tpm:adj", 100, 60, cost=1)).allowed


async def test_adjust_many_moves_every_counter_by_its_own_delta(store: StateStore) -> None:
    key, ws = RateLimit("tpm:key", 100, 60, cost=80), RateLimit("tpm:ws", 1000, 60, cost=80)
    assert (await store.rate_acquire_many([key, ws])).allowed

    # The real count was 30, not the 80 estimated: both give 50 back in one call.
    results = await store.rate_adjust_many([(key, -50), (ws, -50)])

    assert [r.remaining for r in results] == [70, 970]
    assert [r.limit for r in results] == [100, 1000]
    assert (await store.rate_adjust("tpm:key", 100, 60, 0)).remaining == 70
    assert (await store.rate_adjust("tpm:ws", 1000, 60, 0)).remaining == 970
    with pytest.raises(ValueError):
        await store.rate_adjust_many([(key, 1), (key, 2)])
    with pytest.raises(ValueError):
        await store.rate_adjust_many([])


async def test_settle_and_release_with_the_reserved_scopes(store: StateStore) -> None:
    scopes = [BudgetScope("ws:hint", 100, ttl_s=60), BudgetScope("key:hint", None)]
    assert (await store.reserve(scopes, 40, "h1")).ok
    assert (await store.reserve(scopes, 30, "h2")).ok

    assert await store.settle("h1", 25, scopes=scopes) is True
    assert await store.settle("h1", 25, scopes=scopes) is False  # once only
    assert await store.release("h2", scopes=scopes) is True
    assert await store.usage("ws:hint") == (25, 0)
    assert await store.usage("key:hint") == (25, 0)


async def test_scopes_other_than_the_reserved_ones_are_not_charged(store: StateStore) -> None:
    reserved = [BudgetScope("ws:real", 100)]
    assert (await store.reserve(reserved, 40, "w1")).ok

    # A caller naming the wrong scopes still settles the reservation's own.
    assert await store.settle("w1", 10, scopes=[BudgetScope("ws:other", 100)]) is True

    assert await store.usage("ws:real") == (10, 0)
    assert await store.usage("ws:other") == (0, 0)
    assert await store.release("w1", scopes=reserved) is False


async def test_refund_never_goes_below_empty(store: StateStore) -> None:
    await store.rate_acquire("tpm:floor", 100, 60, cost=10)

    refunded = await store.rate_adjust("tpm:floor", 100, 60, -500)

    assert refunded.remaining == 100 and refunded.reset_after_s == 0
    burst = await store.rate_acquire("tpm:floor", 100, 60, cost=100)
    assert burst.allowed and burst.remaining == 0


async def test_cost_above_limit_never_fits(store: StateStore) -> None:
    result = await store.rate_acquire("tpm:huge", 100, 60, cost=101)

    assert not result.allowed
    assert result.retry_after_s is None
    assert result.remaining == 100


async def test_rate_rejects_malformed_limits(store: StateStore) -> None:
    with pytest.raises(ValueError):
        await store.rate_acquire("k", 0, 60)
    with pytest.raises(ValueError):
        await store.rate_acquire("k", 1, 0)
    with pytest.raises(ValueError):
        await store.rate_acquire("k", 1, 60, cost=-1)
    with pytest.raises(ValueError):
        await store.rate_acquire_many([])
    with pytest.raises(ValueError):
        await store.rate_acquire_many([RateLimit("k", 1, 60), RateLimit("k", 2, 60)])


# ---------------------------------------------------------------- breakers


async def _trip(store: StateStore, dep: str) -> None:
    for _ in range(BREAKER.failures):
        await store.breaker_record(dep, False)


async def test_breaker_opens_after_n_failures_in_window(store: StateStore) -> None:
    assert await store.breaker_record("d1", False) == "closed"
    assert await store.breaker_record("d1", False) == "closed"
    assert await store.breaker_allow("d1") is True

    assert await store.breaker_record("d1", False) == "open"

    assert await store.breaker_allow("d1") is False
    assert await store.breaker_states(["d1", "other"]) == {"d1": "open", "other": "closed"}


async def test_failures_outside_the_window_do_not_count(
    store: StateStore, clock: FakeClock
) -> None:
    await store.breaker_record("d2", False)
    await store.breaker_record("d2", False)
    clock.advance(BREAKER.window_s + 1)

    assert await store.breaker_record("d2", False) == "closed"
    assert await store.breaker_allow("d2") is True


async def test_success_while_closed_changes_nothing(store: StateStore) -> None:
    assert await store.breaker_record("d3", True) == "closed"
    await store.breaker_record("d3", False)
    await store.breaker_record("d3", False)
    assert await store.breaker_record("d3", True) == "closed"
    # Successes do not forgive failures inside the window.
    assert await store.breaker_record("d3", False) == "open"


async def test_half_open_lets_exactly_one_probe_then_closes(
    store: StateStore, clock: FakeClock
) -> None:
    await _trip(store, "d4")
    clock.advance(BREAKER.cooldown_s)
    assert await store.breaker_states(["d4"]) == {"d4": "half_open"}

    verdicts = await asyncio.gather(*(store.breaker_allow("d4") for _ in range(16)))

    assert verdicts.count(True) == 1
    assert await store.breaker_states(["d4"]) == {"d4": "half_open"}
    assert await store.breaker_record("d4", True) == "closed"
    assert await store.breaker_allow("d4") is True
    assert await store.breaker_states(["d4"]) == {"d4": "closed"}


async def test_failed_probe_reopens_for_another_cooldown(
    store: StateStore, clock: FakeClock
) -> None:
    await _trip(store, "d5")
    clock.advance(BREAKER.cooldown_s)
    assert await store.breaker_allow("d5") is True

    assert await store.breaker_record("d5", False) == "open"

    assert await store.breaker_allow("d5") is False
    clock.advance(BREAKER.cooldown_s - 1)
    assert await store.breaker_allow("d5") is False
    clock.advance(1)
    assert await store.breaker_allow("d5") is True


async def test_lost_probe_is_given_up_after_a_cooldown(store: StateStore, clock: FakeClock) -> None:
    await _trip(store, "d6")
    clock.advance(BREAKER.cooldown_s)
    assert await store.breaker_allow("d6") is True  # this probe never reports
    assert await store.breaker_allow("d6") is False

    clock.advance(BREAKER.cooldown_s)

    assert await store.breaker_allow("d6") is True


async def test_straggler_result_does_not_close_an_open_breaker(store: StateStore) -> None:
    await _trip(store, "d7")

    assert await store.breaker_record("d7", True) == "open"
    assert await store.breaker_record("d7", False) == "open"
    assert await store.breaker_allow("d7") is False


async def test_trip_opens_at_once_with_its_own_cooldown(store: StateStore, clock: FakeClock) -> None:
    assert await store.breaker_allow("ep1") is True
    await store.breaker_trip("ep1", 1.0)  # shorter than the store's cooldown

    assert await store.breaker_allow("ep1") is False
    assert await store.breaker_states(["ep1"]) == {"ep1": "open"}
    clock.advance(1.0)
    assert await store.breaker_states(["ep1"]) == {"ep1": "half_open"}
    assert await store.breaker_allow("ep1") is True  # the one probe
    assert await store.breaker_allow("ep1") is False
    # A failed probe reopens for the trip's cooldown, not the store's.
    assert await store.breaker_record("ep1", False) == "open"
    clock.advance(1.0)
    assert await store.breaker_allow("ep1") is True
    assert await store.breaker_record("ep1", True) == "closed"
    assert await store.breaker_states(["ep1"]) == {"ep1": "closed"}
    # Closed again: the next failures count towards the store's threshold as before.
    assert await store.breaker_record("ep1", False) == "closed"


async def test_trip_overrides_a_half_open_probe_and_refuses_a_bad_cooldown(
    store: StateStore, clock: FakeClock
) -> None:
    await _trip(store, "d8")
    clock.advance(BREAKER.cooldown_s)
    assert await store.breaker_allow("d8") is True
    await store.breaker_trip("d8", 2.0)
    assert await store.breaker_allow("d8") is False
    clock.advance(2.0)
    assert await store.breaker_allow("d8") is True
    with pytest.raises(ValueError):
        await store.breaker_trip("d8", 0)


# ---------------------------------------------------------------- invalidation


async def test_published_invalidation_reaches_subscribers(store: StateStore) -> None:
    got_sync: list[tuple[str, str]] = []
    got_async: list[tuple[str, str]] = []
    done = asyncio.Event()

    def sync_cb(topic: str, key: str) -> None:
        got_sync.append((topic, key))

    async def async_cb(topic: str, key: str) -> None:
        got_async.append((topic, key))
        if key == "last":
            done.set()

    def broken_cb(topic: str, key: str) -> None:
        raise RuntimeError("a buggy subscriber")

    await store.subscribe(broken_cb)
    unsubscribe = await store.subscribe(sync_cb)
    await store.subscribe(async_cb)

    await store.publish("api_key", "hash-1")
    await eventually(lambda: _has(got_sync, ("api_key", "hash-1")))
    unsubscribe()
    unsubscribe()  # twice is harmless
    await store.publish("credential", "last")
    await asyncio.wait_for(done.wait(), 5)

    assert got_async == [("api_key", "hash-1"), ("credential", "last")]
    # Messages arrive in order, so "last" reaching async_cb proves sync_cb had
    # its chance and was no longer subscribed.
    assert got_sync == [("api_key", "hash-1")]
    assert FLUSH_ALL not in {t for t, _ in got_async}


async def _has(items: list[tuple[str, str]], item: tuple[str, str]) -> bool:
    return item in items


async def test_ping_answers_true_when_healthy(store: StateStore) -> None:
    assert await store.ping() is True

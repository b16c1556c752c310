"""The combined admission (rate units and a budget hold in one step), on memory and on Redis."""

from __future__ import annotations

import asyncio

import pytest

from warden.state import BudgetScope, RateLimit, StateStore


async def test_admit_takes_the_rate_units_and_the_hold_together(store: StateStore) -> None:
    rpm, tpm = RateLimit("rpm:a", 5, 60), RateLimit("tpm:a", 1000, 60, cost=300)
    scopes = [BudgetScope("ws:a", 100, ttl_s=60), BudgetScope("key:a", None)]

    got = await store.admit([rpm, tpm], scopes, 40, "a1")

    assert got.ok and got.rate.allowed
    assert [r.remaining for r in got.rate.results] == [4, 700]
    assert got.reserve is not None and got.reserve.remaining_pico == {"ws:a": 60, "key:a": None}
    assert await store.usage("ws:a") == (0, 40) and await store.usage("key:a") == (0, 40)
    assert await store.settle("a1", 25, scopes=scopes) is True
    assert await store.usage("ws:a") == (25, 0)
    assert (await store.rate_acquire("rpm:a", 5, 60)).remaining == 3


async def test_a_budget_refusal_takes_no_rate_units(store: StateStore) -> None:
    rpm, tpm = RateLimit("rpm:b", 5, 60), RateLimit("tpm:b", 1000, 60, cost=300)
    scopes = [BudgetScope("ws:b", 100), BudgetScope("key:b", 30)]

    got = await store.admit([rpm, tpm], scopes, 40, "b1")

    assert not got.ok and got.rate.allowed  # the limits had room
    assert got.reserve is not None and got.reserve.denied_scope == "key:b"
    assert got.reserve.remaining_pico == {"ws:b": 100, "key:b": 30}
    assert [r.remaining for r in got.rate.results] == [5, 1000]
    assert (await store.rate_acquire("rpm:b", 5, 60)).remaining == 4  # nothing was taken
    assert (await store.rate_adjust("tpm:b", 1000, 60, 0)).remaining == 1000
    assert await store.usage("ws:b") == (0, 0)
    assert await store.settle("b1", 1) is False  # no reservation was made


async def test_a_rate_refusal_leaves_the_budgets_alone(store: StateStore) -> None:
    rpm = RateLimit("rpm:c", 1, 60)
    scope = BudgetScope("ws:c", 100)
    assert (await store.admit([rpm], [scope], 10, "c1")).ok

    got = await store.admit([rpm], [scope], 10, "c2")

    assert not got.ok and not got.rate.allowed and got.reserve is None
    assert got.rate.results[0].retry_after_s == pytest.approx(60.0)
    assert await store.usage("ws:c") == (0, 10)
    assert await store.release("c2") is False


async def test_admit_refuses_a_reused_id_taking_nothing(store: StateStore) -> None:
    rpm, scope = RateLimit("rpm:d", 5, 60), BudgetScope("ws:d", 100)
    assert (await store.reserve([scope], 10, "d1")).ok

    with pytest.raises(ValueError, match="already used"):
        await store.admit([rpm], [scope], 10, "d1")

    assert (await store.rate_acquire("rpm:d", 5, 60)).remaining == 4
    assert await store.usage("ws:d") == (0, 10)
    with pytest.raises(ValueError):
        await store.admit([], [scope], 1, "d2")
    with pytest.raises(ValueError):
        await store.admit([rpm], [], 1, "d3")


async def test_concurrent_admits_take_exactly_what_fits(store: StateStore) -> None:
    """7 fit the budget, 10 the rate limit: 7 are admitted and only they took a unit, so the
    limit keeps room for 3 and every other request was refused by the budget."""
    rpm, scope = RateLimit("rpm:e", 10, 60), BudgetScope("ws:e", 21)

    results = await asyncio.gather(*(store.admit([rpm], [scope], 3, f"e{i}") for i in range(32)))

    assert sum(r.ok for r in results) == 7
    assert all(r.rate.allowed for r in results)
    assert await store.usage("ws:e") == (0, 21)
    assert (await store.rate_adjust("rpm:e", 10, 60, 0)).remaining == 3


async def test_settle_and_adjust_ends_a_call_in_one_step(store: StateStore) -> None:
    tpm, scopes = RateLimit("tpm:f", 1000, 60, cost=300), [BudgetScope("ws:f", 100)]
    assert (await store.admit([tpm], scopes, 40, "f1")).ok

    done = await store.settle_and_adjust("f1", 25, [(tpm, -200)], scopes=scopes)

    assert done.settled and [r.remaining for r in done.rates] == [900]
    assert await store.usage("ws:f") == (25, 0)
    again = await store.settle_and_adjust("f1", 25, [(tpm, 50)], scopes=scopes)
    assert not again.settled and [r.remaining for r in again.rates] == [850]  # adjusted, not charged
    assert await store.usage("ws:f") == (25, 0)


async def test_settle_and_adjust_without_the_right_scopes_still_settles_once(store: StateStore) -> None:
    tpm, scopes = RateLimit("tpm:g", 1000, 60, cost=100), [BudgetScope("ws:g", 100)]
    assert (await store.admit([tpm], scopes, 40, "g1")).ok
    assert (await store.admit([tpm], scopes, 40, "g2")).ok

    wrong = await store.settle_and_adjust("g1", 10, [(tpm, -50)], scopes=[BudgetScope("ws:x", 9)])
    unnamed = await store.settle_and_adjust("g2", 0, [(tpm, -100)])  # 0: as a release

    assert wrong.settled and unnamed.settled
    assert [r.remaining for r in unnamed.rates] == [950]  # each adjusted exactly once
    assert await store.usage("ws:g") == (10, 0) and await store.usage("ws:x") == (0, 0)
    with pytest.raises(ValueError):
        await store.settle_and_adjust("g1", -1, [(tpm, 1)], scopes=scopes)
    with pytest.raises(ValueError):
        await store.settle_and_adjust("g1", 1, [], scopes=scopes)

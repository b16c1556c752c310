"""SingleFlight: concurrent callers for one key share one call; its outcome,
value or exception, reaches every waiter; cancellations stay with their caller."""

from __future__ import annotations

import asyncio

import pytest

from warden.singleflight import SingleFlight


async def test_concurrent_callers_share_one_call_per_key() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls: list[str] = []
    gate = asyncio.Event()

    async def load(key: str) -> int:
        calls.append(key)
        number = len(calls)
        await gate.wait()
        return number

    tasks = [asyncio.create_task(flight.run(k, lambda k=k: load(k))) for k in ("a", "a", "a", "b")]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == ["a", "b"]
    assert results == [1, 1, 1, 2]
    # Finished calls are forgotten: the next caller loads again.
    assert await flight.run("a", lambda: load("a")) == 3


async def test_an_error_reaches_every_waiter_and_is_not_kept() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()
    attempts = 0

    async def failing() -> int:
        nonlocal attempts
        attempts += 1
        await gate.wait()
        raise LookupError("down")

    tasks = [asyncio.create_task(flight.run("k", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert attempts == 1
    assert [type(o) for o in outcomes] == [LookupError] * 3

    async def ok() -> int:
        return 7

    assert await flight.run("k", ok) == 7


async def test_a_cancelled_waiter_does_not_cancel_the_shared_call() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    gate = asyncio.Event()

    async def load() -> str:
        await gate.wait()
        return "value"

    owner = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    assert await owner == "value"


async def test_when_the_owner_is_cancelled_a_waiter_loads_itself() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    loads = 0
    gate = asyncio.Event()

    async def load() -> str:
        nonlocal loads
        loads += 1
        await gate.wait()
        return f"load {loads}"

    owner = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner
    gate.set()
    assert await waiter == "load 2"
    assert loads == 2

"""The in-process run channel: ordered, replayable from any seq, closes cleanly."""

from __future__ import annotations

import asyncio

from warden.agents.events import RunChannel


async def test_follow_replays_then_goes_live_and_ends_on_close() -> None:
    ch = RunChannel()
    ch.publish({"seq": 1, "type": "a"})
    ch.publish({"seq": 2, "type": "b"})
    seen: list[int] = []

    async def reader() -> None:
        async for ev in ch.follow(after=1):
            seen.append(ev["seq"])

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    ch.publish({"seq": 3, "type": "c"})
    await asyncio.sleep(0)
    ch.publish({"seq": 4, "type": "d"})
    ch.close()
    await asyncio.wait_for(task, 2)
    assert seen == [2, 3, 4]


async def test_two_followers_see_the_same_events() -> None:
    ch = RunChannel()
    results: list[list[int]] = [[], []]

    async def reader(i: int) -> None:
        async for ev in ch.follow():
            results[i].append(ev["seq"])

    tasks = [asyncio.create_task(reader(i)) for i in range(2)]
    await asyncio.sleep(0)
    for seq in range(1, 6):
        ch.publish({"seq": seq, "type": "x"})
        if seq % 2:
            await asyncio.sleep(0)
    ch.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert results == [[1, 2, 3, 4, 5]] * 2

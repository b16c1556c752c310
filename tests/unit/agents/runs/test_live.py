"""The registry of runs executing in this process."""

from __future__ import annotations

import asyncio

from warden.agents.events import RunChannel
from warden.agents.runs import RunHandle, RuntimeConfig
from warden.agents.runs.live import LiveRuns
from warden.agents.runs.outcome import RunOutcome


async def _forever() -> RunOutcome:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_held_run_is_cancelled_only_when_asked_to_be() -> None:
    live = LiveRuns(RuntimeConfig())
    handle = live.add(RunHandle("run_1", "ses_1", RunChannel(), asyncio.create_task(_forever())))
    assert "run_1" in live and live.executing() == ["run_1"] and live.in_session("ses_1") == ["run_1"]
    assert live.channel("run_1") is handle.channel and live.channel("run_2") is None
    live.hold("run_1")
    assert not await live.cancel("run_1")
    assert await live.cancel("run_1", even_held=True) and handle.task.cancelled()
    assert live.executing() == []
    live.drop("run_1")
    assert "run_1" not in live and not await live.cancel("run_1")

"""One instance holds 1,000 calls at once without loss: every holder of a decided
approval wakes (by a local release and by the one safety-net query over all held
ids), the undecided ones stay held, and the registry is empty afterwards."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from warden.governance.holds import GATE_TOPIC, Holds
from warden.services import Services
from warden.store.base import new_id, utcnow
from warden.store.governance_models import Approval
from warden.store.models import Workspace


async def _approvals(services: Services, n: int) -> list[str]:
    async with services.db.session() as s:
        ws = (await s.execute(Workspace.__table__.select().limit(1))).first()
    assert ws is not None
    ids = [new_id("apr") for _ in range(n)]
    now = utcnow()
    async with services.db.transaction() as s:
        s.add_all([Approval(id=i, workspace_id=ws.id, agent_id="agt_x", tool="t", arguments="{}", status="pending",
                            requested_at=now, expires_at=now + timedelta(hours=1), applied=False, source="api",
                            call_hash="h") for i in ids])
    return ids


async def test_a_thousand_held_calls_released_without_loss(services: Services) -> None:
    ids = await _approvals(services, 500)
    holds = Holds(services.db, poll_s=3600)  # the poll runs only when asked, below
    waiters = [asyncio.create_task(holds.wait(ids[i % 500], 60)) for i in range(1000)]  # two per approval
    await asyncio.sleep(0.2)
    assert holds.held == 1000
    for i in ids[:200]:  # decided here
        holds.release(i)
    for i in ids[200:300]:  # decided on another instance: its message
        holds.on_message(GATE_TOPIC, i)
    async with services.db.transaction() as s:  # decided with the message lost: the poll finds them
        for i in ids[300:400]:
            (await s.get(Approval, i)).status = "approved"  # type: ignore[union-attr]
    assert await holds.poll_once() == 100
    done = await asyncio.gather(*waiters[:400], *waiters[500:900])
    assert all(done) and len(done) == 800
    assert holds.held == 200 and not any(w.done() for w in waiters[400:500] + waiters[900:])
    for w in waiters[400:500] + waiters[900:]:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert holds.held == 0
    await holds.close()


async def test_a_hold_times_out_and_reports_progress(services: Services) -> None:
    (approval_id,) = await _approvals(services, 1)
    holds = Holds(services.db, poll_s=3600, progress_s=0.05)
    seen: list[float] = []

    async def on_hold(held_s: float, aid: str) -> None:
        assert aid == approval_id
        seen.append(held_s)

    assert await holds.wait(approval_id, 0.3, on_hold) is False
    assert len(seen) >= 3 and seen == sorted(seen)
    await holds.close()

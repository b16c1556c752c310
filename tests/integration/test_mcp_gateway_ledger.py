"""What ``/mcp`` leaves in the ledger (issue 19): an allowed read is written once,
after it ran and before its answer (its row with the outcome, the decision and
outcome audit events next to each other, the chain intact); a held call is written
before it is held and gets its outcome in a second write."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.mcp_client import external_agent, mcp_session, pending_approval, stdio_fixture, text_of
from warden.config import load_settings
from warden.governance.gate import arguments_hash
from warden.store import audit
from warden.store.gate_models import GovernedCallRow
from warden.store.models import AuditEvent


@pytest.fixture
def live(data_dir) -> Iterator[LiveWarden]:
    server = LiveWarden(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                      mcp_stdio_allow=sys.executable)).start()
    yield server
    server.stop()


@pytest.fixture
def admin(live: LiveWarden) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as client:
        yield client


def _ledger(live: LiveWarden, agent_id: str) -> tuple[list[GovernedCallRow], list[AuditEvent], bool]:
    """The agent's rows, the audit events of those rows, and whether the chain verifies,
    read on Warden's own loop (its database)."""

    async def read() -> tuple[list[GovernedCallRow], list[AuditEvent], bool]:
        assert live.services is not None
        async with live.services.db.session() as s:
            rows = list((await s.execute(select(GovernedCallRow).where(GovernedCallRow.agent_id == agent_id)
                                         .order_by(GovernedCallRow.created_at))).scalars())
            events = list((await s.execute(select(AuditEvent).where(
                AuditEvent.target.in_([r.id for r in rows])).order_by(AuditEvent.seq))).scalars())
            return rows, events, (await audit.verify(s)).ok

    assert live.loop is not None
    return asyncio.run_coroutine_threadsafe(read(), live.loop).result(30)


async def _read(live: LiveWarden, agent_id: str) -> tuple[list[GovernedCallRow], list[AuditEvent], bool]:
    return await asyncio.to_thread(_ledger, live, agent_id)


def _actions(events: list[AuditEvent], target: str) -> list[str]:
    return [e.action for e in events if e.target == target]


async def test_an_answered_read_is_already_one_complete_record(live: LiveWarden, admin: httpx.Client) -> None:
    agent, key = external_agent(admin, "reader", servers=[stdio_fixture("fx")], tool_levels={"fx__fail": 1})
    args: dict[str, Any] = {"text": "on the ledger"}
    async with mcp_session(live.url, key) as mcp:
        result = await mcp.call_tool("fx__echo", args)
        assert text_of(result) == "on the ledger"
        rows, events, chain_ok = await _read(live, agent["id"])  # the answer is in: so is its record
        failed = await mcp.call_tool("fx__fail", {"reason": "x"})
        after_fail = await _read(live, agent["id"])
    assert chain_ok
    (row,) = rows
    assert (row.status, row.decision, row.level, row.source, row.tool) == ("completed", "allow", 1, "mcp", "fx__echo")
    assert row.arguments_hash == arguments_hash(args) and row.result_hash and row.is_error is False
    assert row.ended_at is not None and row.rule.startswith("matrix:intern:1")
    assert _actions(events, row.id) == ["governance.decision", "governance.outcome"]
    decision, outcome = events
    assert outcome.seq == decision.seq + 1  # one transaction wrote both
    assert decision.data["arguments_hash"] == row.arguments_hash and outcome.data["status"] == "completed"
    # A level-1 call the upstream fails is recorded the same way, as failed.
    assert failed.is_error
    rows2, events2, chain_ok2 = after_fail
    assert chain_ok2 and len(rows2) == 2
    bad = next(r for r in rows2 if r.tool == "fx__fail")
    assert bad.status == "failed" and bad.is_error is True
    assert _actions(events2, bad.id) == ["governance.decision", "governance.outcome"]


async def test_a_held_call_is_on_the_ledger_while_it_waits(live: LiveWarden, admin: httpx.Client) -> None:
    agent, key = external_agent(admin, "writer", servers=[stdio_fixture("fx")])
    async with mcp_session(live.url, key) as mcp:
        call = asyncio.create_task(mcp.call_tool("fx__add", {"a": 1, "b": 2}))  # level 3: an intern waits
        approval = await asyncio.to_thread(pending_approval, admin, agent["id"])
        rows, events, _ = await _read(live, agent["id"])
        assert not call.done()
        (held,) = rows
        assert (held.status, held.level, held.approval_id) == ("held", 3, approval["id"])
        assert _actions(events, held.id) == ["governance.decision"]
        decided = await asyncio.to_thread(admin.post, f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        result = await asyncio.wait_for(call, 30)
        rows, events, chain_ok = await _read(live, agent["id"])
    assert not result.is_error and chain_ok
    (done,) = rows
    assert done.status == "completed" and done.id == held.id
    assert _actions(events, done.id) == ["governance.decision", "governance.released", "governance.outcome"]


async def test_a_read_the_ledger_refuses_is_not_answered(live: LiveWarden, admin: httpx.Client) -> None:
    agent, key = external_agent(admin, "unrecorded", servers=[stdio_fixture("fx")])

    def ddl(sql: str) -> None:
        async def run() -> None:
            assert live.services is not None
            async with live.services.db.transaction() as s:
                await s.execute(text(sql))

        assert live.loop is not None
        asyncio.run_coroutine_threadsafe(run(), live.loop).result(30)

    async with mcp_session(live.url, key) as mcp:
        # The database itself refuses the row (a real refusal, not a stand-in).
        await asyncio.to_thread(ddl, "CREATE TRIGGER no_calls BEFORE INSERT ON governed_calls "
                                     "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        refused = await mcp.call_tool("fx__echo", {"text": "secret result"})
        rows, _, _ = await _read(live, agent["id"])
        await asyncio.to_thread(ddl, "DROP TRIGGER no_calls")
        again = await mcp.call_tool("fx__echo", {"text": "now recorded"})
    assert refused.is_error and "could not record" in text_of(refused) and "secret result" not in text_of(refused)
    assert rows == []
    assert not again.is_error and text_of(again) == "now recorded"

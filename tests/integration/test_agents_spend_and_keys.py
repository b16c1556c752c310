"""An agent run's spend rows and its calling key: request ids that fit the spend table,
a spend writer that one bad row cannot block, and a run resumed after an approval that
keeps its key's rate limits and stops if the key was revoked meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests.support.agents import types_of
from tests.support.governance import follow, make_agent, pending_approval, script_tool_turn, setup_echo
from sqlalchemy import select

from tests.support.app import client_for
from warden.services import Services
from warden.store.db import Database
from warden.store.models import SpendRow
from warden.store.spend import SpendWriter
from warden.testing.upstream import Behaviour, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def _spend_rows(services: Services) -> list[SpendRow]:
    async with services.db.session() as s:
        return list((await s.execute(select(SpendRow).order_by(SpendRow.id))).scalars())


def _row(workspace_id: str, request_id: str, **fields: object) -> dict:
    return {"request_id": request_id, "workspace_id": workspace_id, "provider": "openai", "model": "m",
            "input_tokens": 1, "output_tokens": 1, "status": "ok", **fields}


def test_step_request_ids_fit_the_spend_column() -> None:
    from warden.agents.runs import step_request_id

    width = SpendRow.__table__.c.request_id.type.length
    assert step_request_id("", "run_abc", 3) == "run_abc:3"
    assert step_request_id("r" * 20, "run_abc", 100) == "r" * 20 + ":100"
    long_a, long_b = step_request_id("a" * 64, "run", 100), step_request_id("a" * 63 + "b", "run", 100)
    assert len(long_a) == width and long_a.endswith(":100") and long_a.startswith("a" * 40)
    assert long_a != long_b  # the hash keeps two long ids apart


async def test_a_long_request_id_does_not_poison_the_spend_table(any_services: Services, up: UpstreamServer) -> None:
    services = any_services
    await setup_echo(services, up)
    up.enqueue(Behaviour(text="one"), Behaviour(text="two"))
    async with client_for(services) as c:
        chat = await c.post("/api/chat", json={"message": "hello"}, headers={"x-request-id": "r" * 64})
        gw = await c.post("/v1/chat/completions", json={"model": "auto",
                                                        "messages": [{"role": "user", "content": "hi"}]})
        await services.spend.flush()
        usage = (await c.get("/api/usage")).json()
    rows = await _spend_rows(services)
    assert chat.json()["status"] == "completed" and gw.status_code == 200
    assert len(rows) == 2 and services.spend._pending == [] and services.spend.dropped == 0
    assert rows[0].request_id.startswith("r" * 40) and rows[0].request_id.endswith(":1")
    assert len(rows[0].request_id) <= 64
    assert usage["total_requests"] == 2


async def test_spend_writer_fits_strings_and_sets_a_refused_row_aside(any_services: Services) -> None:
    services = any_services
    ws = (await services.accounts.workspace_by_name("default")).id
    writer = SpendWriter(services.db)
    writer.record(_row(ws, "x" * 100, model="m" * 300, provider="p" * 50))
    writer.record(_row(ws, "bad", status=None))  # NOT NULL: refused by any database
    writer.record(_row(ws, "good"))
    written = await writer.flush()
    again = await writer.flush()
    rows = await _spend_rows(services)
    assert (written, again, writer.dropped, writer._pending) == (2, 0, 1, [])
    assert [(r.request_id, len(r.model or ""), r.provider) for r in rows] == [
        ("x" * 64, 128, "p" * 40), ("good", 1, "openai")]


async def test_spend_writer_keeps_rows_while_the_database_is_down() -> None:
    db = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # nothing listens on port 1
    writer = SpendWriter(db)
    try:
        writer.record(_row("ws", "a"))
        writer.record(_row("ws", "b"))
        assert await writer.flush() == 0
        assert [r["request_id"] for r in writer._pending] == ["a", "b"] and writer.dropped == 0
    finally:
        await db.close()


async def _member_run_paused(services: Services, up: UpstreamServer, **key: object) -> tuple[dict, str, dict]:
    """A member's run of an agent whose echo tool needs an approval, paused."""
    async with client_for(services) as admin:
        member = (await admin.post("/api/keys", json={"name": "m", "role": "member", **key})).json()
        async with client_for(services, member["key"]) as m:
            agent = await make_agent(m)
        await admin.patch(f"/api/agents/{agent['id']}", json={"tool_levels": {"echo": 2}})
        script_tool_turn(up, text="all sent", arg="mail")
        async with client_for(services, member["key"]) as m:
            run = (await m.post("/api/chat", json={"agent_id": agent["id"], "message": "send it"})).json()
        assert run["status"] == "paused", run
        return member, run["run_id"], await pending_approval(admin, run["run_id"])


async def test_a_resumed_run_keeps_its_keys_rate_limit(services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    _, run_id, approval = await _member_run_paused(services, up, rpm_limit=1)
    async with client_for(services) as admin:
        await admin.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        events = await asyncio.wait_for(follow(admin, run_id, after=4), 30)
        run = (await admin.get(f"/api/runs/{run_id}")).json()
    assert echo.calls == [{"text": "mail"}]
    # The key allows one model call a minute: the first step had it, the resumed step is refused.
    assert types_of(events)[-1] == "run.failed" and run["status"] == "failed"
    assert run["error"]["code"] == "rate_limit_exceeded", run["error"]


async def test_a_run_whose_key_was_revoked_does_not_go_on(services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    member, run_id, approval = await _member_run_paused(services, up)
    async with client_for(services) as admin:
        revoked = await admin.delete(f"/api/keys/{member['id']}")
        decided = await admin.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        events = await asyncio.wait_for(follow(admin, run_id, after=4), 30)
        run = (await admin.get(f"/api/runs/{run_id}")).json()
    assert revoked.status_code == 200 and decided.status_code == 200, decided.text
    assert echo.calls == []  # the approved action was not taken
    assert types_of(events) == ["tool.result", "run.failed"]
    assert "revoked" in events[0]["content"]
    assert run["status"] == "failed" and run["error"]["code"] == "api_key_revoked", run["error"]
    assert "revoked" in run["error"]["message"]
    assert len(up.requests) == 1  # no model call after the pause

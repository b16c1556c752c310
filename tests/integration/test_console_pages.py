"""The console's pages over the real services: the approvals inbox decides through
``Approvals`` (the paused run completes, the decision is audited), the agents page
changes a tier through ``Maturity`` (audited with its reason), and the overview's
charts are fed from the spend ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from tests.support.agents import stream_chat, types_of
from tests.support.app import client_for
from tests.support.console import console_client
from tests.support.governance import follow, make_agent, setup_echo

from warden.services import Services
from warden.store.models import AuditEvent
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def _paused(services: Services, up: UpstreamServer, key: str | None = None) -> tuple[str, str]:
    """A run of agent "mailer" paused on echo(level 2): (run id, agent id)."""
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "mail", "password": "pw-0123456789"})]),
               Behaviour(text="all sent"))
    async with client_for(services) as admin:
        agents = (await admin.get("/api/agents")).json()
        agent = next((a for a in agents if a["name"] == "mailer"), None) or await make_agent(
            admin, "mailer", tool_levels={"echo": 2})
    async with client_for(services, key=key) if key else client_for(services) as c:
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "send it"})
    assert types_of(events)[-1] == "run.paused"
    return events[0]["run_id"], agent["id"]


async def _audit(services: Services, action: str) -> list[AuditEvent]:
    async with services.db.session() as s:
        return list((await s.execute(select(AuditEvent).where(AuditEvent.action == action))).scalars())


async def test_the_inbox_shows_a_held_action_masked_and_approving_completes_the_run(
        services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    run_id, _ = await _paused(services, up)
    async with console_client(services) as (c, csrf):
        inbox = await c.get("/ui/approvals")
        approval_id = inbox.text.split('data-approval="', 1)[1].split('"', 1)[0]
        decided = await c.post(f"/ui/approvals/{approval_id}", data={"decision": "approve", "note": "ok by me"},
                               headers={"hx-request": "true", "x-csrf-token": csrf})
        after = await c.get("/ui/approvals/list")
    assert inbox.status_code == 200
    assert "mailer" in inbox.text and "echo" in inbox.text and "level 2" in inbox.text and "student" in inbox.text
    assert "pw-0123456789" not in inbox.text and "&#34;***&#34;" in inbox.text
    assert decided.status_code == 200 and 'data-status="approved"' in decided.text and "ok by me" in decided.text
    assert "Nothing is waiting" in after.text
    async with client_for(services) as admin:
        await asyncio.wait_for(follow(admin, run_id), 30)
        run = (await admin.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "completed" and echo.calls == [{"text": "mail", "password": "pw-0123456789"}]
    [event] = await _audit(services, "approval.approved")
    assert event.target == approval_id and event.actor.startswith("key:")


async def test_a_member_sees_only_their_own_runs_actions_and_cannot_decide(services: Services,
                                                                          up: UpstreamServer) -> None:
    await setup_echo(services, up)
    ws = (await services.accounts.workspace_by_name("default")).id
    member = await services.accounts.create_key(ws, "member", "member")
    await _paused(services, up)  # the admin's run: not the member's to see
    async with console_client(services, member.key) as (c, csrf):
        inbox = await c.get("/ui/approvals")
        async with client_for(services) as admin:
            approval_id = (await admin.get("/api/approvals", params={"status": "pending"})).json()[0]["id"]
        refused = await c.post(f"/ui/approvals/{approval_id}", data={"decision": "approve", "csrf_token": csrf})
    assert "Nothing is waiting" in inbox.text and "Approve" not in inbox.text
    assert refused.status_code == 403 and "needs an admin key" in refused.text
    async with client_for(services) as admin:
        assert (await admin.get(f"/api/approvals/{approval_id}")).json()["status"] == "pending"


async def test_rejecting_from_a_plain_form_redirects_back_to_the_inbox(services: Services,
                                                                       up: UpstreamServer) -> None:
    await setup_echo(services, up)
    await _paused(services, up)
    async with console_client(services) as (c, csrf):
        approval_id = (await c.get("/ui/approvals")).text.split('data-approval="', 1)[1].split('"', 1)[0]
        reply = await c.post(f"/ui/approvals/{approval_id}", data={"decision": "reject", "note": "no",
                                                                   "csrf_token": csrf})
        bad = await c.post(f"/ui/approvals/{approval_id}", data={"decision": "maybe", "csrf_token": csrf})
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/approvals"
    assert bad.status_code == 422 and "decision" in bad.text
    [event] = await _audit(services, "approval.rejected")
    assert event.target == approval_id


async def test_an_admin_changes_a_tier_with_a_reason_and_it_is_audited(services: Services,
                                                                       up: UpstreamServer) -> None:
    await setup_echo(services, up)
    async with client_for(services) as admin:
        agent = await make_agent(admin, "planner")
    async with console_client(services) as (c, csrf):
        page = await c.get(f"/ui/agents/{agent['id']}")
        no_reason = await c.post(f"/ui/agents/{agent['id']}/tier", data={"tier": "supervised", "reason": "",
                                                                        "csrf_token": csrf})
        moved = await c.post(f"/ui/agents/{agent['id']}/tier", data={"tier": "supervised", "reason": "trusted now",
                                                                    "sticky": "true", "csrf_token": csrf})
        listing = await c.get("/ui/agents")
    assert "Toward <strong>intern</strong>" in page.text and "successful run" in page.text
    assert no_reason.status_code == 422
    assert moved.status_code == 303 and "supervised" in listing.text and "(pinned)" in listing.text
    [event] = await _audit(services, "agent.tier_change")
    assert event.target == agent["id"] and "trusted now" in str(event.data)


async def test_the_charts_count_requests_and_errors_per_hour_from_the_ledger(any_services: Services,
                                                                            up: UpstreamServer) -> None:
    services = any_services  # the hours are bucketed by each database's own SQL
    await setup_echo(services, up)
    up.enqueue(Behaviour(), Behaviour(status=400, error_type="invalid_request_error"))
    async with client_for(services) as admin:
        for _ in range(2):
            await admin.post("/v1/chat/completions", json={"model": "gpt-4o-mini",
                                                           "messages": [{"role": "user", "content": "hi"}]})
    async with console_client(services) as (c, _):
        requests = (await c.get("/ui/data/requests", params={"hours": 6})).json()
        spend = (await c.get("/ui/data/spend")).json()
        overview = await c.get("/ui/")
        too_long = await c.get("/ui/data/requests", params={"hours": 100_000})
    assert len(requests["x"]) == 6 and requests["x"] == sorted(requests["x"])
    assert [s["label"] for s in requests["series"]] == ["requests", "errors"]
    assert sum(requests["series"][0]["values"]) == 2 and sum(requests["series"][1]["values"]) == 1
    assert requests["series"][0]["values"][-1] == 2  # this hour is the last
    assert len(spend["x"]) == 24 and spend["series"][0]["values"][-1] > 0
    assert "openai/gpt-4o-mini" in overview.text and "Every breaker is closed" in overview.text
    assert too_long.status_code == 422

"""Approvals end to end: approve and reject over the API with followers on SSE,
idempotency, concurrent decisions, expiry, a paused run surviving a restart,
the CLI, and what GET /api/runs/{id} says about each action."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.agents import EchoTool, connect_provider, stream_chat, types_of
from tests.support.governance import follow, make_agent, pending_approval, script_tool_turn, setup_echo
from sqlalchemy import update
from typer.testing import CliRunner

from tests.support.app import ADMIN_KEY, PG_URL, client_for, requires_pg, reset_pg
from warden.cli import app as cli_app
from warden.config import load_settings
from warden.errors import ValidationFailed
from warden.services import Services
from warden.store.governance_models import Approval
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def _paused_run(c, up: UpstreamServer, **agent_fields) -> tuple[str, dict]:
    script_tool_turn(up, text="all sent", arg="mail")
    agent = await make_agent(c, tool_levels={"echo": 2}, **agent_fields)  # student x draft = approve
    events = await stream_chat(c, {"agent_id": agent["id"], "message": "send it"})
    assert types_of(events)[-1] == "run.paused"
    return events[0]["run_id"], await pending_approval(c, events[0]["run_id"])


async def test_approve_over_the_api_resumes_the_run_for_sse_followers(services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused_run(c, up)
        follower = asyncio.create_task(follow(c, run_id))  # follows from the start, across the pause
        r = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve", "note": "fine"})
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["decided_by"], r.json()["note"]) == ("approved", "key:" + r.json()[
            "decided_by"].split(":", 1)[1], "fine")
        events = await asyncio.wait_for(follower, 30)
        run = (await c.get(f"/api/runs/{run_id}")).json()
        again = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        other = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "reject"})
        audit = (await c.get("/api/audit", params={"action": "approval."})).json()["events"]
    assert types_of(events) == ["run.started", "tool.call", "approval.required", "run.paused", "tool.result",
                                "message.delta", "message.delta", "run.completed"]
    assert echo.calls == [{"text": "mail"}]
    assert run["status"] == "completed"
    action = run["tool_calls"][0]
    assert (action["decision"], action["rule"], action["status"]) == ("approve", "matrix:student:2", "completed")
    assert action["approval"]["status"] == "approved" and action["approval"]["note"] == "fine"
    assert action["approval"]["decided_by"].startswith("key:")
    # Idempotent: the same decision again is the same result; a different one is a conflict.
    assert again.status_code == 200 and again.json() == r.json()
    assert other.status_code == 409 and other.json()["error"]["code"] == "approval_already_decided"
    assert [(e["action"], e["target"]) for e in audit] == [("approval.approved", approval["id"])]
    assert len(echo.calls) == 1


async def test_reject_tells_the_model_why_and_the_run_continues(services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused_run(c, up)
        r = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "reject", "note": "wrong recipient"})
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
        run = (await c.get(f"/api/runs/{run_id}")).json()
        maturity = (await c.get(f"/api/agents/{run['agent_id']}/maturity")).json()
    assert echo.calls == []
    assert types_of(events) == ["tool.result", "message.delta", "message.delta", "run.completed"]
    assert events[0]["status"] == "rejected" and "wrong recipient" in events[0]["content"]
    refusal = [m for m in up.requests[1].body["messages"] if m["role"] == "tool"][0]["content"]
    assert refusal.startswith("refused: a human rejected this action (wrong recipient)")
    assert run["tool_calls"][0]["approval"]["status"] == "rejected"
    assert run["tool_calls"][0]["approval"]["note"] == "wrong recipient"
    counts = maturity["counts"]
    assert (counts["runs"], counts["approvals_asked"], counts["approvals_rejected"]) == (1, 1, 1)


async def test_two_concurrent_different_decisions_one_wins_one_conflicts(services: Services,
                                                                         up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused_run(c, up)
        url = f"/api/approvals/{approval['id']}"
        a, b = await asyncio.gather(c.post(url, json={"decision": "approve"}), c.post(url, json={"decision": "reject"}))
        await asyncio.wait_for(follow(c, run_id, after=4), 30)
        final = (await c.get(url)).json()
    assert sorted([a.status_code, b.status_code]) == [200, 409]
    winner = a if a.status_code == 200 else b
    assert final["status"] == winner.json()["status"]
    assert echo.calls == ([{"text": "mail"}] if final["status"] == "approved" else [])


async def test_only_admins_decide_and_bad_input_is_refused(services: Services, up: UpstreamServer) -> None:
    await setup_echo(services, up)
    ws = await services.accounts.workspace_by_name("default")
    member = await services.accounts.create_key(ws.id, "member", role="member")
    async with client_for(services) as c, client_for(services, member.key) as m:
        _, approval = await _paused_run(c, up)
        forbidden = await m.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        hidden = await m.get(f"/api/approvals/{approval['id']}")  # not the member's run
        bad = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "maybe"})
        missing = await c.post("/api/approvals/apr_missing", json={"decision": "approve"})
        bad_status = await c.get("/api/approvals", params={"status": "lost"})
        still = (await c.get(f"/api/approvals/{approval['id']}")).json()
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "admin_required"
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "approval_not_found"
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "decision"
    assert missing.status_code == 404
    assert bad_status.status_code == 422
    assert still["status"] == "pending"


async def test_expired_approval_counts_as_a_rejection(data_dir: Path, up: UpstreamServer) -> None:
    svc = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                             approval_ttl=3.0))
    try:
        echo = await setup_echo(svc, up)
        async with client_for(svc) as c:
            run_id, approval = await _paused_run(c, up)  # well within the TTL, even on a busy machine
            await asyncio.sleep(3.1)
            seen = (await c.get(f"/api/approvals/{approval['id']}")).json()  # read sweeps expiries
            events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
            late = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
            maturity = (await c.get(f"/api/agents/{seen['agent_id']}/maturity")).json()
    finally:
        await svc.close()
    assert (seen["status"], seen["decided_by"]) == ("expired", "system")
    assert echo.calls == []
    assert events[0]["type"] == "tool.result" and "expired" in events[0]["content"]
    assert types_of(events)[-1] == "run.completed"
    assert late.status_code == 409 and "expired" in late.json()["error"]["message"]
    assert maturity["counts"]["approvals_rejected"] == 1


async def test_a_paused_run_survives_a_restart(data_dir: Path, up: UpstreamServer) -> None:
    settings = load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False)
    first = await Services.start(settings)
    try:
        await setup_echo(first, up)
        async with client_for(first) as c:
            run_id, approval = await _paused_run(c, up)
    finally:
        await first.close()
    second = await Services.start(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False))
    try:
        echo = await _register_only(second)  # the new process has the same tool
        async with client_for(second) as c:
            assert (await c.get(f"/api/runs/{run_id}")).json()["status"] == "paused"
            r = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
            assert r.status_code == 200, r.text
            events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
            run = (await c.get(f"/api/runs/{run_id}")).json()
    finally:
        await second.close()
    assert echo.calls == [{"text": "mail"}]
    assert types_of(events)[-1] == "run.completed" and events[0]["status"] == "completed"
    assert run["status"] == "completed" and run["tool_calls"][0]["approval"]["status"] == "approved"
    assert up.requests[-1].body["messages"][-1]["content"] == '{"echo":{"text":"mail"}}'


async def _register_only(services: Services):
    from tests.support.agents import EchoTool

    tool = EchoTool()
    services.tools.register(tool)
    return tool


def test_cli_lists_approves_and_rejects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no server running, the CLI records decisions in the database and runs nothing
    (issue 14 item 3: it once resumed runs in its own process, without the server's
    settings); the next server to start carries both decisions out, exactly once."""
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WARDEN_ADMIN_KEY", ADMIN_KEY)
    runner = CliRunner()

    async def pause_two(up: UpstreamServer) -> list[str]:
        svc = await Services.start(load_settings())
        try:
            await connect_provider(svc, up)
            ids = []
            async with client_for(svc) as c:
                for name in ("one", "two"):
                    up.enqueue(Behaviour(tool_calls=[SimToolCall("current_time", {"timezone": "UTC"})]))
                    r = await c.post("/api/agents", json={"name": name, "tools": ["current_time"],
                                                          "tool_levels": {"current_time": 2}})
                    assert r.status_code == 201, r.text
                    events = await stream_chat(c, {"agent_id": r.json()["id"], "message": "time?"})
                    ids.append((await pending_approval(c, events[0]["run_id"]))["id"])
            up.enqueue(Behaviour(text="one done"), Behaviour(text="two done"))  # the resumed runs' answers
            return ids
        finally:
            await svc.close()

    def cli(*args: str):
        return runner.invoke(cli_app, list(args), catch_exceptions=False)

    async def scenario() -> tuple[list[str], list, list]:
        async with UpstreamServer("openai") as up:
            ids = await pause_two(up)
            listed = await asyncio.to_thread(cli, "approvals", "list")
            approved = await asyncio.to_thread(cli, "approvals", "approve", ids[0])
            rejected = await asyncio.to_thread(cli, "approvals", "reject", ids[1], "--note", "not now")
            after = await asyncio.to_thread(cli, "approvals", "list", "--status", "rejected")
            assert len(up.requests) == 2  # nothing ran in the CLI process
            server = await Services.start(load_settings())  # a serving instance: its sweep finds both
            try:
                for _ in range(300):
                    if len(up.requests) >= 4:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # and nothing more comes
            finally:
                await server.close()
            return ids, [listed, approved, rejected, after], [r.body for r in up.requests]

    ids, (listed, approved, rejected, after), bodies = asyncio.run(scenario())
    assert listed.exit_code == 0 and ids[0] in listed.stdout and ids[1] in listed.stdout
    assert approved.exit_code == 0 and f"approval {ids[0]} approved by key:cli" in approved.stdout
    assert rejected.exit_code == 0 and f"approval {ids[1]} rejected by key:cli" in rejected.stdout
    assert ids[1] in after.stdout and ids[0] not in after.stdout
    # The server made both runs' final model calls, with the tool's result or the refusal, once each.
    assert len(bodies) == 4
    assert '"timezone":"UTC"' in bodies[2]["messages"][-1]["content"]
    assert bodies[3]["messages"][-1]["content"].startswith("refused: a human rejected this action (not now)")


@requires_pg
async def test_concurrent_decisions_on_two_instances_over_postgresql(tmp_path: Path, up: UpstreamServer) -> None:
    """Two instances (own services, same PostgreSQL): the conditional update lets one decision win."""
    await reset_pg(PG_URL)
    shared = {"admin_key": ADMIN_KEY, "database_url": PG_URL, "access_log": False,
              "master_key": base64.b64encode(bytes(range(32))).decode()}  # both can open the BYOK key
    a = await Services.start(load_settings(data_dir=tmp_path / "a", **shared))
    b = await Services.start(load_settings(data_dir=tmp_path / "b", **shared))
    try:
        echo = await setup_echo(a, up)
        b.tools.register(echo)
        async with client_for(a) as ca, client_for(b) as cb:
            run_id, approval = await _paused_run(ca, up)
            url = f"/api/approvals/{approval['id']}"
            ra, rb = await asyncio.gather(ca.post(url, json={"decision": "approve"}),
                                          cb.post(url, json={"decision": "reject"}))
            events = await asyncio.wait_for(follow(ca, run_id, after=4), 30)
            final = (await ca.get(url)).json()
    finally:
        await b.close()
        await a.close()
    assert sorted([ra.status_code, rb.status_code]) == [200, 409]
    assert final["status"] == ("approved" if ra.status_code == 200 else "rejected")
    assert types_of(events)[-1] == "run.completed"
    assert echo.calls == ([{"text": "mail"}] if final["status"] == "approved" else [])


@requires_pg
async def test_parallel_pending_actions_decided_on_two_instances_lose_no_update(tmp_path: Path,
                                                                                up: UpstreamServer) -> None:
    """Two actions of one run, approved at the same moment on two instances (same PostgreSQL):
    both leave the pending list, the run goes on exactly once with both results, and its
    events stay one gapless sequence."""
    await reset_pg(PG_URL)
    shared = {"admin_key": ADMIN_KEY, "database_url": PG_URL, "access_log": False,
              "master_key": base64.b64encode(bytes(range(32))).decode()}
    a = await Services.start(load_settings(data_dir=tmp_path / "a", **shared))
    b = await Services.start(load_settings(data_dir=tmp_path / "b", **shared))
    try:
        echo = SlowEcho()  # slow enough that both decisions are in flight together
        await connect_provider(a, up)
        a.tools.register(echo)
        b.tools.register(echo)
        up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "one"}), SimToolCall("echo", {"text": "two"})]),
                   Behaviour(text="both done"))
        async with client_for(a) as ca, client_for(b) as cb:
            agent = await make_agent(ca, tool_levels={"echo": 2})
            events = await stream_chat(ca, {"agent_id": agent["id"], "message": "two drafts"})
            run_id = events[0]["run_id"]
            assert types_of(events)[-1] == "run.paused" and len(events[-1]["pending"]) == 2
            pending = (await ca.get("/api/approvals", params={"status": "pending", "run_id": run_id})).json()
            ra, rb = await asyncio.gather(ca.post(f"/api/approvals/{pending[0]['id']}", json={"decision": "approve"}),
                                          cb.post(f"/api/approvals/{pending[1]['id']}", json={"decision": "approve"}))
            tail = await asyncio.wait_for(follow(cb, run_id, after=events[-1]["seq"]), 30)
            run = (await ca.get(f"/api/runs/{run_id}")).json()
    finally:
        await b.close()
        await a.close()
    assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
    assert sorted(c["text"] for c in echo.calls) == ["one", "two"]
    assert types_of(tail) == ["tool.result", "tool.result", "message.delta", "message.delta", "run.completed"]
    assert [e["seq"] for e in tail] == list(range(events[-1]["seq"] + 1, events[-1]["seq"] + 6))
    assert run["status"] == "completed" and run["pending"] == []
    assert [c["status"] for c in run["tool_calls"]] == ["completed", "completed"]
    # The continued model call saw both results: no tool call lost its answer.
    final_call = up.requests[-1].body["messages"]
    assert sorted(m["content"] for m in final_call if m["role"] == "tool") == [
        '{"echo":{"text":"one"}}', '{"echo":{"text":"two"}}']
    assert len(up.requests) == 2


class SlowEcho(EchoTool):
    async def run(self, args, ctx):
        await asyncio.sleep(0.2)
        return await super().run(args, ctx)


async def test_members_list_their_own_approvals_and_filters_narrow_the_list(services: Services,
                                                                            up: UpstreamServer) -> None:
    await setup_echo(services, up)
    ws = await services.accounts.workspace_by_name("default")
    member = await services.accounts.create_key(ws.id, "member", role="member")
    admin = await services.accounts.authenticate(ADMIN_KEY)
    async with client_for(services) as c, client_for(services, member.key) as m:
        _, mine = await _paused_run(c, up, name="admin-agent")
        pause = Behaviour(tool_calls=[SimToolCall("echo", {"text": "x"})])
        up.reset()  # drop the queued final answer of the paused run: more pauses come first
        up.enqueue(pause, pause)
        events = await stream_chat(m, {"agent_id": mine["agent_id"], "message": "mine too"})  # the member's run
        theirs = await pending_approval(c, events[0]["run_id"])
        other_agent = await make_agent(c, name="other", tool_levels={"echo": 2})
        await stream_chat(c, {"agent_id": other_agent["id"], "message": "and this"})
        member_view = (await m.get("/api/approvals")).json()
        by_agent = (await c.get("/api/approvals", params={"agent_id": mine["agent_id"]})).json()
        everything = (await c.get("/api/approvals", params={"status": "pending"})).json()
        none_rejected = (await c.get("/api/approvals", params={"status": "rejected"})).json()
    # The service (which the CLI calls too) checks what the HTTP layer cannot see.
    with pytest.raises(ValidationFailed, match="status: must be one of"):
        await services.approvals.list(admin, status="lost")
    with pytest.raises(ValidationFailed, match="decision: must be 'approve' or 'reject'"):
        await services.approvals.decide(admin, mine["id"], "maybe")
    assert [a["id"] for a in member_view] == [theirs["id"]]
    assert {a["id"] for a in by_agent} == {mine["id"], theirs["id"]}
    assert len(everything) == 3 and none_rejected == []


async def test_a_decision_for_a_run_that_no_longer_waits_changes_nothing(services: Services,
                                                                         up: UpstreamServer) -> None:
    """The run was settled through the runtime's own seam first: the late approval is
    recorded, but the tool does not run a second time and the run is left as it is."""
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused_run(c, up)
        handle = await services.runs.resume_run(run_id, "approve", actor="key:operator")
        await services.runs.wait(handle)
        r = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        run = (await c.get(f"/api/runs/{run_id}")).json()
        events = await follow(c, run_id)
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert echo.calls == [{"text": "mail"}]
    assert run["status"] == "completed" and types_of(events).count("tool.result") == 1


async def test_a_decision_whose_run_cannot_go_on_here_fails_the_run_and_frees_the_session(
        services: Services, up: UpstreamServer) -> None:
    """The tool is gone when the approval lands: the decision stands, and the run ends
    ``failed`` with the reason (it does not wait for ever); the session takes new turns."""
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused_run(c, up)
        services.tools.plugins.pop("echo")  # e.g. a plugin this server no longer has
        decided = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
        run = (await c.get(f"/api/runs/{run_id}")).json()
        await services.approvals.sweep()  # nothing left to apply
        again = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        up.reset()  # drop the final answer the failed run never asked for
        up.enqueue(Behaviour(text="free again"))
        services.tools.register(echo)
        nxt = await c.post("/api/chat", json={"session_id": run["session_id"], "message": "next"})
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    assert types_of(events) == ["run.failed"] and events[0]["error"]["code"] == "unknown_tool"
    assert run["status"] == "failed" and run["error"]["code"] == "unknown_tool" and run["pending"] == []
    assert run["tool_calls"][0]["status"] == "cancelled"
    assert again.status_code == 200 and again.json()["status"] == "approved"  # same answer, nothing re-run
    assert echo.calls == []
    assert nxt.status_code == 200 and nxt.json()["message"]["content"] == "free again"


async def test_a_decision_left_unapplied_by_a_dead_instance_is_applied_at_the_next_sweep(
        services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused_run(c, up)
        async with services.db.transaction() as s:  # recorded, then the instance died before resuming
            await s.execute(update(Approval).where(Approval.id == approval["id"]).values(
                status="rejected", decided_by="key:gone", note="not this one", applied=False))
        applied = await services.approvals.apply_unapplied()
        events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
        again = await services.approvals.apply_unapplied()
    assert applied == 1 and again == 0
    assert echo.calls == []
    assert events[0]["type"] == "tool.result" and events[0]["status"] == "rejected"
    assert "(not this one)" in events[0]["content"] and events[0]["decided_by"] == "key:gone"
    assert types_of(events)[-1] == "run.completed"

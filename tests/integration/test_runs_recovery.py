"""Runs that never stay stuck: a decision recorded by a process that is not a
server is carried out by a server; two servers carry a decision or a dead
owner's run out exactly once; a run whose owner's lease expired is taken over
(its half-run tool reported, never run twice); an admin cancels a run and its
session is free; ``GET /api/runs`` says who holds each run and why one is stuck."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.support.agents import EchoTool, HangingTool, connect_provider, stream_chat, types_of
from tests.support.app import ADMIN_KEY, PG_URL, REDIS_URL, client_for, requires_pg, requires_redis, reset_pg
from tests.support.governance import follow, make_agent, pending_approval, script_tool_turn, setup_echo
from warden.agents.runs import RuntimeConfig
from warden.agents.runs.recovery import MAX_TAKEOVERS
from warden.config import Settings, load_settings
from warden.services import Services
from warden.store.agent_models import Message, Run, RunEvent, ToolCallRecord
from warden.store.base import utcnow
from warden.store.governance_models import Approval
from warden.store.models import AuditEvent
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

DEAD = "dead-host:1:00000000"


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def _paused(c, up: UpstreamServer, arg: str = "mail") -> tuple[str, dict]:
    script_tool_turn(up, text="all sent", arg=arg)
    agent = await make_agent(c, tool_levels={"echo": 2})  # student x draft = approve
    events = await stream_chat(c, {"agent_id": agent["id"], "message": "send it"})
    assert types_of(events)[-1] == "run.paused"
    return events[0]["run_id"], await pending_approval(c, events[0]["run_id"])


async def _orphan(services: Services, run_id: str, **values) -> None:
    """Make ``run_id`` look like a dead instance's: its owner gone, its lease run out."""
    async with services.db.transaction() as s:
        await s.execute(update(Run).where(Run.id == run_id).values(
            owner=DEAD, lease_expires_at=utcnow() - timedelta(seconds=5), **values))


async def test_a_decision_recorded_outside_a_server_is_carried_out_by_the_server(
        settings: Settings, services: Services, up: UpstreamServer) -> None:
    """As the old CLI did: a process on the same database (not serving) records the
    approval. It runs nothing itself; the server's sweep carries the decision out."""
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused(c, up)
        tool_here = EchoTool()
        cli = await Services.start(settings, serving=False)
        try:
            cli.tools.register(tool_here)
            admin = await cli.accounts.authenticate(ADMIN_KEY)
            decided = await cli.approvals.decide(admin, approval["id"], "approve", wait=True)
            after_cli = (await c.get(f"/api/runs/{run_id}")).json()
            stuck = (await c.get("/api/runs", params={"stuck": "true"})).json()
        finally:
            await cli.close()
        await services.approvals.sweep()  # the safety net (no shared state store here to announce it)
        events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
        run = (await c.get(f"/api/runs/{run_id}")).json()
    assert decided.status == "approved"
    assert tool_here.calls == []  # nothing ran in the recording process
    assert after_cli["status"] == "paused" and after_cli["pending"] == [approval["tool_call_id"]]
    assert stuck == []  # decided a moment ago: not stuck yet
    assert types_of(events) == ["tool.result", "message.delta", "message.delta", "run.completed"]
    assert echo.calls == [{"text": "mail"}]
    assert run["status"] == "completed" and run["tool_calls"][0]["status"] == "completed"


async def test_an_announced_decision_is_carried_out_at_once(services: Services, up: UpstreamServer) -> None:
    """The announcement (the state store's channel) reaches the serving instance's subscriber."""
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused(c, up)
        async with services.db.transaction() as s:
            await s.execute(update(Approval).where(Approval.id == approval["id"]).values(
                status="approved", decided_by="key:elsewhere", decided_at=utcnow(), applied=False))
        await services.state.publish("runs.decided", run_id)
        events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
    assert types_of(events)[-1] == "run.completed" and echo.calls == [{"text": "mail"}]


async def test_a_stuck_decision_is_listed_and_approving_again_carries_it_out(
        services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused(c, up)
        async with services.db.transaction() as s:  # decided a while ago, never carried out
            await s.execute(update(Approval).where(Approval.id == approval["id"]).values(
                status="approved", decided_by="key:cli", decided_at=utcnow() - timedelta(minutes=5), applied=False))
        stuck = (await c.get("/api/runs", params={"stuck": "true"})).json()
        again = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
        stuck_after = (await c.get("/api/runs", params={"stuck": "true"})).json()
    assert [r["id"] for r in stuck] == [run_id] and "has not been carried out" in stuck[0]["stuck_reason"]
    assert again.status_code == 200 and again.json()["status"] == "approved"
    assert types_of(events)[-1] == "run.completed" and echo.calls == [{"text": "mail"}]
    assert stuck_after == []


async def test_two_servers_carry_a_decision_out_exactly_once(tmp_path: Path, up: UpstreamServer) -> None:
    """Two serving instances on one SQLite file sweep at the same moment: one resumes."""
    shared = {"admin_key": ADMIN_KEY, "access_log": False, "database_url": f"sqlite+aiosqlite:///{tmp_path}/w.db",
              "master_key": "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="}
    a = await Services.start(load_settings(data_dir=tmp_path / "a", **shared))
    b = await Services.start(load_settings(data_dir=tmp_path / "b", **shared))
    try:
        echo = await setup_echo(a, up)
        b.tools.register(echo)
        async with client_for(a) as ca:
            run_id, approval = await _paused(ca, up)
            async with a.db.transaction() as s:
                await s.execute(update(Approval).where(Approval.id == approval["id"]).values(
                    status="approved", decided_by="key:cli", decided_at=utcnow(), applied=False))
            await asyncio.gather(a.approvals.sweep(), b.approvals.sweep(), a.approvals.sweep(), b.approvals.sweep())
            events = await asyncio.wait_for(follow(ca, run_id, after=4), 30)
    finally:
        await b.close()
        await a.close()
    assert echo.calls == [{"text": "mail"}]
    kinds = types_of(events)
    assert kinds[0] == "tool.result" and kinds.count("tool.result") == 1 and kinds[-1] == "run.completed"
    assert [e["seq"] for e in events] == list(range(5, 5 + len(events)))  # one gapless sequence


async def test_two_servers_take_a_dead_owners_run_over_exactly_once(tmp_path: Path, up: UpstreamServer) -> None:
    shared = {"admin_key": ADMIN_KEY, "access_log": False, "database_url": f"sqlite+aiosqlite:///{tmp_path}/w.db",
              "master_key": "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="}
    a = await Services.start(load_settings(data_dir=tmp_path / "a", **shared))
    b = await Services.start(load_settings(data_dir=tmp_path / "b", **shared))
    try:
        await connect_provider(a, up)
        up.enqueue(Behaviour(text="first"))
        async with client_for(a) as ca:
            first = (await ca.post("/api/chat", json={"message": "hi"})).json()
            # A turn whose server died after the user's message was stored, before the model answered.
            async with a.db.transaction() as s:
                await s.execute(update(Run).where(Run.id == first["run_id"]).values(
                    status="running", ended_at=None, steps=[], owner=DEAD,
                    lease_expires_at=utcnow() - timedelta(seconds=5)))
            up.enqueue(Behaviour(text="again"))
            moved = await asyncio.gather(a.runs.recovery.sweep(), b.runs.recovery.sweep())
            for svc in (a, b):
                for handle in list(svc.runs.live._runs.values()):
                    await svc.runs.wait(handle.handle)
            run = (await ca.get(f"/api/runs/{first['run_id']}")).json()
            async with a.db.session() as s:
                types = list((await s.execute(select(RunEvent.type).where(RunEvent.run_id == first["run_id"])
                                              .order_by(RunEvent.seq))).scalars())
    finally:
        await b.close()
        await a.close()
    assert sorted(moved) == [0, 1]
    assert run["status"] == "completed" and run["steps"][-1]["step"] == 1
    assert types.count("run.recovered") == 1 and types[-1] == "run.completed"
    assert len(up.requests) == 2


async def test_a_taken_over_run_reports_its_half_run_tool_and_never_runs_it_twice(
        services: Services, up: UpstreamServer) -> None:
    """At most once: the tool that was running when its server died is told to the model as
    interrupted; the run goes on with the next model call."""
    echo = await setup_echo(services, up)
    hanging = HangingTool()
    services.tools.register(hanging)
    up.enqueue(Behaviour(tool_calls=[SimToolCall("hang", {}), SimToolCall("echo", {"text": "fast"})]))
    async with client_for(services) as c:
        agent = await make_agent(c, tools=["hang", "echo"])
        started = await services.runs.start(await services.accounts.authenticate(ADMIN_KEY), "go",
                                            agent_ref=agent["id"])
        run_id = started.run_id
        while not echo.calls:  # until the tools run
            await asyncio.sleep(0.01)
        # The server "dies": its task vanishes without writing anything more; the row stays as it was.
        services.runs.live._runs[run_id].lost = True
        services.runs.live._runs[run_id].handle.task.cancel()
        await asyncio.sleep(0.05)
        await _orphan(services, run_id)
        up.enqueue(Behaviour(text="carried on"))
        handle = await services.runs.recovery.take_over(run_id, DEAD)
        assert handle is not None and await services.runs.recovery.take_over(run_id, DEAD) is None
        await services.runs.wait(handle)
        run = (await c.get(f"/api/runs/{run_id}")).json()
        events = await follow(c, run_id)
        listed = (await c.get("/api/runs", params={"agent": agent["name"]})).json()
    by_name = {t["name"]: t for t in run["tool_calls"]}
    assert run["status"] == "completed"
    assert by_name["hang"]["status"] == "interrupted" and "was not run again" in by_name["hang"]["result"]
    assert echo.calls == [{"text": "fast"}]  # ran once, before the "crash"; its result was kept or re-read
    tool_msgs = [m for m in up.requests[-1].body["messages"] if m["role"] == "tool"]
    assert len(tool_msgs) == 2 and any("may or may not have taken effect" in m["content"] for m in tool_msgs)
    assert "run.recovered" in types_of(events) and types_of(events)[-1] == "run.completed"
    assert listed[0]["id"] == run_id and listed[0]["takeovers"] == 1 and listed[0]["owner"] is None


async def test_a_taken_over_approved_action_that_never_started_runs_once(
        services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused(c, up)
        # The instance that claimed the decision died before the tool started.
        async with services.db.transaction() as s:
            await s.execute(update(Approval).where(Approval.id == approval["id"]).values(
                status="approved", decided_by="key:gone", decided_at=utcnow(), applied=True))
            run = await s.get(Run, run_id)
            run.resume_state = {**run.resume_state, "pending": [], "settling": [approval["tool_call_id"]]}
        await _orphan(services, run_id)
        stuck = (await c.get("/api/runs", params={"stuck": "true"})).json()
        await services.runs.sweep_stale()
        events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
    assert "lease of dead-host" in stuck[0]["stuck_reason"]
    assert echo.calls == [{"text": "mail"}]
    assert types_of(events)[:2] == ["run.recovered", "tool.result"] and types_of(events)[-1] == "run.completed"
    assert events[0]["interrupted"] == [] and events[1]["status"] == "completed"


async def test_a_taken_over_approved_action_that_had_started_is_not_run_again(
        services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused(c, up)
        async with services.db.transaction() as s:
            await s.execute(update(Approval).where(Approval.id == approval["id"]).values(
                status="approved", decided_by="key:gone", decided_at=utcnow(), applied=True))
            await s.execute(update(ToolCallRecord).where(ToolCallRecord.id == approval["tool_call_id"])
                            .values(status="running"))  # it had started when its server died
            run = await s.get(Run, run_id)
            run.resume_state = {**run.resume_state, "pending": [], "settling": [approval["tool_call_id"]]}
        await _orphan(services, run_id)
        await services.runs.sweep_stale()
        events = await asyncio.wait_for(follow(c, run_id, after=4), 30)
        run = (await c.get(f"/api/runs/{run_id}")).json()
    assert echo.calls == []
    assert events[0]["type"] == "run.recovered" and events[0]["interrupted"] == [approval["tool_call_id"]]
    assert events[1]["type"] == "tool.result" and events[1]["status"] == "interrupted"
    assert run["status"] == "completed" and run["tool_calls"][0]["status"] == "interrupted"


async def test_a_run_that_keeps_killing_its_servers_ends_failed(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    up.enqueue(Behaviour(text="x"))
    async with client_for(services) as c:
        first = (await c.post("/api/chat", json={"message": "hi"})).json()
        await _orphan(services, first["run_id"], status="running", ended_at=None, takeovers=MAX_TAKEOVERS)
        await services.runs.recovery.sweep()
        handle = services.runs.live._runs[first["run_id"]].handle
        await services.runs.wait(handle)
        run = (await c.get(f"/api/runs/{first['run_id']}")).json()
    assert run["status"] == "failed" and run["error"]["code"] == "run_abandoned"
    assert f"{MAX_TAKEOVERS + 1} times" in run["error"]["message"]


async def test_cancel_a_paused_run_closes_its_approvals_and_frees_the_session(
        services: Services, up: UpstreamServer) -> None:
    await setup_echo(services, up)
    ws = await services.accounts.workspace_by_name("default")
    member = await services.accounts.create_key(ws.id, "member", role="member")
    other_ws = await services.accounts.create_workspace("other")
    other = await services.accounts.create_key(other_ws.id, "other-admin", role="admin")
    async with client_for(services) as c, client_for(services, member.key) as m, \
            client_for(services, other.key) as o:
        run_id, approval = await _paused(c, up)
        session_id = (await c.get(f"/api/runs/{run_id}")).json()["session_id"]
        busy = await c.post("/api/chat", json={"session_id": session_id, "message": "more?"})
        by_member = await m.post(f"/api/runs/{run_id}/cancel")
        by_other = await o.post(f"/api/runs/{run_id}/cancel", json={"reason": "x"})
        bad = await c.post(f"/api/runs/{run_id}/cancel", json={"reason": 3})
        cancelled = await c.post(f"/api/runs/{run_id}/cancel", json={"reason": "wrong recipient"})
        again = await c.post(f"/api/runs/{run_id}/cancel")
        apr = (await c.get(f"/api/approvals/{approval['id']}")).json()
        late = await c.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
        events = await follow(c, run_id)
        up.reset()
        up.enqueue(Behaviour(text="free"))
        nxt = await c.post("/api/chat", json={"session_id": session_id, "message": "next"})
        run = (await c.get(f"/api/runs/{run_id}")).json()
        listed = (await c.get("/api/runs", params={"status": "cancelled"})).json()
        member_list = (await m.get("/api/runs")).json()
        bad_status = await c.get("/api/runs", params={"status": "lost"})
        no_agent = await c.get("/api/runs", params={"agent": "nobody"})
    async with services.db.session() as s:
        audited = (await s.execute(select(AuditEvent).where(AuditEvent.action == "run.cancelled"))).scalars().all()
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "session_busy"
    assert by_member.status_code == 403 and by_member.json()["error"]["code"] == "admin_required"
    assert by_other.status_code == 404 and by_other.json()["error"]["code"] == "run_not_found"
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "reason"
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert (apr["status"], apr["note"]) == ("cancelled", "the run was cancelled")
    assert late.status_code == 409
    assert types_of(events)[-1] == "run.cancelled" and events[-1]["reason"] == "wrong recipient"
    assert nxt.status_code == 200 and nxt.json()["message"]["content"] == "free"
    assert run["status"] == "cancelled" and run["error"]["code"] == "run_cancelled"
    assert run["tool_calls"][0]["status"] == "cancelled"
    assert [r["id"] for r in listed] == [run_id]
    assert member_list == []  # a member sees its own key's runs only
    assert bad_status.status_code == 422 and no_agent.status_code == 404
    assert len(audited) == 1 and audited[0].data["reason"] == "wrong recipient" and audited[0].target == run_id


async def test_cancel_a_run_executing_here_and_one_that_already_ended(services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    hanging = HangingTool()
    services.tools.register(hanging)
    up.enqueue(Behaviour(tool_calls=[SimToolCall("hang", {})]))
    services.runs.config = RuntimeConfig(tool_timeout_s=30)
    async with client_for(services) as c:
        r = await c.post("/api/agents", json={"name": "hanger", "tools": ["hang"]})
        assert r.status_code == 201, r.text
        started = await services.runs.start(await services.accounts.authenticate(ADMIN_KEY), "go", agent_ref="hanger")
        while not hanging.cancelled and not (await c.get(f"/api/runs/{started.run_id}")).json()["tool_calls"]:
            await asyncio.sleep(0.01)
        running = (await c.get("/api/runs", params={"status": "running"})).json()
        cancelled = await c.post(f"/api/runs/{started.run_id}/cancel")
        outcome = await services.runs.wait(started)
        ended = await c.post(f"/api/runs/{started.run_id}/cancel")
        missing = await c.post("/api/runs/run_nope/cancel")
        events = await follow(c, started.run_id)
    assert running[0]["owner"] == services.runs.instance_id and running[0]["lease_expires_at"]
    assert running[0]["stuck_reason"] is None
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert outcome.status == "lost" and hanging.cancelled
    assert ended.status_code == 200  # cancelled already: the same answer
    assert missing.status_code == 404
    assert types_of(events).count("run.cancelled") == 1


async def test_a_run_cancelled_on_another_instance_stops_here(tmp_path: Path, up: UpstreamServer) -> None:
    shared = {"admin_key": ADMIN_KEY, "access_log": False, "database_url": f"sqlite+aiosqlite:///{tmp_path}/w.db",
              "master_key": "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="}
    a = await Services.start(load_settings(data_dir=tmp_path / "a", **shared))
    b = await Services.start(load_settings(data_dir=tmp_path / "b", **shared))
    try:
        await connect_provider(a, up)
        hanging = HangingTool()
        a.tools.register(hanging)
        b.tools.register(hanging)
        up.enqueue(Behaviour(tool_calls=[SimToolCall("hang", {})]))
        async with client_for(a) as ca, client_for(b) as cb:
            assert (await ca.post("/api/agents", json={"name": "hanger", "tools": ["hang"]})).status_code == 201
            started = await a.runs.start(await a.accounts.authenticate(ADMIN_KEY), "go", agent_ref="hanger")
            while not (await ca.get(f"/api/runs/{started.run_id}")).json()["tool_calls"]:
                await asyncio.sleep(0.01)
            cancelled = await cb.post(f"/api/runs/{started.run_id}/cancel", json={"reason": "stop"})
            await a.runs.upkeep._beat()  # no shared state store here: a's heartbeat notices
            outcome = await asyncio.wait_for(a.runs.wait(started), 10)
    finally:
        await b.close()
        await a.close()
    assert cancelled.status_code == 200 and outcome.status == "lost" and hanging.cancelled


async def test_member_lists_only_own_runs_and_stuck_running_without_owner(
        services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    up.enqueue(Behaviour(text="a"))
    async with client_for(services) as c:
        first = (await c.post("/api/chat", json={"message": "hi"})).json()
        async with services.db.transaction() as s:
            await s.execute(update(Run).where(Run.id == first["run_id"]).values(status="running", owner=None))
        stuck = (await c.get("/api/runs", params={"stuck": "true", "limit": 5})).json()
        async with services.db.session() as s:
            msgs = (await s.execute(select(Message).where(Message.run_id == first["run_id"]))).scalars().all()
    assert [r["id"] for r in stuck] == [first["run_id"]] and "no owner" in stuck[0]["stuck_reason"]
    assert len(msgs) == 2


class _SlowEcho(EchoTool):
    async def run(self, args, ctx):  # noqa: ANN001, ANN201
        await asyncio.sleep(0.2)
        return await super().run(args, ctx)


async def test_a_second_decision_waits_while_the_first_is_carried_out_then_goes_on(
        services: Services, up: UpstreamServer) -> None:
    """Two actions of one run approved together on one server: the second finds the run
    busy, waits, and is carried out when the first lets go (announced, not swept)."""
    await connect_provider(services, up)
    echo = _SlowEcho()
    services.tools.register(echo)
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "one"}), SimToolCall("echo", {"text": "two"})]),
               Behaviour(text="both done"))
    async with client_for(services) as c:
        agent = await make_agent(c, tool_levels={"echo": 2})
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "two drafts"})
        run_id = events[0]["run_id"]
        pending = (await c.get("/api/approvals", params={"status": "pending", "run_id": run_id})).json()
        ra, rb = await asyncio.gather(*(c.post(f"/api/approvals/{p['id']}", json={"decision": "approve"})
                                        for p in pending))
        tail = await asyncio.wait_for(follow(c, run_id, after=events[-1]["seq"]), 30)
        run = (await c.get(f"/api/runs/{run_id}")).json()
    assert ra.status_code == rb.status_code == 200
    assert sorted(x["text"] for x in echo.calls) == ["one", "two"]
    assert types_of(tail).count("tool.result") == 2 and types_of(tail)[-1] == "run.completed"
    assert run["status"] == "completed" and [t["status"] for t in run["tool_calls"]] == ["completed", "completed"]


async def test_a_cancel_announced_by_another_instance_stops_the_run_here(
        services: Services, up: UpstreamServer) -> None:
    await connect_provider(services, up)
    hanging = HangingTool()
    services.tools.register(hanging)
    up.enqueue(Behaviour(tool_calls=[SimToolCall("hang", {})]))
    async with client_for(services) as c:
        assert (await c.post("/api/agents", json={"name": "hanger", "tools": ["hang"]})).status_code == 201
        started = await services.runs.start(await services.accounts.authenticate(ADMIN_KEY), "go", agent_ref="hanger")
        while not (await c.get(f"/api/runs/{started.run_id}")).json()["tool_calls"]:
            await asyncio.sleep(0.01)
        await services.state.publish("runs.cancel", started.run_id)
        outcome = await asyncio.wait_for(services.runs.wait(started), 10)
        decided_elsewhere = await services.state.publish("runs.decided", "run_unknown")
    assert outcome.status == "lost" and hanging.cancelled and decided_elsewhere is None


@requires_pg
@requires_redis
async def test_over_postgresql_and_redis_an_announced_decision_is_carried_out_once(
        tmp_path: Path, up: UpstreamServer) -> None:
    """Scale-out: two servers and a management process share PostgreSQL and Redis. The
    process records the decision and announces it; both servers hear it, one carries it
    out, long before any sweep would."""
    await reset_pg(PG_URL)
    shared = {"admin_key": ADMIN_KEY, "database_url": PG_URL, "redis_url": REDIS_URL, "access_log": False,
              "redis_prefix": f"warden-runs-{tmp_path.name}:",
              "master_key": "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="}
    a = await Services.start(load_settings(data_dir=tmp_path / "a", **shared))
    b = await Services.start(load_settings(data_dir=tmp_path / "b", **shared))
    cli = await Services.start(load_settings(data_dir=tmp_path / "c", **shared), serving=False)
    try:
        echo = await setup_echo(a, up)
        b.tools.register(echo)
        async with client_for(a) as ca:
            run_id, approval = await _paused(ca, up)
            await asyncio.sleep(1.2)  # past the servers' first sweep: only the announcement is left
            admin = await cli.accounts.authenticate(ADMIN_KEY)
            await cli.approvals.decide(admin, approval["id"], "approve")
            events = await asyncio.wait_for(follow(ca, run_id, after=4), 10)
    finally:
        await cli.close()
        await b.close()
        await a.close()
    assert echo.calls == [{"text": "mail"}]
    assert types_of(events).count("tool.result") == 1 and types_of(events)[-1] == "run.completed"


async def test_a_taken_over_rejection_is_given_its_refusal(services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused(c, up)
        async with services.db.transaction() as s:
            await s.execute(update(Approval).where(Approval.id == approval["id"]).values(
                status="rejected", decided_by="key:gone", note="no", decided_at=utcnow(), applied=True))
            run = await s.get(Run, run_id)
            run.resume_state = {**run.resume_state, "pending": [], "settling": [approval["tool_call_id"]]}
        await _orphan(services, run_id)
        handle = await services.runs.recovery.take_over(run_id, DEAD)
        await services.runs.wait(handle)
        events = await follow(c, run_id, after=4)
    assert echo.calls == []
    assert events[1]["status"] == "rejected" and "(no)" in events[1]["content"]
    assert types_of(events)[-1] == "run.completed"


async def test_a_run_that_died_before_asking_for_approval_refuses_the_action(
        services: Services, up: UpstreamServer) -> None:
    """The server died after recording the step's actions, before pausing: the action that
    needed a human is refused (nobody was asked), the run goes on."""
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        run_id, approval = await _paused(c, up)
        async with services.db.transaction() as s:  # back to the moment before the pause was written
            await s.execute(update(Run).where(Run.id == run_id).values(status="running", resume_state=None))
        await _orphan(services, run_id)
        handle = await services.runs.recovery.take_over(run_id, DEAD)
        await services.runs.wait(handle)
        run = (await c.get(f"/api/runs/{run_id}")).json()
    assert echo.calls == []
    assert run["status"] == "completed" and run["tool_calls"][0]["status"] == "cancelled"
    tool_msg = next(m for m in up.requests[-1].body["messages"] if m["role"] == "tool")
    assert "server stopped before asking" in tool_msg["content"]


async def test_a_run_taken_over_elsewhere_stops_here_and_a_stop_hands_runs_over(
        settings: Settings, up: UpstreamServer) -> None:
    first = await Services.start(settings)
    hanging = HangingTool()
    try:
        await connect_provider(first, up)
        first.tools.register(hanging)
        up.enqueue(Behaviour(tool_calls=[SimToolCall("hang", {})]), Behaviour(tool_calls=[SimToolCall("hang", {})]))
        async with client_for(first) as c:
            assert (await c.post("/api/agents", json={"name": "hanger", "tools": ["hang"]})).status_code == 201
            admin = await first.accounts.authenticate(ADMIN_KEY)
            taken = await first.runs.start(admin, "go", agent_ref="hanger")
            kept = await first.runs.start(admin, "go", agent_ref="hanger")
            for h in (taken, kept):
                while not (await c.get(f"/api/runs/{h.run_id}")).json()["tool_calls"]:
                    await asyncio.sleep(0.01)
            async with first.db.transaction() as s:  # another instance took it over meanwhile
                await s.execute(update(Run).where(Run.id == taken.run_id).values(owner="other:2:cd"))
            await first.runs.upkeep._beat()
            outcome = await asyncio.wait_for(first.runs.wait(taken), 10)
    finally:
        await first.close()  # a stop hands ``kept`` over: not ended, its lease expired now
    reader = await Services.start(settings, serving=False)
    try:
        async with reader.db.session() as s:
            row = await s.get(Run, kept.run_id)
    finally:
        await reader.close()
    assert outcome.status == "lost"
    assert row.status == "running" and row.lease_expires_at <= utcnow() and row.ended_at is None

"""The workspace policy API (stored, cached, audited, tighten-only), feedback
(replace semantics, summaries with model and complexity), and the audit log:
API filters and paging, export, and `warden audit verify` finding a tampered row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from tests.support.agents import stream_chat, types_of
from tests.support.governance import make_agent, script_tool_turn, setup_echo
from sqlalchemy import text
from typer.testing import CliRunner

from tests.support.app import ADMIN_KEY, PG_URL, client_for, requires_pg, reset_pg
from warden.cli import app as cli_app
from warden.store import audit
from warden.store.db import Database
from warden.store import migrate
from warden.services import Services
from warden.testing.upstream import Behaviour, UpstreamServer


@pytest.fixture
async def up() -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer("openai") as server:
        yield server


async def test_policy_put_get_tightens_a_real_run_and_is_audited(services: Services, up: UpstreamServer) -> None:
    echo = await setup_echo(services, up)
    async with client_for(services) as c:
        empty = (await c.get("/api/governance/policy")).json()
        put = await c.put("/api/governance/policy", json={"levels": {"1": "approve"}, "tools": {"other": "deny"}})
        got = (await c.get("/api/governance/policy")).json()
        agent = await make_agent(c, tier="autonomous", tier_reason="test")  # echo is level 1: allowed by the matrix
        script_tool_turn(up)
        events = await stream_chat(c, {"agent_id": agent["id"], "message": "go"})
        audit_rows = (await c.get("/api/audit", params={"action": "governance.policy_update"})).json()["events"]
    assert (empty["levels"], empty["version"], empty["auto_promote"]) == ({}, 0, False)
    assert put.status_code == 200 and got["levels"] == {"1": "approve"} and got["version"] == 1
    assert got["updated_by"].startswith("key:")
    call = next(e for e in events if e["type"] == "tool.call")
    assert (call["decision"], call["rule"]) == ("approve", "policy:level:1")
    assert types_of(events)[-1] == "run.paused" and echo.calls == []
    assert audit_rows[0]["data"]["before"]["levels"] == {} and audit_rows[0]["data"]["after"]["levels"] == {"1": "approve"}


async def test_policy_refuses_loosening_and_bad_shapes_and_non_admins(services: Services) -> None:
    ws = await services.accounts.workspace_by_name("default")
    member = await services.accounts.create_key(ws.id, "m", role="member")
    async with client_for(services) as c, client_for(services, member.key) as m:
        loosen = await c.put("/api/governance/policy", json={"levels": {"4": "allow"}})
        level = await c.put("/api/governance/policy", json={"levels": {"7": "deny"}})
        cell = await c.put("/api/governance/policy", json={"cells": {"boss:2": "deny"}})
        extra = await c.put("/api/governance/policy", json={"everything": "deny"})
        forbidden = await m.get("/api/governance/policy")
        ok = await c.put("/api/governance/policy", json={"cells": {"intern:2": "approve"},
                                                         "agents": {"agt_x": {"3": "deny"}}})
    assert loosen.status_code == 422 and "only tighten" in loosen.json()["error"]["message"]
    assert level.status_code == 422 and "1-4" in level.json()["error"]["message"]
    assert cell.status_code == 422 and "intern:2" in cell.json()["error"]["message"]
    assert extra.status_code == 422
    assert forbidden.status_code == 403
    assert ok.json()["cells"] == {"intern:2": "approve"} and ok.json()["agents"] == {"agt_x": {"3": "deny"}}
    policy = await services.policies.policy_for(ws.id)
    assert policy is not None and policy.cells == {("intern", 2): "approve"}


async def test_policy_change_reaches_another_instance_through_the_state_store(services: Services) -> None:
    ws = await services.accounts.workspace_by_name("default")
    assert await services.policies.policy_for(ws.id) is None  # now cached as "no overrides"
    other = type(services.policies)(services.db, cache_ttl=3600)  # another instance's store
    assert await other.policy_for(ws.id) is None
    unsubscribe = await services.state.subscribe(other.on_message)
    try:
        await services.policies.put(ws.id, {"levels": {"4": "approve"}}, actor="test")
        policy = await other.policy_for(ws.id)
    finally:
        unsubscribe()
    assert policy is not None and policy.levels == {4: "approve"}


async def test_feedback_replaces_and_summarises_with_model_and_complexity(services: Services,
                                                                          up: UpstreamServer) -> None:
    await setup_echo(services, up)
    ws = await services.accounts.workspace_by_name("default")
    other_key = await services.accounts.create_key(ws.id, "other", role="member")
    async with client_for(services) as c, client_for(services, other_key.key) as o:
        agent = await make_agent(c, tools=[])
        up.enqueue(Behaviour(text="first answer"))
        out = (await c.post("/api/chat", json={"agent_id": agent["id"], "message": "hello"})).json()
        first = await c.post("/api/feedback", json={"message_id": out["message"]["id"], "rating": "down",
                                                    "comment": "too long"})
        second = await c.post("/api/feedback", json={"message_id": out["message"]["id"], "rating": 5,
                                                     "correction": "Hi."})
        by_run = await c.post("/api/feedback", json={"run_id": out["run_id"], "rating": "up"})
        not_theirs = await o.post("/api/feedback", json={"run_id": out["run_id"], "rating": "down"})
        both = await c.post("/api/feedback", json={"run_id": out["run_id"], "message_id": "x", "rating": 1})
        bad = await c.post("/api/feedback", json={"run_id": out["run_id"], "rating": 9})
        missing = await c.post("/api/feedback", json={"message_id": "msg_nope", "rating": "up"})
        summary = (await c.get(f"/api/agents/{agent['id']}/feedback")).json()
        m = (await c.get(f"/api/agents/{agent['id']}/maturity")).json()
    assert first.status_code == 201 and first.json()["replaced"] is False and first.json()["score"] == -1.0
    assert second.status_code == 200 and second.json()["replaced"] is True
    assert second.json()["id"] == first.json()["id"] and second.json()["score"] == 1.0
    assert second.json()["comment"] is None and second.json()["correction"] == "Hi."
    assert (second.json()["provider"], second.json()["model"]) == ("openai", "gpt-4o-mini")
    assert second.json()["complexity"] == "simple"  # "hello", scored by the router at the run's model call
    assert by_run.status_code == 201 and by_run.json()["id"] != first.json()["id"]
    assert not_theirs.status_code == 404  # a member rates only runs it can see
    assert both.status_code == 422 and bad.status_code == 422 and missing.status_code == 404
    assert summary["count"] == 2 and summary["score_sum"] == 2.0 and summary["corrections"] == 1
    assert summary["by_model"][0]["model"] == "gpt-4o-mini" and summary["by_model"][0]["count"] == 2
    assert summary["by_tier"]["student"]["count"] == 2
    assert (m["counts"]["feedback_count"], m["counts"]["corrections"]) == (2, 1)


async def test_audit_api_filters_pages_and_stays_in_the_workspace(services: Services, up: UpstreamServer) -> None:
    await setup_echo(services, up)
    other_ws = await services.accounts.create_workspace("other")
    other_admin = await services.accounts.create_key(other_ws.id, "root", role="admin")
    async with client_for(services) as c, client_for(services, other_admin.key) as oc:
        for name in ("a1", "a2", "a3"):
            await make_agent(c, name=name, tools=[])
        first = (await c.get("/api/audit", params={"action": "agent.create", "limit": 2})).json()
        rest = (await c.get("/api/audit", params={"action": "agent.create", "cursor": first["next_cursor"]})).json()
        future = (await c.get("/api/audit", params={"since": "2999-01-01T00:00:00Z"})).json()
        past = (await c.get("/api/audit", params={"until": "2000-01-01T00:00:00Z"})).json()
        theirs = (await oc.get("/api/audit")).json()
    assert [e["target"] for e in first["events"]] and len(first["events"]) == 2 and first["next_cursor"]
    # Four creations: a1..a3 and the workspace's default agent, made on first use.
    assert len(rest["events"]) == 2 and rest["next_cursor"] is None
    assert first["events"][0]["seq"] < first["events"][1]["seq"] < rest["events"][0]["seq"]
    assert future["events"] == [] and past["events"] == []
    assert {e["workspace_id"] for e in theirs["events"]} == {other_ws.id}


def test_cli_audit_verify_export_and_a_tampered_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WARDEN_ADMIN_KEY", ADMIN_KEY)
    runner = CliRunner()
    assert runner.invoke(cli_app, ["migrate"]).exit_code == 0  # a command never creates the database itself
    assert runner.invoke(cli_app, ["keys", "create", "--name", "k1"]).exit_code == 0
    assert runner.invoke(cli_app, ["keys", "create", "--name", "k2"]).exit_code == 0
    ok = runner.invoke(cli_app, ["audit", "verify"], catch_exceptions=False)
    exported = runner.invoke(cli_app, ["audit", "export", "--format", "jsonl"], catch_exceptions=False)
    only_default = runner.invoke(cli_app, ["audit", "export", "--workspace", "default"], catch_exceptions=False)
    bad_format = runner.invoke(cli_app, ["audit", "export", "--format", "csv"])
    lines = [orjson.loads(line) for line in exported.stdout.splitlines()]
    assert ok.exit_code == 0, ok.output
    assert " ".join(ok.stdout.split()).startswith(f"audit chain ok: {len(lines)} events; 2 signed checkpoint(s)")
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert any(e["action"] == "api_key.create" and e["data"]["name"] == "k2" for e in lines)
    assert len(only_default.stdout.splitlines()) == len(lines)
    assert bad_format.exit_code == 2
    # Someone edits an event in the database directly: verify names it.
    victim = next(e for e in lines if e["action"] == "api_key.create" and e["data"]["name"] == "k1")

    async def tamper() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'warden.db'}")
        async with db.transaction() as s:
            await s.execute(text("UPDATE audit_events SET data = :d WHERE seq = :seq"),
                            {"d": '{"name": "k1-forged", "role": "admin"}', "seq": victim["seq"]})
        await db.close()

    asyncio.run(tamper())
    broken = runner.invoke(cli_app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert f"audit chain broken at event {victim['seq']}: content does not match its hash" in broken.stderr


def test_cli_audit_verify_counts_spend_seals_and_names_a_broken_one(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from decimal import Decimal

    from warden.store.models import SpendRow
    from warden.store.spend import SpendWriter
    from warden.store.spend_sealer import SpendSealer

    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WARDEN_ADMIN_KEY", ADMIN_KEY)
    runner = CliRunner()
    assert runner.invoke(cli_app, ["migrate"]).exit_code == 0
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'warden.db'}"
    spent = {"workspace_id": "ws_x", "status": "ok", "input_tokens": 1, "output_tokens": 2,
             "cost_usd": Decimal("0.01"), "latency_ms": None, "ttft_ms": None, "attempts": 1}

    async def spend(sql: str | None = None) -> int:
        db = Database(url)
        try:
            if sql:
                async with db.transaction() as s:
                    await s.execute(text(sql))
                return 0
            from datetime import UTC, datetime

            await db.insert_rows(SpendRow, [{**spent, "request_id": "old", "ts": datetime.now(UTC)}])
            assert await SpendSealer(db, interval=1).seal_once() == 1
            writer = SpendWriter(db)
            writer.record({**spent, "request_id": "r1"})
            writer.record({**spent, "request_id": "r2"})
            await writer.flush()  # committed unsealed: the tail until a sealer run
            async with db.session() as s:
                return (await s.execute(text("SELECT max(audit_seq) FROM spend"))).scalar_one()
        finally:
            await db.close()

    assert asyncio.run(spend()) == 1
    ok = runner.invoke(cli_app, ["audit", "verify"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    assert " ".join(ok.stdout.split()).endswith(
        "; 1 spend seal(s) match their 1 row(s); 2 spend row(s) not yet sealed")
    ok = runner.invoke(cli_app, ["audit", "verify", "--seal"], catch_exceptions=False)  # seal the tail first
    assert ok.exit_code == 0, ok.output
    assert " ".join(ok.stdout.split()).endswith("; 2 spend seal(s) match their 3 row(s)")
    seal = 2
    assert runner.invoke(cli_app, ["audit", "verify", "--seal", "--export", "x.jsonl"]).exit_code == 2
    asyncio.run(spend("UPDATE spend SET cost_usd = 0 WHERE request_id = 'r2'"))
    broken = runner.invoke(cli_app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert (f"audit chain broken at event {seal}: spend seal broken: their cost is 10000000000 pico-USD, "
            "it sealed 20000000000") in " ".join(broken.stderr.split())


@requires_pg
async def test_concurrent_appends_from_two_engines_stay_one_chain_on_postgresql() -> None:
    """Two Database engines stand for two instances; the head row's compare-and-swap
    plus run_tx retries keep one linear chain."""
    await reset_pg(PG_URL)
    one, two = Database(PG_URL), Database(PG_URL)
    try:
        await migrate.upgrade(one)
        async with one.session() as s:
            before = (await audit.verify(s)).count

        async def writer(db: Database, name: str, n: int) -> None:
            for i in range(n):
                async def tx(s, i=i) -> None:  # noqa: ANN001
                    await audit.append(s, workspace_id="ws", actor=name, action="test.append",
                                       data={"i": i})
                await db.run_tx(tx, attempts=200)

        await asyncio.gather(*(writer(db, f"{tag}{k}", 15) for k in range(3) for db, tag in ((one, "a"), (two, "b"))))
        async with one.session() as s:
            result = await audit.verify(s)
            actors = (await s.execute(text(
                "SELECT actor, count(*) FROM audit_events WHERE action = 'test.append' GROUP BY actor"))).all()
    finally:
        await one.close()
        await two.close()
    assert result.ok and result.count == before + 90
    assert sorted(actors) == sorted((f"{t}{k}", 15) for k in range(3) for t in "ab")

"""An agent's actions, explained (issue 17), through the real app on SQLite and
PostgreSQL: ``GET /api/agents/{ref}/actions`` merges an external agent's governed
calls, a hosted agent's run tool calls and either's model spend into one list,
newest first, with the approval and who decided it, outcomes, hashes (never raw
arguments), exact costs and totals, paged by cursor; feedback on a governed call
counts toward maturity as feedback on a run does; a key bound to one agent cannot
start another's sessions or runs; migration 0015 comes and goes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import inspect, select, text
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from tests.support.agents import EchoTool
from tests.support.app import ADMIN_KEY, PG_URL, LiveWarden, client_for, requires_pg, reset_pg
from tests.support.envelope import assert_envelope
from tests.support.governance import follow, pending_approval
from warden.cli import app, common
from warden.config import load_settings
from warden.governance.gate import arguments_hash
from warden.services import Services
from warden.store import migrate
from warden.store.db import Database
from warden.store.gate_models import GovernedCallRow
from warden.store.models import AuditEvent, SpendRow
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, SimToolCall, UpstreamServer

SECRET = "sk-live-actions-secret-0123456789abcdef"
OUTPUT_TOKENS = len(DEFAULT_TEXT.split())
# An odd price, so a float anywhere between the ledger and the reply would show in the last digits.
PRICED = [{"id": "gpt-4o-mini", "input_price": 0, "output_price": 1.234567}]
ONE_CALL = Decimal("0.000001234567") * OUTPUT_TOKENS
BODY = {"model": "openai/gpt-4o-mini", "max_tokens": OUTPUT_TOKENS,
        "messages": [{"role": "user", "content": "count me"}]}


@pytest.fixture
def services(any_services: Services) -> Services:
    return any_services


@pytest.fixture
def up() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
async def admin(services: Services, up: UpstreamServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(services) as c:
        r = await c.post("/api/byok", json={"provider": "openai", "label": "sim", "api_key": "sk-test",
                                            "base_url": up.base_url, "models": PRICED})
        assert r.status_code == 201, r.text
        yield c


async def agent_with_key(admin: httpx.AsyncClient, name: str, **fields: Any) -> tuple[dict[str, Any], str]:
    r = await admin.post("/api/agents", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    k = await admin.post("/api/keys", json={"name": f"{name}-key", "agent": r.json()["id"]})
    assert k.status_code == 201, k.text
    return r.json(), k.json()["key"]


async def decide(c: httpx.AsyncClient, tool: str, arguments: Any, **extra: Any) -> dict[str, Any]:
    r = await c.post("/api/governance/decide", json={"tool": tool, "arguments": arguments, **extra})
    assert r.status_code == 200, r.text
    return r.json()


async def report(c: httpx.AsyncClient, action_id: str, ok: bool, result: Any = None) -> None:
    r = await c.post(f"/api/governance/actions/{action_id}/outcome", json={"ok": ok, "result": result})
    assert r.status_code == 200 and r.json()["status"] == ("completed" if ok else "failed"), r.text


async def complete(c: httpx.AsyncClient) -> None:
    r = await c.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT, r.text


async def actions(c: httpx.AsyncClient, ref: str, **params: Any) -> dict[str, Any]:
    r = await c.get(f"/api/agents/{ref}/actions", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def ledger(services: Services, agent_id: str) -> list[SpendRow]:
    await services.spend.flush()
    async with services.db.session() as s:
        return list((await s.execute(select(SpendRow).where(SpendRow.agent_id == agent_id)
                                     .order_by(SpendRow.id))).scalars())


async def settled(services: Services) -> None:
    """Spend written and sealed now, so the server's background sealer (every second) cannot
    change a row's ``audit_seq`` between two reads a test compares."""
    await services.spend.flush()
    await services.audit_log.sealer.seal_pending()


async def external_history(services: Services, admin: httpx.AsyncClient) -> tuple[dict[str, Any], str, dict]:
    """cc: an allowed call that worked, a denied one, a held one a human approved (with a
    note) whose retry failed, and two model calls; returns (agent, key, the decisions)."""
    agent, key = await agent_with_key(admin, "cc", kind="external")
    async with client_for(services, key) as c:
        read = await decide(c, "Read", {"path": "/etc/hosts"}, level=1, source="hook:claude-code")
        await report(c, read["action_id"], True, {"lines": 3})
        await complete(c)
        bash = await decide(c, "Bash", {"command": "rm -rf /"}, level=3)
        held = await decide(c, "Edit", {"file": "a.py", "api_key": SECRET}, level=2, hold_s=0)
        assert held["decision"] == "pending"
        r = await admin.post(f"/api/approvals/{held['approval_id']}", json={"decision": "approve", "note": "ok once"})
        assert r.status_code == 200, r.text
        edit = await decide(c, "Edit", {"file": "a.py", "api_key": SECRET}, level=2)
        assert edit["decision"] == "allow"
        await report(c, edit["action_id"], False, "disk full")
        await complete(c)
    return agent, key, {"read": read, "bash": bash, "held": held, "edit": edit}


async def test_an_external_agents_actions_explained(services: Services, admin: httpx.AsyncClient) -> None:
    agent, _, d = await external_history(services, admin)
    await settled(services)  # what the server's sealer does within a second
    page = await actions(admin, "cc")  # by name; the id works the same
    assert page == await actions(admin, agent["id"])
    assert (page["agent_id"], page["agent"], page["agent_kind"], page["next_cursor"]) == (
        agent["id"], "cc", "external", None)
    kinds = [(a["kind"], a.get("tool") or a.get("model")) for a in page["actions"]]
    assert kinds == [("model_call", "gpt-4o-mini"), ("tool_call", "Edit"), ("tool_call", "Edit"),
                     ("tool_call", "Bash"), ("model_call", "gpt-4o-mini"), ("tool_call", "Read")]
    by_id = {a["id"]: a for a in page["actions"]}
    read, bash, held, edit = (by_id[d[k]["action_id"]] for k in ("read", "bash", "held", "edit"))
    assert (read["source"], read["level"], read["decision"], read["status"], read["outcome"]) == (
        "hook:claude-code", 1, "allow", "completed", "ok")
    assert read["arguments_hash"] == arguments_hash({"path": "/etc/hosts"}) and read["arguments"] is None
    assert read["result_hash"] == arguments_hash({"lines": 3}) and read["approval"] is None
    assert (bash["decision"], bash["status"], bash["rule"], bash["outcome"]) == (
        "deny", "denied", "matrix:student:3", None)
    # The held call and its approved retry name the approval, who decided it and the note.
    assert (held["status"], held["decision"], held["outcome"]) == ("approved", "approve", None)
    assert (edit["status"], edit["outcome"], edit["rule"]) == (
        "failed", "error", f"approval:{d['held']['approval_id']}")
    for a in (held, edit):
        assert a["approval"]["id"] == d["held"]["approval_id"] and a["approval"]["status"] == "approved"
        assert a["approval"]["decided_by"].startswith("key:") and a["approval"]["note"] == "ok once"
        assert a["arguments"] == {"file": "a.py", "api_key": "***"}  # masked, as the approval keeps it
    assert SECRET not in orjson.dumps(page).decode()
    # Model calls: the ledger's own rows, cost exact as stored.
    rows = await ledger(services, agent["id"])
    models = [a for a in page["actions"] if a["kind"] == "model_call"]
    assert [m["id"] for m in models] == [f"spend:{r.id}" for r in reversed(rows)]
    assert [Decimal(m["cost_usd"]) for m in models] == [ONE_CALL, ONE_CALL]
    assert models[0]["output_tokens"] == OUTPUT_TOKENS and models[0]["provider"] == "openai"
    assert page["totals"] == {"actions": 6, "tool_calls": 4, "model_calls": 2, "held": 2, "denied": 1,
                              "cost_usd": str(2 * ONE_CALL)}
    # Each model call names the audit event that seals its row: part of the agent's trail.
    assert [m["audit_seq"] for m in models] == [r.audit_seq for r in reversed(rows)]
    async with services.db.session() as s:
        seals = list((await s.execute(select(AuditEvent).where(
            AuditEvent.seq.in_([m["audit_seq"] for m in models])))).scalars())
    assert all(m["audit_seq"] is not None for m in models)  # one sealer run: maybe one seal for both
    assert {e.seq for e in seals} == {m["audit_seq"] for m in models}
    assert {(e.action, e.workspace_id) for e in seals} == {("spend.sealed", rows[0].workspace_id)}


async def test_a_hosted_agents_run_tool_calls_and_spend(services: Services, admin: httpx.AsyncClient,
                                                       up: UpstreamServer) -> None:
    services.tools.register(EchoTool(risk_level=2))  # a student's level-2 call waits for a human
    agent, key = await agent_with_key(admin, "worker", tools=["echo"], instructions="Use tools.")
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "hi", "password": SECRET})]),
               Behaviour(text="done"))
    async with client_for(services, key) as c:
        r = await c.post("/api/chat", json={"message": "go"})  # a bound key's turn is its agent's
        assert r.status_code == 200 and r.json()["status"] == "paused", r.text
        run_id = r.json()["run_id"]
    a = await pending_approval(admin, run_id)
    decided = await admin.post(f"/api/approvals/{a['id']}", json={"decision": "approve", "note": "go"})
    assert decided.status_code == 200 and decided.json()["status"] == "approved", decided.text
    events = await follow(admin, run_id)
    assert events[-1]["type"] == "run.completed"
    page = await actions(admin, agent["id"])
    assert page["agent_kind"] == "hosted"
    (call,) = [x for x in page["actions"] if x["kind"] == "tool_call"]
    assert (call["source"], call["run_id"], call["tool"], call["level"], call["decision"], call["status"],
            call["outcome"]) == ("run", run_id, "echo", 2, "approve", "completed", "ok")
    assert call["arguments"] == {"text": "hi", "password": "***"}
    assert call["arguments_hash"] == arguments_hash({"text": "hi", "password": SECRET})
    assert call["result_hash"] and call["approval"]["note"] == "go" and call["approval"]["status"] == "approved"
    rows = await ledger(services, agent["id"])
    assert len(rows) == 2 and [x["id"] for x in page["actions"] if x["kind"] == "model_call"] == [
        f"spend:{r.id}" for r in reversed(rows)]
    assert page["totals"]["held"] == 1 and page["totals"]["model_calls"] == 2
    assert Decimal(page["totals"]["cost_usd"]) == sum((r.cost_usd or Decimal(0) for r in rows), Decimal(0))
    assert SECRET not in orjson.dumps(page).decode()


async def test_pages_errors_and_who_sees_what(services: Services, admin: httpx.AsyncClient) -> None:
    agent, key, _ = await external_history(services, admin)
    await decide(admin, "Read", {"by": "admin"}, level=1, agent="cc")  # the admin's own call for cc
    await settled(services)
    full = (await actions(admin, "cc", limit=200))["actions"]
    seen, cursor = [], None
    while True:
        page = await actions(admin, "cc", limit=2, **({"before": cursor} if cursor else {}))
        assert len(page["actions"]) <= 2 and page["totals"]["actions"] == 7
        seen += page["actions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == full and len(full) == 7
    for bad in ("nope", "e30", "WyIyMDI2IiwiZyIsIngiXQ",  # not base64 JSON; {}; a bad time
                "WyIyMDI2LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgIm0iLCAiXHUwMGIyIl0",  # a model row id "²"
                "WyIyMDI2LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgIm0iLCAiMTExMTExMTExMTExMTExMTExMTEiXQ"):  # 20 digits
        err = assert_envelope(await admin.get("/api/agents/cc/actions", params={"before": bad}), 422,
                              "validation_error")
        assert err["param"] == "before"
    assert_envelope(await admin.get("/api/agents/cc/actions", params={"limit": 0}), 422, "validation_error")
    assert_envelope(await admin.get("/api/agents/nobody/actions"), 404, "agent_not_found")
    acme = (await admin.post("/api/workspaces", json={"name": "acme"})).json()
    theirs = await services.accounts.create_key(acme["id"], "acme-admin", "admin")
    async with client_for(services, theirs.key) as t:
        assert_envelope(await t.get(f"/api/agents/{agent['id']}/actions"), 404, "agent_not_found")
    # The bound key sees its own calls and spend, not the admin's call for its agent.
    async with client_for(services, key) as c:
        mine = await actions(c, "cc")
    assert [a["id"] for a in mine["actions"]] == [a["id"] for a in full[1:]]
    assert mine["totals"]["actions"] == 6


async def test_pages_split_rows_of_the_same_instant_exactly_once(services: Services,
                                                                admin: httpx.AsyncClient) -> None:
    agent = (await admin.post("/api/agents", json={"name": "cc", "kind": "external"})).json()
    ws = (await services.accounts.workspace_by_name("default")).id
    at = datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC)
    async with services.db.transaction() as s:
        s.add_all([GovernedCallRow(id=f"act_{i}", workspace_id=ws, agent_id=agent["id"], source="api", tool=f"t{i}",
                                   arguments_hash="0" * 64, level=1, decision="allow", rule="r", reason="x",
                                   status="allowed", created_at=at) for i in range(3)])
        s.add_all([SpendRow(ts=at, request_id=f"r{i}", workspace_id=ws, agent_id=agent["id"], status="ok",
                            cost_usd=Decimal("0.000000000001")) for i in range(2)])
    await settled(services)
    full = (await actions(admin, "cc"))["actions"]
    assert len(full) == 5 and {a["at"] for a in full} == {full[0]["at"]}
    seen, cursor = [], None
    for _ in range(6):
        page = await actions(admin, "cc", limit=1, **({"before": cursor} if cursor else {}))
        seen += page["actions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == full and page["totals"]["cost_usd"] == "0.000000000002"


async def test_feedback_on_an_external_call_counts_as_on_a_run(services: Services, admin: httpx.AsyncClient,
                                                               up: UpstreamServer) -> None:
    ext, key = await agent_with_key(admin, "cc", kind="external")
    async with client_for(services, key) as c:
        v = await decide(c, "Read", {"path": "x"}, level=1)
        await report(c, v["action_id"], True)
        # the agent's own key sits in the agent's environment: it may not rate itself up
        assert_envelope(await c.post("/api/feedback", json={"action_id": v["action_id"], "rating": 5}),
                        403, "own_agent")
    r = await admin.post("/api/feedback", json={"action_id": v["action_id"], "rating": "down",
                                                "correction": "read y, not x"})
    assert r.status_code == 201, r.text
    fb = r.json()
    assert (fb["action_id"], fb["run_id"], fb["agent_id"], fb["replaced"]) == (v["action_id"], None, ext["id"], False)
    again = await admin.post("/api/feedback", json={"action_id": v["action_id"], "rating": 2, "correction": "y"})
    assert again.status_code == 200 and again.json()["replaced"] is True and again.json()["id"] == fb["id"]

    hosted = (await admin.post("/api/agents", json={"name": "h", "tools": []})).json()
    up.enqueue(Behaviour(text="an answer"))
    run = (await admin.post("/api/chat", json={"agent_id": hosted["id"], "message": "q"})).json()
    r = await admin.post("/api/feedback", json={"run_id": run["run_id"], "rating": 2, "correction": "y"})
    assert r.status_code == 201, r.text
    ext_m = (await admin.get(f"/api/agents/{ext['id']}/maturity")).json()
    hosted_m = (await admin.get(f"/api/agents/{hosted['id']}/maturity")).json()
    assert ext_m["counts"] == hosted_m["counts"]  # the same evidence counts the same, whatever the kind
    counts = ext_m["counts"]
    assert (counts["runs"], counts["corrections"], counts["intervention_rate"]) == (1, 1, 1.0)
    assert ext_m["counts"]["feedback_sum"] == -0.5 and ext_m["needs"] == hosted_m["needs"]
    assert any("intervention rate" in n for n in ext_m["needs"])

    assert_envelope(await admin.post("/api/feedback", json={"action_id": "act_nope", "rating": "up"}),
                    404, "action_not_found")
    assert_envelope(await admin.post("/api/feedback", json={"action_id": v["action_id"], "run_id": run["run_id"],
                                                            "rating": "up"}), 422, "validation_error")
    member = (await admin.post("/api/keys", json={"name": "m", "role": "member"})).json()
    async with client_for(services, member["key"]) as m:  # not its call: as if there were none
        assert_envelope(await m.post("/api/feedback", json={"action_id": v["action_id"], "rating": "up"}),
                        404, "action_not_found")
    summary = (await admin.get(f"/api/agents/{ext['id']}/feedback")).json()
    assert summary["corrections"] == 1 and summary["recent"][0]["action_id"] == v["action_id"]


async def test_a_bound_key_runs_only_its_own_agent(services: Services, admin: httpx.AsyncClient,
                                                   up: UpstreamServer) -> None:
    a, key = await agent_with_key(admin, "a", tools=[])
    b = (await admin.post("/api/agents", json={"name": "b", "tools": []})).json()
    theirs = (await admin.post("/api/sessions", json={"agent_id": b["id"]})).json()
    bound_admin = (await admin.post("/api/keys", json={"name": "a-admin", "agent": a["id"], "role": "admin"})).json()
    for k in (key, bound_admin["key"]):
        async with client_for(services, k) as c:
            for ref in (b["id"], "b", "assistant"):
                err = assert_envelope(await c.post("/api/chat", json={"agent_id": ref, "message": "hi"}),
                                      403, "agent_mismatch")
                assert "'b'" in err["message"] or "'assistant'" in err["message"]
                assert_envelope(await c.post("/api/sessions", json={"agent_id": ref}), 403, "agent_mismatch")
                async with c.stream("POST", "/api/chat/stream", json={"agent_id": ref, "message": "hi"}) as r:
                    assert r.status_code == 403 and b"agent_mismatch" in await r.aread()
    async with client_for(services, bound_admin["key"]) as c:  # an admin may see b's session, not continue it
        assert_envelope(await c.post("/api/chat", json={"session_id": theirs["id"], "message": "hi"}),
                        403, "agent_mismatch")
        up.enqueue(Behaviour(text="mine"))
        own = await c.post("/api/chat", json={"message": "hi"})  # no agent named: the key's own
        assert own.status_code == 200 and own.json()["status"] == "completed", own.text
        session = (await c.post("/api/sessions", json={})).json()
    assert session["agent_id"] == a["id"]
    runs = (await admin.get("/api/runs")).json()
    assert [r["agent_id"] for r in runs] == [a["id"]]  # nothing ran for b


# --- warden audit explain, and the WebSocket, against a live server ---------------------------


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveWarden]:
    server = LiveWarden(load_settings(data_dir=tmp_path / "server", admin_key=ADMIN_KEY, access_log=False)).start()
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WARDEN_URL", server.url)
    monkeypatch.setenv("WARDEN_KEY", ADMIN_KEY)
    monkeypatch.setattr(common.out, "_width", 220)  # as tests/unit/cli/test_common.py: wide enough for every column
    yield server
    server.stop()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_audit_explain_through_the_server_and_on_the_database(live: LiveWarden, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as a:
        agent = a.post("/api/agents", json={"name": "cc", "kind": "external"}).json()
        key = a.post("/api/keys", json={"name": "cc-key", "agent": agent["id"]}).json()["key"]
        with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {key}"}) as c:
            read = c.post("/api/governance/decide", json={"tool": "Read", "level": 1}).json()
            done = c.post(f"/api/governance/actions/{read['action_id']}/outcome", json={"ok": True})
            assert done.status_code == 200 and done.json()["status"] == "completed", done.text
            assert c.post("/api/governance/decide", json={"tool": "Bash", "level": 3}).json()["decision"] == "deny"
            held = c.post("/api/governance/decide", json={"tool": "Edit", "level": 2, "hold_s": 0}).json()
        r = a.post(f"/api/approvals/{held['approval_id']}", json={"decision": "reject", "note": "not today"})
        assert r.status_code == 200, r.text
        api = a.get("/api/agents/cc/actions").json()

    r = invoke("audit", "explain", "cc")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    rows = [ln for ln in lines if any(t in ln for t in ("Read", "Bash", "Edit"))]
    assert [next(t for t in ("Read", "Bash", "Edit") if t in ln) for ln in rows] == ["Edit", "Bash", "Read"]
    assert "approve -> rejected" in rows[0] and "rejected by key:" in rows[0] and "not today" in rows[0]
    assert "deny -> denied" in rows[1] and "allow -> completed" in rows[2] and " ok " in rows[2]
    assert lines[-1] == ("cc (external): 3 action(s), 3 tool call(s), 0 model call(s); 1 held, 2 denied; "
                         "cost $0.000000000000")
    as_json = invoke("audit", "explain", agent["id"], "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == api
    first = invoke("audit", "explain", "cc", "--limit", "1")
    assert "Edit" in first.stdout and "Bash" not in first.stdout and "older: --before " in first.stdout
    cursor = first.stdout.split("--before ")[1].split()[0]
    rest = json.loads(invoke("audit", "explain", "cc", "--json", "--before", cursor).stdout)
    assert [x["id"] for x in rest["actions"]] == [x["id"] for x in api["actions"][1:]]
    missing = invoke("audit", "explain", "nobody")
    assert missing.exit_code == 1 and "no agent 'nobody'" in missing.stderr and "agent_not_found" in missing.stderr

    live.stop()  # no server: the same answer from the database, announced
    monkeypatch.delenv("WARDEN_URL")
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "server"))
    direct = invoke("audit", "explain", "cc", "--json")
    assert direct.exit_code == 0, direct.output
    assert "acting on the database directly" in direct.stderr and json.loads(direct.stdout) == api
    live.stop = lambda: None  # type: ignore[method-assign]  # already stopped


async def test_a_bound_key_on_the_websocket(tmp_path: Path) -> None:
    server = LiveWarden(load_settings(data_dir=tmp_path / "ws", admin_key=ADMIN_KEY, access_log=False)).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as a:
            mine = (await a.post("/api/agents", json={"name": "a", "tools": []})).json()
            await a.post("/api/agents", json={"name": "b", "tools": []})
            key = (await a.post("/api/keys", json={"name": "k", "agent": mine["id"]})).json()["key"]
        async with connect(f"ws://127.0.0.1:{server.port}/api/chat/ws",
                           additional_headers={"authorization": f"Bearer {key}"}) as ws:
            assert orjson.loads(await ws.recv())["type"] == "ready"
            await ws.send(orjson.dumps({"message": "hi", "agent_id": "b"}).decode())
            refused = orjson.loads(await ws.recv())
        assert refused["type"] == "error" and refused["error"]["code"] == "agent_mismatch"
        assert refused["error"]["status"] == 403 and "'b'" in refused["error"]["message"]
    finally:
        server.stop()


# --- migration 0015 ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    else:
        await reset_pg(PG_URL)
        database = Database(PG_URL)
    yield database
    await database.close()


async def _feedback_column(db: Database) -> tuple[bool, set[str]]:
    def read(conn: Any) -> tuple[bool, set[str]]:
        i = inspect(conn)
        (col,) = [c for c in i.get_columns("feedback") if c["name"] == "run_id"]
        return col["nullable"], {ix["name"] for ix in i.get_indexes("spend")}
    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


async def test_0015_makes_room_for_feedback_on_calls_and_back(db: Database) -> None:
    assert await migrate.upgrade(db, "0014") == "0014"
    assert await _feedback_column(db) == (False, {"ix_spend_ws_ts", "ix_spend_ws_key_ts", "ix_spend_ws_session"})
    row = ("INSERT INTO feedback (id, workspace_id, agent_id, run_id, target, author, rating, score, tier, steps, "
           "created_at, updated_at) VALUES (:id, 'ws_1', 'agt_1', :run, :target, 'key_1', 'up', 1, 'student', '[]', "
           "'2026-12-01', '2026-12-01')")
    async with db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws_1', 'w', '2026-12-01')"))
        await conn.execute(text(
            "INSERT INTO agents (id, workspace_id, name, instructions, model_policy, tools, mcp_servers, "
            "tool_levels, max_steps, tier, tier_sticky, created_at, updated_at) VALUES ('agt_1', 'ws_1', "
            "'old', '', '{}', '[]', '[]', '{}', 8, 'student', false, '2026-12-01', '2026-12-01')"))
        await conn.execute(text(row), {"id": "fb_run", "run": "run_1", "target": "run:run_1"})
    assert await migrate.upgrade(db, "0015") == "0015"
    nullable, indexes = await _feedback_column(db)
    assert nullable is True and "ix_spend_ws_agent_ts" in indexes
    async with db.engine.begin() as conn:
        await conn.execute(text(row), {"id": "fb_call", "run": None, "target": "call:act_1"})
    async with db.engine.begin() as conn:
        await conn.run_sync(_downgrade, "0014")
    assert await _feedback_column(db) == (False, {"ix_spend_ws_ts", "ix_spend_ws_key_ts", "ix_spend_ws_session"})
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT id FROM feedback"))).scalars().all() == ["fb_run"]


def _downgrade(conn: Any, revision: str) -> None:
    from alembic import command

    cfg = migrate.alembic_config()
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, revision)

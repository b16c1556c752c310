"""Python agent frameworks governed by Warden (issue 17), in ``offline-run``
(``tests/e2e/clients/mcp_frameworks.py``). The model is Warden's Responses API on an
intern agent's bound key; the loopback simulator plays it and scripts the tool calls.
An ``openai-agents`` agent takes its tools from Warden's ``/mcp`` (upstream:
tests/support/mcp_fixture_server.py): read-only ``fx__echo`` runs, level-3 ``fx__add``
is held until the test approves (or rejects) it over the API, destructive ``fx__wipe``
is denied, so never offered; each result or refusal reaches the model as the tool's output. A
``pydantic-ai`` agent asks ``POST /api/governance/decide`` before its own tools."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.app import LiveWarden
from tests.support.mcp_client import external_agent, governed_settings, stdio_fixture
from tests.support.offline import Client, warden_client
from tests.support.upstreams import UPSTREAM_KEYS, add_credential
from warden.config import Settings
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer



@pytest.fixture
def live_settings(tmp_path: Path) -> Settings:  # tests/e2e/conftest.py's live and admin run on it
    return governed_settings(tmp_path)


@pytest.fixture
def up(admin: httpx.Client) -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as server:
        add_credential(admin, "openai", server)
        yield server


@pytest.fixture
def agent(admin: httpx.Client) -> tuple[dict, str]:
    return external_agent(admin, "framework-agent", tier="intern", servers=[stdio_fixture("fx")])


@pytest.fixture
def client(live: LiveWarden, agent: tuple[dict, str]) -> Iterator[Client]:
    with warden_client("mcp_frameworks", live, agent[1]) as c:
        yield c


def settle(admin: httpx.Client, running: Future, agent_id: str, tool: str, decision: str,
           note: str | None = None, timeout: float = 45.0) -> dict:
    """Wait while the agent runs until ``tool`` is held for it, then decide it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert not running.done(), f"the agent ended before {tool} was held: {running.result()}"
        held = [a for a in admin.get("/api/approvals", params={"status": "pending", "agent_id": agent_id}).json()
                if a["tool"] == tool]
        if held:
            r = admin.post(f"/api/approvals/{held[0]['id']}", json={"decision": decision, "note": note})
            assert r.status_code == 200 and r.json()["status"] in ("approved", "rejected"), r.text
            return held[0]
        time.sleep(0.1)
    raise AssertionError(f"{tool} was never held")


def model_saw(up: UpstreamServer) -> list[str]:
    """The tool outputs the model was sent in the last request, as JSON text, in order."""
    return [json.dumps(m["content"]) for m in up.requests[-1].body["messages"] if m["role"] == "tool"]


def calls_of(admin: httpx.Client, agent_id: str) -> dict[str, list[dict]]:
    """The agent's governed calls by tool, oldest first, each as the API shows it."""
    events = admin.get("/api/audit", params={"action": "governance.decision", "limit": 1000}).json()["events"]
    calls: dict[str, list[dict]] = {}
    for e in sorted((e for e in events if e["data"]["agent_id"] == agent_id), key=lambda e: e["seq"]):
        calls.setdefault(e["data"]["tool"], []).append(admin.get(f"/api/governance/actions/{e['target']}").json())
    return calls


def test_openai_agents_mcp_allowed_and_held_calls_run(admin, up, agent, client) -> None:
    made, _ = agent
    up.enqueue(Behaviour(tool_calls=[SimToolCall("fx__echo", {"text": "hello from mcp"})]),
               Behaviour(tool_calls=[SimToolCall("fx__add", {"a": 20, "b": 22})]),
               Behaviour(text="Both done."))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.call, "openai_agents_mcp", question="Echo, then add 20 and 22.")
        add = settle(admin, running, made["id"], "fx__add", "approve", note="fine")
        done = running.result(timeout=60)
    assert add["arguments"] == {"a": 20, "b": 22} and add["risk_level"] == 3
    assert done["output"] == "Both done."
    echo_out, add_out = model_saw(up)
    assert "hello from mcp" in echo_out and "42" in add_out and "Warden" not in add_out
    calls = calls_of(admin, made["id"])
    assert calls.keys() == {"fx__echo", "fx__add"}
    (echo,), (added,) = calls["fx__echo"], calls["fx__add"]
    assert (echo["source"], echo["decision"], echo["status"]) == ("mcp", "allow", "completed")
    assert added["rule"] == f"approval:{add['id']}" and added["status"] == "completed"
    assert added["approval"]["consumed"] is True


def test_openai_agents_mcp_refusals_reach_the_model(admin, up, agent, client) -> None:
    made, _ = agent
    up.enqueue(Behaviour(tool_calls=[SimToolCall("fx__add", {"a": 1, "b": 1})]),
               Behaviour(text="Understood, I stopped."))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.call, "openai_agents_mcp", question="Add 1 and 1.")
        settle(admin, running, made["id"], "fx__add", "reject", note="not on a Friday")
        done = running.result(timeout=60)
    assert done["output"] == "Understood, I stopped."
    # Level 4 is denied for an intern: /mcp hides fx__wipe, so the model is never offered it.
    offered = {t["function"]["name"] for t in up.requests[0].body["tools"]}
    assert {"fx__echo", "fx__add"} <= offered and "fx__wipe" not in offered, offered
    (add_out,) = model_saw(up)
    assert "not on a Friday" in add_out and "Warden refused this call" in add_out and "sum" not in add_out
    assert len(done["tool_outputs"]) == 1 and "not on a Friday" in done["tool_outputs"][0]  # what the SDK got
    (added,) = calls_of(admin, made["id"])["fx__add"]
    assert added["status"] == "rejected" and added["approval"]["note"] == "not on a Friday"


def test_pydantic_ai_own_tools_ask_decide(admin, up, agent, client) -> None:
    made, _ = agent
    up.enqueue(Behaviour(tool_calls=[SimToolCall("read_notes", {"name": "groceries"})]),
               Behaviour(tool_calls=[SimToolCall("drop_table", {"table": "users"})]),
               Behaviour(text="Read it; the drop was refused."))
    done = client.call("pydantic_ai_decided", question="Read groceries, then drop users.")
    assert done["output"] == "Read it; the drop was refused."
    notes, drop = done["tool_outputs"]
    assert notes == "note groceries: buy milk"
    assert drop.startswith("Warden deny this call") and "[matrix:intern:4]" in drop and "dropped" not in drop
    read_out, drop_out = model_saw(up)
    assert "buy milk" in read_out and "matrix:intern:4" in drop_out
    calls = calls_of(admin, made["id"])
    (read,), (dropped,) = calls["read_notes"], calls["drop_table"]
    assert (read["source"], read["decision"], read["level"], read["status"]) == ("api", "allow", 1, "completed")
    assert read["result_hash"]  # the program reported its outcome
    assert (dropped["decision"], dropped["status"], dropped["level"]) == ("deny", "denied", 4)

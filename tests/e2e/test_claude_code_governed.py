"""Claude Code governed by Warden, end to end (issue 17): a live Warden is its model
gateway (``ANTHROPIC_BASE_URL`` with an intern agent's bound key, so the spend is the
agent's), its MCP server (``--mcp-config`` at ``/mcp`` with the same key; the agent's
upstream is tests/support/mcp_fixture_server.py) and its PreToolUse / PostToolUse
hooks (``--settings`` running the venv's ``warden hook claude-code``). All of it
inside ``offline-run``. The loopback simulator plays the model and scripts the tool
calls; the test plays the human who approves or refuses over the API while a call
is held."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_claude_code import CLAUDE, OFFLINE_RUN, QUIET, REPO  # its telemetry-off environment
from tests.support.app import LiveWarden
from tests.support.mcp_client import HOLD_S, external_agent, governed_settings, stdio_fixture
from tests.support.upstreams import UPSTREAM_KEYS, add_credential
from warden.config import Settings
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

WARDEN = REPO / ".venv" / "bin" / "warden"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                       reason="offline-run needs root and unshare (CI has both)"),
    pytest.mark.skipif(not CLAUDE.exists(),
                       reason="npm ci --prefix tests/clients installs Claude Code (.ci/run does)"),
]


@pytest.fixture
def live_settings(tmp_path: Path) -> Settings:  # tests/e2e/conftest.py's live and admin run on it
    return governed_settings(tmp_path)


@pytest.fixture
def up(admin: httpx.Client) -> Iterator[UpstreamServer]:
    with UpstreamServer("anthropic", api_key=UPSTREAM_KEYS["anthropic"]) as server:
        add_credential(admin, "anthropic", server)
        yield server


@pytest.fixture
def agent(admin: httpx.Client) -> tuple[dict, str]:
    return external_agent(admin, "claude-code", tier="intern", servers=[stdio_fixture("fx")])


def start_claude(live: LiveWarden, key: str, tmp_path: Path, prompt: str) -> subprocess.Popen[str]:
    """Claude Code with Warden as model gateway, MCP server and tool-call hook, all on one key."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir(exist_ok=True)
    hook = {"type": "command", "command": f"{WARDEN} hook claude-code", "timeout": 60}
    settings = {"hooks": {event: [{"matcher": "*", "hooks": [hook]}]
                          for event in ("PreToolUse", "PostToolUse", "PostToolUseFailure")}}
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    (tmp_path / "mcp.json").write_text(json.dumps({"mcpServers": {"warden": {
        "type": "http", "url": f"{live.url}/mcp", "headers": {"Authorization": f"Bearer {key}"}}}}))
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": live.url,
           "ANTHROPIC_API_KEY": key, "NO_COLOR": "1", "TERM": "dumb", **QUIET,
           "ENABLE_TOOL_SEARCH": "false",  # list Warden's MCP tools to the model, not behind a search tool
           # what the hook reads (Claude Code passes its environment on to hooks)
           "WARDEN_URL": live.url, "WARDEN_KEY": key, "WARDEN_HOOK_HOLD": str(HOLD_S),
           "WARDEN_HOOK_STATE_DIR": str(tmp_path / "hook-state"), "WARDEN_DATA_DIR": str(tmp_path / "nodata")}
    return subprocess.Popen(
        [str(OFFLINE_RUN), "--port", str(live.port), "--", str(CLAUDE), "-p", prompt, "--output-format", "json",
         "--max-turns", "6", "--settings", str(tmp_path / "settings.json"),
         "--mcp-config", str(tmp_path / "mcp.json"), "--strict-mcp-config"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env=env, stdin=subprocess.DEVNULL)


def settle(admin: httpx.Client, proc: subprocess.Popen[str], agent_id: str, tool: str, decision: str,
           note: str | None = None, timeout: float = 45.0) -> dict:
    """Wait while Claude Code runs until ``tool`` is held for the agent, then decide it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"Claude Code ended before {tool} was held: {proc.communicate()}"
        held = [a for a in admin.get("/api/approvals", params={"status": "pending", "agent_id": agent_id}).json()
                if a["tool"] == tool]
        if held:
            r = admin.post(f"/api/approvals/{held[0]['id']}", json={"decision": decision, "note": note})
            assert r.status_code == 200 and r.json()["status"] in ("approved", "rejected"), r.text
            return held[0]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{tool} was never held: {proc.communicate()}")


def finish(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, (out + err)[-4000:]
    printed = json.loads(out)
    assert printed["type"] == "result" and printed["is_error"] is False, printed
    return printed


def tool_results(up: UpstreamServer) -> list[str]:
    """The tool results Claude Code sent back to the model, as JSON text, in order."""
    last = [r for r in up.requests if r.path == "/v1/messages"][-1]
    return [json.dumps(b) for m in last.body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_result"]


def decisions(admin: httpx.Client, agent_id: str) -> dict[str, list[dict]]:
    """The agent's recorded calls by tool, in order: its audit events, then each action as the API shows it."""
    events = admin.get("/api/audit", params={"action": "governance.decision", "limit": 1000}).json()["events"]
    calls: dict[str, list[dict]] = {}
    for e in sorted((e for e in events if e["data"]["agent_id"] == agent_id), key=lambda e: e["seq"]):
        calls.setdefault(e["data"]["tool"], []).append(admin.get(f"/api/governance/actions/{e['target']}").json())
    return calls


def spend_of(admin: httpx.Client, agent_id: str) -> dict:
    rows = admin.get("/api/usage", params={"group_by": "agent"}).json()["rows"]
    return {row["group"]: row for row in rows}.get(agent_id) or {}


def test_held_calls_run_once_a_human_approves(live, admin, up, agent, tmp_path) -> None:
    made, key = agent
    target = tmp_path / "work" / "approved.txt"
    up.enqueue(Behaviour(tool_calls=[SimToolCall("Write", {"file_path": str(target),
                                                           "content": "written after approval\n"})]),
               Behaviour(tool_calls=[SimToolCall("mcp__warden__fx__add", {"a": 20, "b": 22})]),
               Behaviour(text="Both done."))
    proc = start_claude(live, key, tmp_path, "Write approved.txt, then add 20 and 22.")
    # Level 3 for an intern: the hook holds Write, the /mcp gateway holds fx__add, until approved.
    write = settle(admin, proc, made["id"], "Write", "approve")
    assert write["arguments"]["file_path"] == str(target) and write["risk_level"] == 3
    add = settle(admin, proc, made["id"], "fx__add", "approve", note="fine")
    assert add["arguments"] == {"a": 20, "b": 22}
    printed = finish(proc)
    assert printed["result"] == "Both done."
    assert target.read_text() == "written after approval\n"  # Claude Code really wrote it
    results = tool_results(up)
    assert len(results) == 2 and "42" in results[1] and '"is_error": true' not in results[1]
    # Both calls recorded under the agent, allowed by their approvals, with their outcomes.
    calls = {tool: only for tool, (only,) in decisions(admin, made["id"]).items()}
    assert calls.keys() == {"Write", "fx__add"}
    assert calls["Write"]["source"] == "hook:claude-code" and calls["fx__add"]["source"] == "mcp"
    for tool, approval in (("Write", write), ("fx__add", add)):
        assert calls[tool]["rule"] == f"approval:{approval['id']}" and calls[tool]["status"] == "completed"
        assert calls[tool]["approval"]["consumed"] is True and calls[tool]["result_hash"]
    # The model's spend is the agent's: every Claude Code request went on its key.
    spent = spend_of(admin, made["id"])
    assert spent.get("requests", 0) >= 3 and float(spent["cost_usd"]) > 0, spent


def test_refusals_reach_the_model(live, admin, up, agent, tmp_path) -> None:
    made, key = agent
    keep = tmp_path / "work" / "build"
    keep.mkdir(parents=True)
    up.enqueue(Behaviour(tool_calls=[SimToolCall("Bash", {"command": f"rm -rf {keep}",
                                                          "description": "Delete the build directory"})]),
               Behaviour(tool_calls=[SimToolCall("mcp__warden__fx__add", {"a": 1, "b": 1})]),
               Behaviour(tool_calls=[SimToolCall("Bash", {"command": "ls no-such-dir",
                                                          "description": "List a missing directory"})]),
               Behaviour(text="Understood, I stopped."))
    proc = start_claude(live, key, tmp_path, "Delete build/, add 1 and 1, then list no-such-dir.")
    # rm -rf is level 4: denied for an intern without asking anyone; fx__add a human rejects.
    settle(admin, proc, made["id"], "fx__add", "reject", note="not on a Friday")
    printed = finish(proc)
    assert printed["result"] == "Understood, I stopped."
    assert keep.is_dir()  # the command never ran
    bash, add, ls = tool_results(up)
    assert "PreToolUse:Bash hook" in bash and "Warden denied this call [rule matrix:intern:4]" in bash
    assert "not on a Friday" in add and "Warden refused this call" in add
    assert "no-such-dir" in ls and "Warden" not in ls  # read-only: allowed, ran, and failed
    calls = decisions(admin, made["id"])
    assert calls.keys() == {"Bash", "fx__add"}
    (rm, listing), (add_call,) = calls["Bash"], calls["fx__add"]
    assert (rm["decision"], rm["status"], rm["level"]) == ("deny", "denied", 4)
    assert add_call["status"] == "rejected" and add_call["approval"]["note"] == "not on a Friday"
    # The failed command reached Warden as PostToolUseFailure: its outcome, not a second decision.
    assert (listing["decision"], listing["level"], listing["status"], listing["is_error"]) == \
        ("allow", 2, "failed", True)
    spent = spend_of(admin, made["id"])
    assert spent.get("requests", 0) >= 3 and float(spent["cost_usd"]) > 0, spent

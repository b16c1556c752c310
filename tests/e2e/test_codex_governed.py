"""Codex CLI governed by Warden (issue 17): Warden is its model provider (an intern
agent's bound key, so the spend is the agent's) and an MCP server in its
``config.toml`` (``[mcp_servers.warden]``: streamable HTTP at ``/mcp``, the same key
through ``bearer_token_env_var``). Inside ``offline-run``. The simulator scripts two
calls of the agent's level-3 ``fx__add``: the test approves the first while Warden
holds it and rejects the second; Codex sends the result, then the refusal, back to
the model."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_codex import CODEX, CONFIG, OFFLINE_RUN
from tests.support.app import LiveWarden
from tests.support.mcp_client import external_agent, governed_settings, mcp_session, stdio_fixture
from tests.support.upstreams import UPSTREAM_KEYS, add_credential
from warden.config import Settings
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                       reason="offline-run needs root and unshare (CI has both)"),
    pytest.mark.skipif(not CODEX.exists(), reason="npm ci --prefix tests/clients installs Codex (.ci/run does)"),
]

# The README's "Use with Codex" configuration, plus Warden as an MCP server.
MCP = """
[mcp_servers.warden]
url = "{url}/mcp"
bearer_token_env_var = "WARDEN_API_KEY"
tool_timeout_sec = 60
default_tools_approval_mode = "approve"  # Warden decides (and holds) each call; Codex need not ask
"""


@pytest.fixture
def live_settings(tmp_path: Path) -> Settings:  # tests/e2e/conftest.py's live and admin run on it
    return governed_settings(tmp_path)


@pytest.fixture
def up(admin: httpx.Client) -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as server:
        add_credential(admin, "openai", server)
        admin.put("/api/model-groups/coding", json={"members": ["openai/gpt-4o-mini"]})
        yield server


def warm(live: LiveWarden, key: str) -> set[str]:
    """List the agent's tools once, so Warden has its upstream running: Codex starts its
    first turn without waiting for a slow ``tools/list`` (the tools come a turn late)."""
    async def names() -> set[str]:
        async with mcp_session(live.url, key) as mcp:
            return {t.name for t in (await mcp.list_tools()).tools}

    return asyncio.run(names())


# ``warden hook codex`` on Codex's PreToolUse / PostToolUse (the venv's warden binary).
HOOKS = """
[[hooks.PreToolUse]]
[[hooks.PreToolUse.hooks]]
type = "command"
command = "{warden} hook codex"
timeout = 60

[[hooks.PostToolUse]]
[[hooks.PostToolUse.hooks]]
type = "command"
command = "{warden} hook codex"
timeout = 60
"""
WARDEN = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "warden"


def start_codex(live: LiveWarden, key: str, tmp_path: Path, prompt: str, *,
                hooks: bool = False) -> subprocess.Popen[str]:
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(CONFIG.format(url=live.url) + MCP.format(url=live.url)
                                                 + (HOOKS.format(warden=WARDEN) if hooks else ""))
    work.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home / ".codex"),
           "WARDEN_API_KEY": key, "NO_COLOR": "1", "RUST_LOG": "error",
           # what the hook reads (Codex passes its environment on to hooks)
           "WARDEN_URL": live.url, "WARDEN_KEY": key, "WARDEN_HOOK_STATE_DIR": str(tmp_path / "hook-state"),
           "WARDEN_DATA_DIR": str(tmp_path / "nodata")}
    # The hook is ours, written just now: no interactive review of it (Codex asks for one by default).
    trust = ["--dangerously-bypass-hook-trust"] if hooks else []
    return subprocess.Popen(
        [str(OFFLINE_RUN), "--port", str(live.port), "--", str(CODEX), "exec", "--skip-git-repo-check",
         "--sandbox", "read-only", *trust, prompt],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env=env, stdin=subprocess.DEVNULL)


def settle(admin: httpx.Client, proc: subprocess.Popen[str], agent_id: str, args: dict, decision: str,
           note: str | None = None, timeout: float = 45.0) -> dict:
    """Wait while Codex runs until fx__add(args) is held for the agent, then decide it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"Codex ended before the call was held: {proc.communicate()}"
        held = [a for a in admin.get("/api/approvals", params={"status": "pending", "agent_id": agent_id}).json()
                if a["tool"] == "fx__add" and a["arguments"] == args]
        if held:
            r = admin.post(f"/api/approvals/{held[0]['id']}", json={"decision": decision, "note": note})
            assert r.status_code == 200, r.text
            return held[0]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"fx__add{args} was never held: {proc.communicate()}")


def test_codex_mcp_calls_through_warden_are_held_and_refused(live, admin, up, tmp_path) -> None:
    made, key = external_agent(admin, "codex", tier="intern", servers=[stdio_fixture("fx")])
    # Codex starts its first turn without waiting for its MCP servers' tools: a shell command
    # first, so the model's next request lists Warden's tools (the pool is warm, too).
    up.enqueue(Behaviour(tool_calls=[SimToolCall("exec_command", {"cmd": "echo ready"})]),
               Behaviour(tool_calls=[SimToolCall("mcp__warden__fx__add", {"a": 20, "b": 22})]),
               Behaviour(tool_calls=[SimToolCall("mcp__warden__fx__add", {"a": 1, "b": 1})]),
               Behaviour(text="The first sum was 42; the second call was refused."))
    assert "fx__add" in warm(live, key)
    proc = start_codex(live, key, tmp_path, "Add 20 and 22, then 1 and 1, with the warden tools.")
    first = settle(admin, proc, made["id"], {"a": 20, "b": 22}, "approve")
    settle(admin, proc, made["id"], {"a": 1, "b": 1}, "reject", note="not on a Friday")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, (out + err)[-4000:]
    assert "The first sum was 42; the second call was refused." in out, (out + err)[-4000:]
    # What reached the model: Warden's tools as Codex functions, then the result and the refusal.
    bodies = [r.body for r in up.requests if r.path == "/v1/chat/completions"]
    names = {t["function"]["name"] for t in bodies[1]["tools"]}
    assert "mcp__warden__fx__add" in names and "mcp__warden__fx__wipe" not in names, names
    outputs = [str(m["content"]) for m in bodies[-1]["messages"] if m["role"] == "tool"][1:]
    assert len(outputs) == 2 and "42" in outputs[0], outputs
    assert "Warden refused this call" in outputs[1] and "not on a Friday" in outputs[1], outputs
    # Recorded under the agent: the approved call ran once and reported its outcome.
    actions = [admin.get(f"/api/governance/actions/{e['target']}").json()
               for e in admin.get("/api/audit", params={"action": "governance.decision"}).json()["events"]
               if e["data"]["agent_id"] == made["id"]]
    assert sorted(a["status"] for a in actions) == ["completed", "rejected"], actions
    done = next(a for a in actions if a["status"] == "completed")
    assert done["rule"] == f"approval:{first['id']}" and done["source"] == "mcp"
    rows = {r["group"]: r for r in admin.get("/api/usage", params={"group_by": "agent"}).json()["rows"]}
    assert rows[made["id"]]["requests"] >= 3 and float(rows[made["id"]]["cost_usd"]) > 0, rows


def test_codex_shell_commands_through_warden_hook(live, admin, up, tmp_path) -> None:
    made, key = external_agent(admin, "codex", tier="intern")
    keep = tmp_path / "work" / "build"
    keep.mkdir(parents=True)
    up.enqueue(Behaviour(tool_calls=[SimToolCall("exec_command", {"cmd": f"rm -rf {keep}"})]),
               Behaviour(tool_calls=[SimToolCall("exec_command", {"cmd": "echo warden-codex-hook"})]),
               Behaviour(text="One refused, one ran."))
    proc = start_codex(live, key, tmp_path, "Delete build/, then echo something.", hooks=True)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, (out + err)[-4000:]
    assert "One refused, one ran." in out, (out + err)[-4000:]
    assert keep.is_dir()  # the destructive command never ran
    outputs = [str(m["content"]) for m in up.requests[-1].body["messages"] if m["role"] == "tool"]
    assert len(outputs) == 2, outputs
    assert "Warden denied this call [rule matrix:intern:4]" in outputs[0], outputs
    assert "warden-codex-hook" in outputs[1] and "Warden" not in outputs[1], outputs
    actions = [admin.get(f"/api/governance/actions/{e['target']}").json()
               for e in admin.get("/api/audit", params={"action": "governance.decision"}).json()["events"]
               if e["data"]["agent_id"] == made["id"]]
    assert [(a["source"], a["level"], a["status"]) for a in actions] == \
        [("hook:codex", 4, "denied"), ("hook:codex", 2, "completed")], actions

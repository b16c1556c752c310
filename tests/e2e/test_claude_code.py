"""Claude Code (``@anthropic-ai/claude-code``, pinned in ``tests/clients/package.json``;
a native binary, so Node's version does not matter) through Warden's Anthropic
edge: ``claude -p … --output-format json`` with ``ANTHROPIC_BASE_URL`` at a live
Warden, inside ``offline-run`` (loopback only), telemetry, error reporting,
auto-update and nonessential traffic off. Its hard-coded default model is served
by the built-in ``claude-*`` default (no alias, no API call). The simulator scripts
the model: a ``Read`` of a file first, then the answer; Claude Code really reads
the file and sends its content back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.app import ADMIN_KEY
from tests.support.upstreams import add_credential
from warden.store.models import AuditEvent, SpendRow
from warden.testing.upstream import Behaviour, SimToolCall

REPO = Path(__file__).resolve().parents[2]
CLAUDE = REPO / "tests" / "clients" / "node_modules" / ".bin" / "claude"
OFFLINE_RUN = REPO.parent / "shared" / "tools" / "offline-run"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                       reason="offline-run needs root and unshare (CI has both)"),
    pytest.mark.skipif(not CLAUDE.exists(),
                       reason="npm ci --prefix tests/clients installs Claude Code (.ci/run does)"),
]

# The README's "Use with Claude Code" environment, with the test's URL and key.
QUIET = {"DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
         "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_BUG_COMMAND": "1",
         "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1", "DISABLE_COST_WARNINGS": "1",
         "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1", "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1"}


def claude(live, tmp_path: Path, prompt: str, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": live.url,
           "ANTHROPIC_API_KEY": ADMIN_KEY, "NO_COLOR": "1", "TERM": "dumb", **QUIET}
    port = live.url.rsplit(":", 1)[1]
    return subprocess.run(
        [str(OFFLINE_RUN), "--port", port, "--", str(CLAUDE), "-p", prompt, "--output-format", "json",
         "--max-turns", "4", *args],
        capture_output=True, text=True, timeout=240, cwd=tmp_path / "work", env=env, stdin=subprocess.DEVNULL)


def rows(live) -> tuple[list[SpendRow], list[AuditEvent]]:
    async def read() -> tuple[list[SpendRow], list[AuditEvent]]:
        await live.services.spend.flush()
        async with live.services.db.session() as s:
            spent = list((await s.execute(select(SpendRow).order_by(SpendRow.id))).scalars())
            audit = list((await s.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars())
        return spent, audit

    return live.call(read())


def read_the_note(live, up, tmp_path: Path, word: str) -> dict:
    """Script ``up`` (a Read of note.txt, then the answer), run Claude Code, and
    return what it printed, checked to be the scripted answer."""
    work = tmp_path / "work"
    work.mkdir()
    note = work / "note.txt"
    note.write_text(f"the magic word is {word}\n")
    answer = f"The note says the magic word is {word}."
    up.enqueue(Behaviour(tool_calls=[SimToolCall("Read", {"file_path": str(note)})]), Behaviour(text=answer))
    proc = claude(live, tmp_path, "Read note.txt and tell me the magic word.")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    printed = json.loads(proc.stdout)
    assert printed["type"] == "result" and printed["is_error"] is False, printed
    assert printed["result"] == answer and printed["num_turns"] >= 2
    return printed


def test_claude_code_reads_a_file_through_warden_and_answers(live, admin, anthropic_up, tmp_path) -> None:
    add_credential(admin, "anthropic", anthropic_up)
    printed = read_the_note(live, anthropic_up, tmp_path, "warden-claude-42")
    session = printed["session_id"]
    # What reached the provider: Claude Code's tools, then the file's real content as a tool result.
    calls = [r for r in anthropic_up.requests if r.path == "/v1/messages"]
    first = next(r for r in calls if any(t.get("name") == "Read" for t in r.body.get("tools") or []))
    last = calls[-1]
    results = [b for m in last.body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert results and "warden-claude-42" in json.dumps(results[-1])
    assert "anthropic-beta" in first.headers and first.headers["anthropic-version"] == "2023-06-01"
    assert first.headers["x-api-key"] != ADMIN_KEY  # Warden's upstream key, never the client's
    # Warden's ledger: every call priced, on the Anthropic deployment, under Claude Code's session.
    spent, audit = rows(live)
    served = [r for r in spent if r.status == "ok"]
    assert len(served) >= 2 and all(r.provider == "anthropic" and r.cost_usd > 0 for r in served)
    assert {r.session_id for r in served} == {session}
    usage = admin.get("/api/usage", params={"group_by": "session"}).json()
    assert {row["group"] for row in usage["rows"]} == {session}
    assert any(e.action == "byok.create" for e in audit)


def test_claude_code_on_an_openai_only_workspace(live, admin, openai_up, tmp_path) -> None:
    """No Anthropic key at all: the unserved ``claude-*`` default goes to ``auto``; the
    Anthropic-only betas and fields are dropped and named, never refused."""
    add_credential(admin, "openai", openai_up)
    printed = read_the_note(live, openai_up, tmp_path, "warden-openai-7")
    last = [r for r in openai_up.requests if r.path == "/v1/chat/completions"][-1]
    results = [m for m in last.body["messages"] if m["role"] == "tool"]
    assert results and "warden-openai-7" in str(results[-1]["content"])
    spent, _ = rows(live)
    served = [r for r in spent if r.status == "ok"]
    assert len(served) >= 2 and {r.provider for r in served} == {"openai"}
    assert {r.session_id for r in served} == {printed["session_id"]}

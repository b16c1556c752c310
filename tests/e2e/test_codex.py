"""Codex CLI (``@openai/codex``, pinned in ``tests/clients/package.json``) through
Warden's Responses API: ``codex exec`` with its model provider pointed at a live
Warden, inside ``offline-run`` (loopback only), analytics and update checks off.
The simulator scripts the model: a shell command first, then the answer; Codex
really runs the command and sends its output back."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.app import ADMIN_KEY
from tests.support.upstreams import add_credential
from warden.store.models import SpendRow
from warden.testing.upstream import Behaviour, SimToolCall

REPO = Path(__file__).resolve().parents[2]
CODEX = REPO / "tests" / "clients" / "node_modules" / ".bin" / "codex"
OFFLINE_RUN = REPO.parent / "shared" / "tools" / "offline-run"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                       reason="offline-run needs root and unshare (CI has both)"),
    pytest.mark.skipif(not CODEX.exists(), reason="npm ci --prefix tests/clients installs Codex (.ci/run does)"),
]

# The README's "Use with Codex" configuration, with the test's port.
CONFIG = """\
model = "coding"
model_provider = "warden"
web_search = "disabled"
check_for_update_on_startup = false

[model_providers.warden]
name = "Warden"
base_url = "{url}/v1"
env_key = "WARDEN_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[otel]
exporter = "none"
"""


def codex_exec(live, tmp_path: Path, prompt: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(CONFIG.format(url=live.url))
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home / ".codex"),
           "WARDEN_API_KEY": ADMIN_KEY, "NO_COLOR": "1", "RUST_LOG": "error"}
    port = live.url.rsplit(":", 1)[1]
    return subprocess.run(
        [str(OFFLINE_RUN), "--port", port, "--", str(CODEX), "exec", "--skip-git-repo-check",
         "--sandbox", "read-only", prompt],
        capture_output=True, text=True, timeout=240, cwd=work, env=env, stdin=subprocess.DEVNULL)


def test_codex_runs_a_shell_command_through_warden_and_answers(live, admin, openai_up, tmp_path) -> None:
    add_credential(admin, "openai", openai_up)
    admin.put("/api/model-groups/coding", json={"members": ["openai/gpt-4o-mini"]})
    openai_up.enqueue(
        Behaviour(tool_calls=[SimToolCall("exec_command", {"cmd": "echo warden-codex-$((6*7))"})]),
        Behaviour(text="The command printed warden-codex-42 and nothing else."))
    proc = codex_exec(live, tmp_path, "Run `echo warden-codex-$((6*7))` and tell me what it printed.")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # What Codex printed: the command it ran and the model's answer.
    assert "echo warden-codex-$((6*7))" in out, out[-4000:]
    assert "The command printed warden-codex-42 and nothing else." in proc.stdout, out[-4000:]
    # What reached the provider: Codex's tools as functions, then the command's real output.
    first, second = (r.body for r in openai_up.requests[-2:])
    assert "exec_command" in {t["function"]["name"] for t in first["tools"]}
    results = [m for m in second["messages"] if m["role"] == "tool"]
    assert results and "warden-codex-42" in str(results[-1]["content"])

    async def rows() -> list[SpendRow]:
        await live.services.spend.flush()
        async with live.services.db.session() as s:
            return list((await s.execute(select(SpendRow).order_by(SpendRow.id))).scalars())

    spent = live.call(rows())
    assert [(r.provider, r.model, r.status) for r in spent] == [("openai", "gpt-4o-mini", "ok")] * 2
    assert all(r.cost_usd > 0 and r.input_tokens > 0 for r in spent)

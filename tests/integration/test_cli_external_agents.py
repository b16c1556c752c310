"""``warden agents create NAME --external`` and ``warden keys create --name N --agent A``
in both of the CLI's modes: on the database directly (no server), and through a
running server's API (``WARDEN_URL``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.app import ADMIN_KEY, LiveWarden
from warden.cli import app
from warden.config import load_settings

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    assert invoke("migrate").exit_code == 0
    return tmp_path / "data"


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveWarden]:
    server = LiveWarden(load_settings(data_dir=tmp_path / "server", admin_key=ADMIN_KEY,
                                      access_log=False)).start()
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WARDEN_URL", server.url)
    monkeypatch.setenv("WARDEN_KEY", ADMIN_KEY)
    monkeypatch.setenv("COLUMNS", "200")
    yield server
    server.stop()


def _create_and_bind(through_server: bool) -> tuple[dict, dict, str]:
    r = invoke("agents", "create", "claude-code", "--external")
    assert r.exit_code == 0, r.output
    assert "created agent claude-code" in r.stdout and "external" in " ".join(r.stdout.split())
    assert ("acting on the database directly" in r.stderr) is not through_server
    (agent,) = [a for a in json.loads(invoke("agents", "list", "--json").stdout) if a["name"] == "claude-code"]
    assert agent["kind"] == "external"
    assert "external" in invoke("agents", "list").stdout

    r = invoke("keys", "create", "--name", "cc", "--agent", "claude-code")
    assert r.exit_code == 0, r.output
    raw = r.stdout.strip().splitlines()[-1]
    assert raw.startswith("wk-") and f"bound to agent {agent['id']}" in " ".join(r.stderr.split())
    (key,) = [k for k in json.loads(invoke("keys", "list", "--json").stdout) if k["name"] == "cc"]
    assert (key["agent_id"], key["role"]) == (agent["id"], "member")
    assert agent["id"] in invoke("keys", "list").stdout

    refused = invoke("keys", "create", "--name", "x", "--agent", "nobody")
    assert refused.exit_code == 1 and "no agent 'nobody'" in refused.stderr
    assert "x" not in {k["name"] for k in json.loads(invoke("keys", "list", "--json").stdout)}
    return agent, key, raw


def test_on_the_database_directly(direct: Path) -> None:
    agent, key, raw = _create_and_bind(through_server=False)
    hosted = invoke("agents", "create", "helper")
    assert hosted.exit_code == 0 and "external" not in hosted.stdout
    usage = invoke("usage", "--group-by", "agent", "--json")
    assert usage.exit_code == 0 and json.loads(usage.stdout) == []


def test_through_the_server(live: LiveWarden) -> None:
    agent, key, raw = _create_and_bind(through_server=True)
    r = httpx.get(f"{live.url}/api/agents/{agent['id']}", headers={"authorization": f"Bearer {raw}"}, timeout=30)
    assert r.status_code == 200 and r.json()["kind"] == "external"
    assert invoke("usage", "--group-by", "agent").exit_code == 0
    bad = invoke("usage", "--group-by", "agents")
    assert bad.exit_code == 2 and "session or agent" in bad.stderr

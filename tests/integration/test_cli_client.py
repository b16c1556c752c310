"""The CLI as a client of a running server (``WARDEN_URL``, the key from ``WARDEN_KEY``):
management commands go through the API, tables fit 80 columns without cutting ids,
``--json``; and without a server: one line saying the database is used directly,
or a refusal that names the data directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.agents import parse_sse
from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.upstreams import UPSTREAM_KEYS
from warden import __version__
from warden.cli import app
from warden.config import load_settings
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveWarden]:
    server = LiveWarden(load_settings(data_dir=tmp_path / "server", admin_key=ADMIN_KEY,
                                      access_log=False)).start()
    # The CLI's own data directory is another, empty one: it must not be touched.
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WARDEN_URL", server.url)
    monkeypatch.setenv("WARDEN_KEY", ADMIN_KEY)
    monkeypatch.setenv("COLUMNS", "80")
    yield server
    server.stop()
    assert not (tmp_path / "elsewhere").exists()


@pytest.fixture
def up() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as server:
        yield server


def test_version_and_help_show_no_bool_metavar() -> None:
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"warden {__version__}"
    r = invoke("--help")
    assert r.exit_code == 0 and "<bool>" not in r.stdout and "chat" in r.stdout and "status" in r.stdout


def test_keys_workspaces_byok_and_usage_over_http(live: LiveWarden, up: UpstreamServer) -> None:
    r = invoke("keys", "create", "--name", "ci", "--role", "admin", "--budget", "5/day")
    assert r.exit_code == 0, r.output
    raw = r.stdout.strip().splitlines()[-1]
    assert raw.startswith("wk-") and "directly" not in r.stderr
    listed = json.loads(invoke("keys", "list", "--json").stdout)
    (ci,) = [k for k in listed if k["name"] == "ci"]
    assert invoke("keys", "revoke", ci["id"]).stdout.strip() == f"revoked {ci['id']} (ci)"
    assert "created workspace acme" in invoke("workspaces", "create", "acme").stdout
    assert "acme" in invoke("workspaces", "list").stdout

    r = invoke("byok", "add", "openai", "--key", "-", "--base-url", up.base_url, "--model", "gpt-4o-mini",
               input=UPSTREAM_KEYS["openai"] + "\n")
    assert r.exit_code == 0, r.output
    assert UPSTREAM_KEYS["openai"] not in r.output
    (cred,) = json.loads(invoke("byok", "list", "--json").stdout)
    assert cred["provider"] == "openai" and cred["status"] == "active"
    tested = invoke("byok", "test", cred["id"])
    assert tested.exit_code == 0 and tested.stdout.startswith("ok (")

    r = httpx.post(f"{live.url}/v1/chat/completions", headers={"authorization": f"Bearer {ADMIN_KEY}"},
                   json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 200, r.text
    usage = invoke("usage", "--group-by", "provider")
    assert usage.exit_code == 0 and "openai" in usage.stdout and "requests" in usage.stdout
    (row,) = json.loads(invoke("usage", "--json").stdout)
    assert row["requests"] == 1 and row["group"] == "openai/gpt-4o-mini"

    explained = invoke("route", "explain", "hello")
    assert explained.exit_code == 0 and "openai/gpt-4o-mini" in explained.stdout
    assert json.loads(invoke("route", "explain", "hello", "--json").stdout)["steps"][0]["provider"] == "openai"
    models = json.loads(invoke("models", "list", "--json").stdout)
    assert {"auto", "openai/gpt-4o-mini"} <= {m["id"] for m in models}
    assert "gpt-4o-mini" in invoke("models", "list").stdout

    assert invoke("groups", "set", "cheap", "openai/gpt-4o-mini").stdout.strip() == \
        "group cheap: openai/gpt-4o-mini"
    assert "cheap" in invoke("groups", "list").stdout
    assert invoke("groups", "remove", "cheap").exit_code == 0
    assert json.loads(invoke("groups", "list", "--json").stdout) == []
    removed = invoke("byok", "remove", cred["id"])
    assert removed.exit_code == 0 and f"removed {cred['id']}" in removed.stdout


def test_agents_mcp_servers_approvals_and_runs(live: LiveWarden, up: UpstreamServer) -> None:
    r = invoke("agents", "create", "careful", "--tool", "current_time", "--tool-level", "current_time=2")
    assert r.exit_code == 0 and "created agent careful" in r.stdout
    assert invoke("agents", "create", "x", "--tool-level", "current_time=9").exit_code == 2
    shown = json.loads(invoke("agents", "show", "careful").stdout)
    assert shown["tool_levels"] == {"current_time": 2}

    r = invoke("agents", "mcp", "add", "careful", "docs", "--url", "https://mcp.example.com/mcp",
               "--header", "authorization=Bearer sk-mcp-secret-0123456789", "--tool-level", "search=1")
    assert r.exit_code == 0 and "MCP server docs set (1 in all)" in r.stdout
    r = invoke("agents", "mcp", "add", "careful", "git", "--command", "mcp-git")
    assert r.exit_code == 1 and "WARDEN_MCP_STDIO_ALLOW" in r.stderr
    assert invoke("agents", "mcp", "add", "careful", "both").exit_code == 2
    (server,) = json.loads(invoke("agents", "mcp", "list", "careful", "--json").stdout)
    assert server["url"] == "https://mcp.example.com/mcp" and server["tool_levels"] == {"search": 1}
    assert "sk-mcp-secret-0123456789" not in json.dumps(server)
    assert "docs" in invoke("agents", "mcp", "list", "careful").stdout
    assert json.loads(invoke("agents", "list", "--json").stdout)[-1]["mcp"] == ["docs"]
    assert invoke("agents", "mcp", "remove", "careful", "docs").exit_code == 0
    r = invoke("agents", "mcp", "remove", "careful", "docs")
    assert r.exit_code == 1 and "no MCP server named 'docs'" in r.stderr

    httpx.post(f"{live.url}/api/byok", headers={"authorization": f"Bearer {ADMIN_KEY}"}, json={
        "provider": "openai", "api_key": UPSTREAM_KEYS["openai"], "base_url": up.base_url,
        "models": [{"id": "gpt-4o-mini"}]}).raise_for_status()
    up.enqueue(Behaviour(tool_calls=[SimToolCall("current_time", {"timezone": "UTC"})]))
    r = httpx.post(f"{live.url}/api/chat/stream", headers={"authorization": f"Bearer {ADMIN_KEY}"},
                   json={"agent_id": "careful", "message": "time?"}, timeout=30)
    run_id = parse_sse(r.content)[0]["run_id"]
    listed = invoke("approvals", "list")
    assert listed.exit_code == 0, listed.output
    (approval,) = json.loads(invoke("approvals", "list", "--json").stdout)
    # 80 columns: every id whole (columns dropped instead, and named).
    assert approval["id"] in listed.stdout and run_id in listed.stdout
    assert "not shown at this width" in listed.stderr
    runs = json.loads(invoke("runs", "list", "--status", "paused", "--json").stdout)
    assert [x["id"] for x in runs] == [run_id]
    assert run_id in invoke("runs", "list").stdout
    assert json.loads(invoke("runs", "show", run_id).stdout)["status"] == "paused"
    r = invoke("runs", "cancel", run_id, "--reason", "not today")
    assert r.exit_code == 0 and f"run {run_id} cancelled" in r.stdout
    r = invoke("approvals", "approve", approval["id"])
    assert r.exit_code == 1 and "error:" in r.stderr  # closed with the run


def test_status_and_the_key_hints(live: LiveWarden, monkeypatch: pytest.MonkeyPatch) -> None:
    r = invoke("status")
    assert r.exit_code == 0, r.output
    assert f"server          {live.url} (from WARDEN_URL)" in r.stdout
    assert "database        sqlite: ok" in r.stdout and "state           memory: ok" in r.stdout
    assert "none: add one with warden byok add PROVIDER --key -" in r.stdout
    report = json.loads(invoke("status", "--json").stdout)
    assert report["server"] == live.url and report["credentials"] == [] and report["budgets"] == []
    r = invoke("keys", "list", "--workspace", "acme")
    assert r.exit_code == 2 and "an admin key of workspace 'acme'" in r.stderr
    monkeypatch.setenv("WARDEN_KEY", "wk-not-a-real-key-0123456789abcdef")
    r = invoke("keys", "list")
    assert r.exit_code == 1 and "export WARDEN_KEY=" in r.stderr and "invalid_api_key" in r.stderr
    monkeypatch.setenv("WARDEN_URL", "http://127.0.0.1:9")
    r = invoke("keys", "list")
    assert r.exit_code == 1 and "WARDEN_URL=http://127.0.0.1:9: no Warden answers there" in r.stderr


def test_without_a_server_a_command_refuses_to_create_a_database(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("WARDEN_DATA_DIR", str(data))
    for args in (["byok", "list"], ["keys", "create", "--name", "x"], ["approvals", "list"]):
        r = invoke(*args)
        assert r.exit_code == 1, r.output
        assert f"no Warden database in {data}" in r.stderr and "warden init" in r.stderr
    assert not (data / "warden.db").exists()
    r = invoke("status")
    assert r.exit_code == 1 and "not running" in r.stdout and "database        missing" in r.stdout
    r = invoke("chat", "hi")
    assert r.exit_code == 1 and "no Warden server is running" in r.stderr

    r = invoke("init")
    assert r.exit_code == 0, r.output
    assert f"bootstrapping the database directly: {data / 'warden.db'}" in r.stderr
    assert "admin key in" in r.stdout and "(new)" in r.stdout and "next: warden serve" in r.stdout
    # A stale address file (a killed server) is not a server: the database is used, and that is said.
    (data / "server.json").write_text('{"url": "http://127.0.0.1:9", "pid": 1}')
    r = invoke("keys", "list", "--json")
    assert r.exit_code == 0
    assert r.stderr.startswith(f"no server running for {data}; acting on the database directly:")
    assert [k["name"] for k in json.loads(r.stdout)] == ["bootstrap-admin"]
    r = invoke("status")
    assert r.exit_code == 1 and "database        present" in r.stdout


def test_the_root_page_leads_to_the_console_and_its_sign_in_says_where_the_key_is(live: LiveWarden) -> None:
    r = httpx.get(f"{live.url}/")
    assert r.status_code == 307 and r.headers["location"] == "/ui"  # the welcome page: tests/unit/api/test_root.py
    r = httpx.get(f"{live.url}/ui", follow_redirects=True)
    assert r.status_code == 200 and r.url.path == "/ui/login"
    assert "admin.key" in r.text and "data directory" in r.text

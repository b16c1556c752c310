"""``warden models alias add|list|remove`` as a client of a running server, and the
aliases it makes routing real requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.upstreams import UPSTREAM_KEYS, add_credential
from warden.cli import app
from warden.config import load_settings
from warden.testing.upstream import UpstreamServer

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveWarden]:
    server = LiveWarden(load_settings(data_dir=tmp_path / "server", admin_key=ADMIN_KEY,
                                      access_log=False)).start()
    monkeypatch.setenv("WARDEN_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WARDEN_URL", server.url)
    monkeypatch.setenv("WARDEN_KEY", ADMIN_KEY)
    monkeypatch.setenv("COLUMNS", "80")
    yield server
    server.stop()


def test_alias_commands_route_a_hard_coded_name(live: LiveWarden) -> None:
    with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as up, \
            httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        add_credential(admin, "openai", up, models=[{"id": "gpt-4o-mini"}])
        r = invoke("models", "alias", "add", "gpt-5*", "openai/gpt-4o-mini")
        assert r.exit_code == 0 and r.stdout.strip() == "alias gpt-5* -> openai/gpt-4o-mini"
        assert "gpt-5*" in invoke("models", "alias", "list").stdout
        (row,) = json.loads(invoke("models", "alias", "list", "--json").stdout)
        assert (row["pattern"], row["target"]) == ("gpt-5*", "openai/gpt-4o-mini")
        r = admin.post("/v1/chat/completions", json={"model": "gpt-5.5-codex",
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and up.last.body["model"] == "gpt-4o-mini"
        assert invoke("models", "alias", "remove", "gpt-5*").stdout.strip() == "alias gpt-5* removed"
        assert json.loads(invoke("models", "alias", "list", "--json").stdout) == []
        r = admin.post("/v1/chat/completions", json={"model": "gpt-5.5-codex",
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"

"""Over a real server: the chat WebSocket's ``approval.required`` frame carries the
approval's id, so a client decides it without a lookup, and the same id reaches a
webhook receiver."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support.agents import EchoTool, connect_provider, types_of
from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.webhooks import receiver, until
from warden.config import load_settings
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def up():
    with UpstreamServer("openai") as server:
        yield server


@pytest.fixture
def live(data_dir: Path, up: UpstreamServer):
    server = LiveWarden(load_settings(data_dir=data_dir, admin_key=ADMIN_KEY, access_log=False,
                                      egress_allow="127.0.0.1", webhook_poll_interval=0.05)).start()
    server.call(connect_provider(server.services, up))
    server.echo = EchoTool()
    server.services.tools.register(server.echo)
    yield server
    server.stop()


async def _until(ws, *types: str) -> list[dict]:
    events = []
    while not events or events[-1]["type"] not in types:
        events.append(orjson.loads(await asyncio.wait_for(ws.recv(), 30)))
    return events


async def test_the_websocket_event_names_the_approval_to_decide(live: LiveWarden, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(tool_calls=[SimToolCall("echo", {"text": "memo"})]), Behaviour(text="memo sent"))
    async with receiver() as rec, httpx.AsyncClient(base_url=live.url, headers=AUTH) as c, \
            connect(f"ws://127.0.0.1:{live.port}/api/chat/ws", additional_headers=AUTH) as ws:
        hook = await c.post("/api/webhooks", json={"url": rec.url, "events": ["approval.required"]})
        assert hook.status_code == 201, hook.text
        agent = (await c.post("/api/agents", json={"name": "drafter", "tools": ["echo"],
                                                   "tool_levels": {"echo": 2}})).json()
        assert orjson.loads(await ws.recv())["type"] == "ready"
        await ws.send(orjson.dumps({"agent_id": agent["id"], "message": "send the memo"}).decode())
        turn = await _until(ws, "run.paused", "run.failed")
        required = next(e for e in turn if e["type"] == "approval.required")
        # Decided straight from the event: no lookup of the approval first.
        r = await c.post(f"/api/approvals/{required['approval_id']}", json={"decision": "approve"})
        listed = (await c.get("/api/approvals", params={"run_id": required["run_id"]})).json()
        [sent] = await until(lambda: rec.of_type("approval.required"))
    assert types_of(turn) == ["run.started", "tool.call", "approval.required", "run.paused"]
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    assert [a["id"] for a in listed] == [required["approval_id"]]
    assert turn[-1]["approval_ids"] == [required["approval_id"]]
    assert sent.json["data"]["approval_id"] == required["approval_id"]
    await until(lambda: live.echo.calls)
    assert live.echo.calls == [{"text": "memo"}]


def test_the_cli_manages_webhooks_through_the_server(live: LiveWarden, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import time

    from typer.testing import CliRunner

    from warden.cli import app as cli_app

    monkeypatch.setenv("WARDEN_URL", live.url)
    monkeypatch.setenv("WARDEN_KEY", ADMIN_KEY)
    runner = CliRunner()
    added = runner.invoke(cli_app, ["webhooks", "add", "http://127.0.0.1:1/hook", "-e", "approval.required",
                                    "-e", "agent.tier_changed"])
    assert added.exit_code == 0, added.output
    assert "acting on the database directly" not in added.output and "secret: whsec_" in added.output
    hook_id = re.search(r"webhook (wh_\w+) ->", added.output).group(1)
    listed = runner.invoke(cli_app, ["webhooks", "list", "--json"])
    assert hook_id in listed.output and "approval.required" in listed.output and "whsec_" not in listed.output
    assert runner.invoke(cli_app, ["webhooks", "test", hook_id]).exit_code == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # nothing listens on port 1: the server's worker retries
        log = runner.invoke(cli_app, ["webhooks", "deliveries", hook_id, "--json"])
        if '"attempts": 1' in log.output or '"attempts": 2' in log.output:
            break
        time.sleep(0.1)
    assert log.exit_code == 0 and "webhook.test" in log.output and '"last_status": null' in log.output
    refused = runner.invoke(cli_app, ["webhooks", "add", "http://10.1.2.3/x", "-e", "*"])
    assert refused.exit_code == 1 and "refused" in refused.output and "private" in refused.output
    removed = runner.invoke(cli_app, ["webhooks", "remove", hook_id])
    assert removed.exit_code == 0 and f"webhook {hook_id} removed" in removed.output
    assert runner.invoke(cli_app, ["webhooks", "remove", hook_id]).exit_code == 1

"""``warden chat`` against a live Warden over the loopback simulator: streaming (agent
and model), a tool call with its governance decision, an approval given inline, and
continuing a session; standard input as part of the message."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from tests.support.app import ADMIN_KEY, LiveWarden
from tests.support.upstreams import UPSTREAM_KEYS, add_credential
from warden.cli import app
from warden.config import load_settings
from warden.testing.upstream import DEFAULT_TEXT, Behaviour, SimToolCall, UpstreamServer

runner = CliRunner()
MODELS = [{"id": "gpt-4o-mini", "input_price": 0.15, "output_price": 0.6}]


@pytest.fixture
def live(tmp_path) -> Iterator[LiveWarden]:  # noqa: ANN001
    server = LiveWarden(load_settings(data_dir=tmp_path / "server", admin_key=ADMIN_KEY,
                                      access_log=False)).start()
    yield server
    server.stop()


@pytest.fixture
def up() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEYS["openai"]) as server:
        yield server


@pytest.fixture
def admin(live: LiveWarden, up: UpstreamServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("WARDEN_URL", live.url)
    monkeypatch.setenv("WARDEN_KEY", ADMIN_KEY)
    monkeypatch.setenv("COLUMNS", "100")
    with httpx.Client(base_url=live.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as c:
        add_credential(c, "openai", up, models=MODELS)
        yield c


def chat(*args: str, input: str | None = None):
    return runner.invoke(app, ["chat", *args], input=input, catch_exceptions=False)


def test_one_shot_with_a_model_streams_and_prints_the_cost(admin: httpx.Client, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="Paris is the capital.", chunks=4))
    r = chat("-m", "auto", "Capital of France?")
    assert r.exit_code == 0, r.output
    assert r.stdout == "Paris is the capital.\n"
    assert "gpt-4o-mini" in r.stderr and " in / " in r.stderr and "$0.0000" in r.stderr
    body = up.requests[-1].body
    assert body["stream"] is True and body["messages"][-1]["content"] == "Capital of France?"


def test_piped_stdin_is_appended_to_the_message(admin: httpx.Client, up: UpstreamServer) -> None:
    r = chat("-m", "auto", "summarise", input="line one\nline two\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == DEFAULT_TEXT
    assert up.requests[-1].body["messages"][-1]["content"] == "summarise\n\nline one\nline two\n"


def test_agent_tool_call_shows_its_decision(admin: httpx.Client, up: UpstreamServer) -> None:
    r = admin.post("/api/agents", json={"name": "clock", "tools": ["current_time"]})
    assert r.status_code == 201, r.text
    up.enqueue(Behaviour(tool_calls=[SimToolCall("current_time", {"timezone": "UTC"})]),
               Behaviour(text="It is noon."))
    r = chat("--agent", "clock", "What time is it?")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "It is noon."
    assert 'tool current_time({"timezone":"UTC"}) level 1 → allow: ' in r.stderr
    assert "result current_time:" in r.stderr and "$" in r.stderr


def test_a_paused_run_is_approved_inline_and_goes_on(admin: httpx.Client, up: UpstreamServer) -> None:
    r = admin.post("/api/agents", json={"name": "careful", "tools": ["current_time"],
                                        "tool_levels": {"current_time": 2}})
    assert r.status_code == 201, r.text
    up.enqueue(Behaviour(tool_calls=[SimToolCall("current_time", {"timezone": "UTC"})]),
               Behaviour(text="Approved and done."))
    # Interactive: the first line is the turn, the next one answers the approval prompt.
    r = chat("--agent", "careful", input="What time is it?\ny\n")
    assert r.exit_code == 0, r.output
    assert "→ approve" in r.stderr and "paused: current_time" in r.stderr
    assert "approved by" in r.stderr
    assert "Approved and done." in r.stdout
    (approval,) = admin.get("/api/approvals", params={"status": "approved"}).json()
    assert approval["tool"] == "current_time"
    # The tool ran in the server and its result reached the model.
    assert '"timezone":"UTC"' in up.requests[-1].body["messages"][-1]["content"].replace(" ", "")


def test_without_anyone_to_ask_a_pause_says_how_to_decide(admin: httpx.Client, up: UpstreamServer) -> None:
    r = admin.post("/api/agents", json={"name": "careful", "tools": ["current_time"],
                                        "tool_levels": {"current_time": 2}})
    assert r.status_code == 201, r.text
    up.enqueue(Behaviour(tool_calls=[SimToolCall("current_time", {"timezone": "UTC"})]))
    r = chat("--agent", "careful", "What time is it?")  # one-shot, no terminal
    assert r.exit_code == 3, r.output
    (pending,) = admin.get("/api/approvals", params={"status": "pending"}).json()
    assert f"warden approvals approve {pending['id']}" in r.stderr


def test_continue_uses_the_latest_session(admin: httpx.Client, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="First answer."), Behaviour(text="Second answer."))
    assert chat("My name is Ada.").exit_code == 0
    r = chat("-c", "What is my name?")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "Second answer."
    (session,) = admin.get("/api/sessions").json()
    assert session["message_count"] == 4
    contents = [m["content"] for m in up.requests[-1].body["messages"]]
    assert "My name is Ada." in contents and "First answer." in contents
    r = chat("-m", "auto", "-c", "x")
    assert r.exit_code == 2 and "keeps no session" in r.stderr


def test_interactive_model_chat_keeps_the_conversation(admin: httpx.Client, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(text="One."), Behaviour(text="Two."))
    r = chat("-m", "auto", input="first\nsecond\n\n")
    assert r.exit_code == 0, r.output
    assert r.stdout == "One.\nTwo.\n"
    assert [m["content"] for m in up.requests[-1].body["messages"]] == ["first", "One.", "second"]


def test_errors_are_one_line_naming_the_next_step(admin: httpx.Client, up: UpstreamServer) -> None:
    for cred in admin.get("/api/byok").json():
        admin.delete(f"/api/byok/{cred['id']}")
    r = chat("-m", "auto", "hi")
    assert r.exit_code == 1
    assert "add one with `warden byok add PROVIDER --key -`" in r.stderr and "Traceback" not in r.output
    r = chat("--agent", "ghost", "hi")
    assert r.exit_code == 1 and "ghost" in r.stderr


def test_a_failed_run_is_one_line_and_exit_1(admin: httpx.Client, up: UpstreamServer) -> None:
    up.enqueue(Behaviour(status=400, error_message="the upstream refused this"))
    r = chat("--agent", "assistant", "hi")
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("failed: ") and "(run run_" in r.stderr and "Traceback" not in r.output
    (session,) = admin.get("/api/sessions").json()
    up.enqueue(Behaviour(text="Back again."))
    r = chat("--session", session["id"], "again")
    assert r.exit_code == 0 and r.stdout.strip() == "Back again."


def test_model_and_agent_together_are_refused(admin: httpx.Client) -> None:
    r = chat("-m", "auto", "--agent", "assistant", "hi")
    assert r.exit_code == 2 and "choose one" in r.stderr

"""The fault suite, runs part: a real ``warden serve`` is SIGKILLed while a run's tool
is executing (a slow HTTP fetch), started again on the same data, and then the run
is taken over by the new process once the dead one's lease expires: the tool that
may have half-run is reported to the model as interrupted and is not fetched a
second time (at most once), the run completes, and its session takes new turns.
Both for a tool the policy allowed and for one a human approved."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.serve import WardenProcess
from warden.testing.upstream import Behaviour, SimToolCall, UpstreamServer

UPSTREAM_KEY = "sk-up-openai-0123456789"


class SlowSite:
    """A loopback site whose every GET hangs until released; counts the GETs."""

    def __init__(self) -> None:
        self.hits = 0
        self.release = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                site.hits += 1
                site.release.wait(60)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"slow page")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/page"

    def __enter__(self) -> SlowSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer("openai", api_key=UPSTREAM_KEY) as up:
        yield up


@pytest.fixture
def site() -> Iterator[SlowSite]:
    with SlowSite() as s:
        yield s


def _wait(predicate, timeout: float = 30.0, what: str = "condition") -> Any:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("how", ["allowed", "approved"])
def test_sigkill_during_a_tool_then_restart_takes_the_run_over(
        tmp_path: Path, upstream: UpstreamServer, site: SlowSite, how: str) -> None:
    server = WardenProcess(tmp_path / "data", {
        "WARDEN_EGRESS_ALLOW": "127.0.0.1", "WARDEN_RUN_LEASE": "2", "WARDEN_RUN_SWEEP_INTERVAL": "0.3"})
    server.start()
    try:
        with server.client() as admin:
            r = admin.post("/api/byok", json={"provider": "openai", "label": "main", "api_key": UPSTREAM_KEY,
                                              "base_url": upstream.base_url, "models": [{"id": "gpt-4o-mini"}]})
            assert r.status_code == 201, r.text
            levels = {"http_get": 2} if how == "approved" else {}  # student x draft = approve
            r = admin.post("/api/agents", json={"name": "fetcher", "tools": ["http_get"], "tool_levels": levels})
            assert r.status_code == 201, r.text
            upstream.enqueue(Behaviour(tool_calls=[SimToolCall("http_get", {"url": site.url})]),
                             Behaviour(text="carried on"))

            def chat() -> None:
                try:
                    with server.client() as c:
                        c.post("/api/chat", json={"agent_id": "fetcher", "message": "fetch it"})
                except httpx.HTTPError:  # the server may die under it: what matters is the run after
                    pass

            talker = threading.Thread(target=chat, daemon=True)
            talker.start()
            if how == "approved":
                pending = _wait(lambda: admin.get("/api/approvals", params={"status": "pending"}).json(),
                                what="the approval")
                r = admin.post(f"/api/approvals/{pending[0]['id']}", json={"decision": "approve"})
                assert r.status_code == 200, r.text
            _wait(lambda: site.hits >= 1, what="the tool to start")
            runs = admin.get("/api/runs").json()
            run_id = runs[0]["id"]
            assert runs[0]["owner"] and runs[0]["lease_expires_at"]
        server.kill()  # mid-tool: the fetch is in flight, nothing of the process is flushed
        assert server.proc is not None and server.proc.returncode == -9
        talker.join(10)
        server.start()
        with server.client() as admin:
            run = _wait(lambda: (lambda r: r if r["status"] in ("completed", "failed", "cancelled") else None)(
                admin.get(f"/api/runs/{run_id}").json()), what="the run to be taken over and end")
            events = admin.get(f"/api/runs/{run_id}/events").text
            stuck = admin.get("/api/runs", params={"stuck": "true"}).json()
            upstream.enqueue(Behaviour(text="free again"))
            nxt = admin.post("/api/chat", json={"session_id": run["session_id"], "message": "and now?"})
    finally:
        site.release.set()
        server.stop()
    assert run["status"] == "completed", run
    assert run["tool_calls"][0]["status"] == "interrupted"
    assert site.hits == 1  # at most once: the half-run fetch was not made again
    tool_message = next(m for m in upstream.requests[1].body["messages"] if m["role"] == "tool")
    assert "may or may not have taken effect" in tool_message["content"]
    assert "event: run.recovered" in events and "event: run.completed" in events
    assert stuck == []
    assert nxt.status_code == 200 and nxt.json()["message"]["content"] == "free again"

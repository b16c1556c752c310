"""The MCP gateway (``/mcp``): the latency Warden adds to an allowed tool call, and how
many held calls one instance keeps open at once without losing one.

    .venv/bin/python -m bench.mcp_gateway [--rounds 300] [--held 1000] [--write]

Layout as in ``bench/responses.py``: ``warden serve`` on core 0; the upstream MCP
server (``bench/mcp_upstream_proc.py``: the official SDK over streamable HTTP) and
this client on core 1. An external agent has that server as its (admin-configured,
trusted) upstream.

- Added latency: each round calls the upstream's read-only ``echo`` directly (one
  MCP session) and through Warden's ``/mcp`` with the agent's key (level 1:
  allowed at once; the gate records the decision and the outcome), in alternating
  order; the added latency is *through Warden - direct* within a round.
- Held calls: N calls of ``add`` (level 3: an intern agent needs a human's
  approval) with distinct arguments, all at once over one MCP client (one HTTP
  request each, held open by the gate); once all N approvals are pending they are
  approved over the API, and every call must come back with its own sum.

``--write`` replaces the section "MCP gateway" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from bench.procs import CAN_PIN, HOST, PY, ROOT, free_port, start, wait_port
from bench.report import replace_section
from bench.stats import Summary, summarize
from bench.targets import ADMIN_KEY, api, start_warden

SECTION = "## MCP gateway: added latency and held calls"


@dataclass
class Result:
    rounds: int
    direct: Summary
    through: Summary
    added: Summary
    errors: int
    held: int
    held_ok: int
    held_lost: int
    held_all_pending_s: float
    held_released_s: float


def _session_client(key: str | None, connections: int) -> httpx2.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=900.0),
                              limits=httpx2.Limits(max_connections=connections,
                                                   max_keepalive_connections=connections))


async def _open(stack: Any, url: str, key: str | None, connections: int = 4) -> ClientSession:
    client = await stack.enter_async_context(_session_client(key, connections))
    read, write = await stack.enter_async_context(streamable_http_client(url, http_client=client))
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


def _setup(port: int, upstream_url: str) -> tuple[str, str]:
    """An external intern agent with the bench upstream; (agent id, its key)."""
    server = {"name": "up", "transport": "http", "url": upstream_url}
    status, agent = api(port, "POST", "/api/agents", {"name": "bench-mcp", "kind": "external",
                                                      "mcp_servers": [server]})
    assert status == 201, agent
    status, body = api(port, "PUT", f"/api/agents/{agent['id']}/tier", {"tier": "intern", "reason": "bench set-up"})  # type: ignore[index]
    assert status == 200, body
    status, key = api(port, "POST", "/api/keys", {"name": "bench-mcp", "agent": agent["id"]})  # type: ignore[index]
    assert status == 201, key
    return agent["id"], key["key"]  # type: ignore[index]


async def _latency(direct: ClientSession, through: ClientSession, rounds: int,
                   warmup: int) -> tuple[list[float], list[float], int]:
    d_ms: list[float] = []
    w_ms: list[float] = []
    errors = 0
    for i in range(rounds + warmup):
        pair = [(direct, d_ms), (through, w_ms)]
        if i % 2:
            pair.reverse()
        took: dict[int, float] = {}
        for session, _ in pair:
            started = time.perf_counter()
            result = await session.call_tool("up__echo" if session is through else "echo", {"text": f"r{i}"})
            took[id(session)] = (time.perf_counter() - started) * 1000
            errors += bool(result.is_error)
        if i >= warmup:
            d_ms.append(took[id(direct)])
            w_ms.append(took[id(through)])
    return d_ms, w_ms, errors


def _approve_all(port: int, agent_id: str, n: int, deadline: float) -> int:
    approved: set[str] = set()

    def approve(approval_id: str) -> None:
        status, _ = api(port, "POST", f"/api/approvals/{approval_id}", {"decision": "approve"})
        if status == 200:
            approved.add(approval_id)

    with ThreadPoolExecutor(8) as pool:
        while len(approved) < n and time.monotonic() < deadline:
            status, listed = api(port, "GET", f"/api/approvals?status=pending&agent_id={agent_id}&limit=500")
            todo = [a["id"] for a in listed or [] if a["id"] not in approved]  # type: ignore[union-attr]
            if not todo:
                time.sleep(0.2)
                continue
            list(pool.map(approve, todo))
    return len(approved)


def _pending(port: int, agent_id: str) -> int:
    _, listed = api(port, "GET", f"/api/approvals?status=pending&agent_id={agent_id}&limit=500")
    return len(listed or [])  # type: ignore[arg-type]


async def _held(port: int, agent_id: str, key: str, n: int) -> tuple[int, int, float, float]:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        through = await _open(stack, f"http://{HOST}:{port}/mcp", key, connections=n + 16)
        started = time.monotonic()
        calls = [asyncio.create_task(through.call_tool("up__add", {"a": i, "b": 1})) for i in range(n)]
        # Pending once all N approvals exist (the list shows 500 at most: wait for that, then a beat).
        while await asyncio.to_thread(_pending, port, agent_id) < min(n, 500) and time.monotonic() - started < 300:
            await asyncio.sleep(0.5)
        all_pending = time.monotonic() - started
        await asyncio.to_thread(_approve_all, port, agent_id, n, time.monotonic() + 600)
        results = await asyncio.gather(*calls, return_exceptions=True)
        released = time.monotonic() - started
    ok = sum(1 for i, r in enumerate(results)
             if not isinstance(r, BaseException) and not r.is_error
             and "".join(getattr(b, "text", "") for b in r.content).strip() == str(i + 1))
    return ok, n - ok, all_pending, released


async def _measure(rounds: int, held: int) -> Result:
    from contextlib import AsyncExitStack

    logs = Path(tempfile.mkdtemp(prefix="warden-bench-mcp-"))
    up_port = free_port()
    upstream = start("mcp-upstream", [PY, "-m", "bench.mcp_upstream_proc", "--port", str(up_port)],
                     logs=logs, cpus="1")
    warden, port = start_warden(logs, logs / "data", cpus="0", access_log="false", egress_allow=HOST,
                                approval_hold="900", log_level="warning")
    try:
        wait_port(up_port, upstream)
        upstream_url = f"http://{HOST}:{up_port}/mcp"
        agent_id, key = _setup(port, upstream_url)
        async with AsyncExitStack() as stack:
            direct = await _open(stack, upstream_url, None)
            through = await _open(stack, f"http://{HOST}:{port}/mcp", key)
            d_ms, w_ms, errors = await _latency(direct, through, rounds, warmup=30)
        ok, lost, pending_s, released_s = await _held(port, agent_id, key, held) if held else (0, 0, 0.0, 0.0)
    finally:
        warden.stop()
        upstream.stop()
    added = [w - d for w, d in zip(w_ms, d_ms, strict=True)]
    return Result(rounds, summarize(d_ms), summarize(w_ms), summarize(added), errors, held, ok, lost,
                  pending_s, released_s)


def render(r: Result) -> str:
    pinned = "pinned (Warden core 0; upstream and client core 1)" if CAN_PIN else "not pinned"
    return "\n".join([
        SECTION, "",
        f"`python -m bench.mcp_gateway` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {pinned}; load average "
        f"{os.getloadavg()[0]:.1f} at the end (absolute figures move with the machine; the direct and "
        "through-Warden figures of one run compare). Method in `bench/mcp_gateway.py`: the official Python `mcp` client, an upstream "
        "MCP server on streamable HTTP (official SDK), an external agent's key on `/mcp` (stateless "
        "streamable HTTP: one HTTP request per call); the upstream session is pooled by Warden.", "",
        f"Allowed call (`echo`, level 1), {r.rounds} rounds after 30 warm-up, direct and through Warden "
        "alternating; added = through − direct within a round:", "",
        "| | median (ms) | p99 (ms) | IQR (ms) |",
        "|---|---|---|---|",
        f"| direct to the upstream | {r.direct.median:.2f} | {r.direct.p99:.2f} | {r.direct.iqr:.2f} |",
        f"| through Warden `/mcp` | {r.through.median:.2f} | {r.through.p99:.2f} | {r.through.iqr:.2f} |",
        f"| **added by Warden** | **{r.added.median:.2f}** | **{r.added.p99:.2f}** | {r.added.iqr:.2f} |",
        "", f"Errors: {r.errors}. The added time is the gate's work (an allowed level-1 call: its decision, "
        "outcome and both audit events written in one transaction after it ran, before the answer), the "
        "MCP framing of the extra hop (the SDK's per-request stateless transport and SSE) and the agent "
        "and tool lookup.", "",
        f"Held calls at once on one instance: {r.held} calls of a level-3 tool by an intern agent, all held "
        f"open; all pending after {r.held_all_pending_s:.1f} s; all approved over the API and answered after "
        f"{r.held_released_s:.1f} s: **{r.held_ok} answered with their own result, {r.held_lost} lost or "
        "errored**.", "",
    ])


# --- inside ``python -m bench.run`` (section "surfaces"): a wrapper, the measurement above as is.


def run(logs: Path, quick: bool, *, rounds: int | None = None, held: int | None = None) -> dict:
    """``_measure`` (its own upstream and Warden; ``logs`` unused: it keeps its own) as plain JSON."""
    from dataclasses import asdict

    from bench.served import stamp

    held = (200 if quick else 1000) if held is None else held
    result = asyncio.run(_measure(rounds or (100 if quick else 300), held))
    return {**stamp("python -m bench.run"), "result": asdict(result)}


def render_section(res: dict) -> str:
    """``render`` of a saved result, dated and loaded as when it was measured."""
    import re

    d = res["result"]
    text = render(Result(**{**d, **{k: Summary(**d[k]) for k in ("direct", "through", "added")}}))
    text = re.sub(r"`python -m bench\.mcp_gateway` on [^,]+ UTC", f"`{res['by']}` on {res['at']} UTC", text, count=1)
    return re.sub(r"load average [0-9.]+ at the end", f"load average {res['load']:.1f} at the end", text, count=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    report = render(asyncio.run(_measure(args.rounds, args.held)))
    print(report)
    if args.write:
        replace_section(report, ROOT / "BENCHMARKS.md")

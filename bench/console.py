"""What the web console costs ``/v1/*``: added latency of ``POST /v1/chat/completions``
with the console on, off, and on with a browser's live approvals inbox open.

    .venv/bin/python -m bench.console [--rounds 3000] [--write]

The same layout as ``bench/responses.py``: the simulator (``bench/upstream_proc.py``)
on core 1 with this client, each ``warden serve`` on core 0, one OpenAI credential
serving ``gpt-4o-mini``. Three servers: ``WARDEN_CONSOLE=false``, ``true``, and
``true`` serving an open SSE stream of the approvals inbox (``/ui/approvals/events``,
signed in like a browser), which polls the pending set every two seconds. One
request to each target per round, the order rotated each
round (:func:`bench.latency.added_latency`); added latency = through Warden - the
simulator directly, within a round. ``--write`` replaces the section "Console and
/v1 latency" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.clients import Target
from bench.latency import LatencyResult, added_latency
from bench.procs import CAN_PIN, HOST, ROOT
from bench.report import replace_section
from bench.targets import ADMIN_KEY, MODEL, UPSTREAM_KEY, add_credential, start_upstream, start_warden

SECTION = "## Console and /v1 latency"


def _open_inbox(port: int, stop: threading.Event) -> threading.Thread:
    """A signed-in browser's live inbox: an SSE stream held open (reconnected) until ``stop``."""

    def hold() -> None:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=None) as browser:
            form = browser.get("/ui/login").text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert csrf is not None
            browser.post("/ui/login", data={"api_key": ADMIN_KEY, "csrf_token": csrf.group(1)})
            while not stop.is_set():
                try:
                    with browser.stream("GET", "/ui/approvals/events") as events:
                        for _ in events.iter_lines():
                            if stop.is_set():
                                return
                except httpx.HTTPError:  # the server stopped at the end of the run
                    return

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def measure(rounds: int) -> list[LatencyResult]:
    logs = Path(tempfile.mkdtemp(prefix="warden-bench-console-"))
    upstream, up_port = start_upstream(logs, cpus="1")
    servers = {name: start_warden(logs, logs / name.replace(" ", "-"), cpus="0", name=name.replace(" ", "-"),
                                  access_log="false", console=console)
               for name, console in (("console off", "false"), ("console on", "true"),
                                     ("console on, inbox open", "true"))}
    stop = threading.Event()
    try:
        for _, port in servers.values():
            add_credential(port, up_port, models=[MODEL])
        inbox = _open_inbox(servers["console on, inbox open"][1], stop)
        model = f"openai/{MODEL}"
        results = added_latency(Target("direct", up_port, MODEL, key=UPSTREAM_KEY),
                                [Target(name, port, model, key=ADMIN_KEY) for name, (_, port) in servers.items()],
                                rounds=rounds, warmup=30, time_limit=300)
        stop.set()
        inbox.join(5)
        return results
    finally:
        for proc, _ in servers.values():
            proc.stop()
        upstream.stop()


def render(results: list[LatencyResult], rounds: int) -> str:
    by = {r.name: r for r in results}
    off = by.get("console off")
    rows = []
    for r in results:
        if r.name == "direct" or r.added_ms is None:
            continue
        vs_off = (f"{r.added_ms.median - off.added_ms.median:+.3f}"
                  if off is not None and off.added_ms is not None else "–")
        over = r.server_overhead_ms
        rows.append(f"| {r.name} | {r.latency_ms.median:.3f} | {r.added_ms.median:.3f} | {r.added_ms.iqr:.3f} | "
                    f"{vs_off} | {over.median if over else float('nan'):.3f} | {r.errors} |")
    pinned = "pinned (Warden core 0; simulator and client core 1)" if CAN_PIN else "not pinned"
    return "\n".join([
        SECTION, "",
        f"`python -m bench.console` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {pinned}; {rounds} rounds "
        "after 30 warm-up rounds. Method as in section 1 (added latency = through Warden − the simulator "
        "directly, in the same round). Three servers interleaved in one set of rounds: "
        "`WARDEN_CONSOLE=false`, `true`, and `true` while a signed-in browser holds the approvals inbox's "
        "live stream open (it reads the pending set every 2 s). The console's routes come after the "
        "gateway's and it adds no middleware, so `/v1/*` does the same work either way. Load average "
        f"{os.getloadavg()[0]:.1f} at the end.", "",
        "| server | through Warden median (ms) | added median (ms) | added IQR (ms) | vs console off (ms) "
        "| x-warden-overhead-ms median | errors |",
        "|---|---|---|---|---|---|---|",
        *rows, "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3000)    # ~25 s: the inbox polls a dozen times
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    report = render(measure(args.rounds), args.rounds)
    print(report)
    if args.write:
        replace_section(report, ROOT / "BENCHMARKS.md")

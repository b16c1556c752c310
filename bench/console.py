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

Page load (``run``, inside ``python -m bench.run`` on its Warden, or ``--pages``): a
signed-in browser's GET of console pages over one keep-alive connection each, beside
``/healthz`` (the server's smallest route) and a static asset of the console, one of each
per round, the order rotated each round; added = page - ``/healthz`` within a round.
``--pages --write`` replaces the section "Console page load".
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.clients import Target
from bench.latency import LatencyResult, added_latency
from bench.procs import CAN_PIN, HOST, ROOT
from bench.report import replace_section
from bench.served import Served, how, ratio, serving, simulator, stamp, start_servers, stop_all
from bench.stats import summarize
from bench.targets import ADMIN_KEY, MODEL, UPSTREAM_KEY

SECTION = "## Console and /v1 latency"
PAGES_SECTION = "## Console page load"
# Baselines first: the server's smallest route, then a static file of the console.
PAGES = ("/healthz", "/ui/static/console.css", "/ui/login", "/ui/", "/ui/requests", "/ui/agents")


@contextmanager
def _signed_in(port: int, timeout: float | None) -> Iterator[httpx.Client]:
    """A browser signed in to the console with the admin key (session cookie set)."""
    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=timeout) as browser:
        form = browser.get("/ui/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf is not None
        browser.post("/ui/login", data={"api_key": ADMIN_KEY, "csrf_token": csrf.group(1)})
        yield browser


def _open_inbox(port: int, stop: threading.Event) -> threading.Thread:
    """A signed-in browser's live inbox: an SSE stream held open (reconnected) until ``stop``."""

    def hold() -> None:
        with _signed_in(port, None) as browser:
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
    with simulator(logs) as up_port:
        servers = start_servers(logs, up_port, {"console off": {"console": "false"}, "console on": {"console": "true"},
                                                "console on, inbox open": {"console": "true"}})
        stop = threading.Event()
        try:
            inbox = _open_inbox(servers["console on, inbox open"][1], stop)
            model = f"openai/{MODEL}"
            results = added_latency(Target("direct", up_port, MODEL, key=UPSTREAM_KEY),
                                    [Target(name, port, model, key=ADMIN_KEY) for name, (_, port) in servers.items()],
                                    rounds=rounds, warmup=30, time_limit=300)
            stop.set()
            inbox.join(5)
            return results
        finally:
            stop_all(servers)


def page_load(port: int, rounds: int, warmup: int = 20) -> dict[str, dict]:
    """Per path: the GET's summary (ms), its added time over ``/healthz`` in the same round,
    the body size and the errors (any status but 200)."""
    with _signed_in(port, 30) as browser:
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    conns = {p: http.client.HTTPConnection(HOST, port, timeout=30) for p in PAGES}
    ms: dict[str, list[float]] = {p: [] for p in PAGES}
    added: dict[str, list[float]] = {p: [] for p in PAGES[1:]}
    size, errors = dict.fromkeys(PAGES, 0), dict.fromkeys(PAGES, 0)
    for i in range(warmup + rounds):
        order = PAGES[i % len(PAGES):] + PAGES[:i % len(PAGES)]
        got: dict[str, float] = {}
        for path in order:
            started = time.perf_counter()
            conns[path].request("GET", path, headers={"cookie": cookie})
            r = conns[path].getresponse()
            body = r.read()
            took = (time.perf_counter() - started) * 1000
            if r.status != 200:
                errors[path] += 1
                continue
            got[path], size[path] = took, len(body)
        if i < warmup or PAGES[0] not in got:
            continue
        for path, took in got.items():
            ms[path].append(took)
            if path != PAGES[0]:
                added[path].append(took - got[PAGES[0]])
    for c in conns.values():
        c.close()
    return {p: {"ms": _plain_summary(ms[p]),
                "added_ms": _plain_summary(added.get(p, [])), "bytes": size[p], "errors": errors[p]}
            for p in PAGES}


def _plain_summary(values: list[float]) -> dict | None:
    if not values:
        return None
    s = summarize(values)
    return {"n": s.n, "median": s.median, "p25": s.p25, "p75": s.p75, "p99": s.p99}


def run(logs: Path, quick: bool, served: Served | None = None, *, rounds: int | None = None,
        by: str = "python -m bench.run") -> dict:
    rounds = rounds or (100 if quick else 500)
    with serving(logs, served) as s:
        pages = page_load(s.port, rounds)
    return {**stamp(by), "warden": s.note, "rounds": rounds, "pages": pages}


def _ms(d: dict | None, key: str) -> str:
    return f"{d[key]:.3f}" if d else "–"


def render_pages(res: dict) -> str:
    base = res["pages"].get(PAGES[0]) or {}
    base_ms = (base.get("ms") or {}).get("median")
    rows = []
    for path, r in res["pages"].items():
        m, a = r.get("ms"), r.get("added_ms")
        rows.append(f"| `{path}` | {_ms(m, 'median')} | {_ms(m, 'p99')} | {_ms(a, 'median')} | "
                    f"{_ms(a and {'iqr': a['p75'] - a['p25']}, 'iqr')} | {ratio(m and m['median'], base_ms)} | "
                    f"{r['bytes']:,} | {r['errors']} |")
    return "\n".join([
        PAGES_SECTION, "",
        f"{how(res, 'client')}; {res['warden']}. {res['rounds']} rounds after 20 warm-up rounds: one GET of "
        "each path per round (order rotated), one keep-alive connection per path, as a browser signed in "
        "with the admin key (session cookie). Baselines on the same server: `/healthz` (the smallest "
        "route) and the console's stylesheet (a static file); added = the path − `/healthz` in the same "
        "round. `/ui/` sums this workspace's spend of the day and month (the rows this run wrote so far), "
        "`/ui/requests` lists the latest requests, `/ui/login` renders a template without a session.", "",
        "| path | median (ms) | p99 (ms) | added over /healthz, median (ms) | added IQR (ms) | of /healthz "
        "| body (bytes) | errors |",
        "|---|---|---|---|---|---|---|---|",
        *rows, "",
    ])


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
    parser.add_argument("--pages", action="store_true", help="measure the page load instead")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    if args.pages:
        report = render_pages(run(Path(tempfile.mkdtemp(prefix="warden-bench-pages-")), False,
                                  rounds=min(args.rounds, 500), by="python -m bench.console --pages"))
    else:
        report = render(measure(args.rounds), args.rounds)
    print(report)
    if args.write:
        replace_section(report, ROOT / "BENCHMARKS.md")

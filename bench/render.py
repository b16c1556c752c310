"""Results (the dict ``bench.run`` builds) -> the Markdown of BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.render_peers import peer_targets, peers_method, peers_section
from bench.report import table

NOTES = Path(__file__).with_name("notes.md")


def _get(d: dict | None, *path: Any) -> Any:
    for p in path:
        if d is None:
            return None
        d = d[p] if isinstance(d, list) and isinstance(p, int) and p < len(d) else (
            d.get(p) if isinstance(d, dict) else None)
    return d


def _by_name(rows: list[dict] | None, name: str) -> dict | None:
    return next((r for r in rows or [] if r.get("name") == name), None)


def _load(rows: list[dict] | None, target: str, c: int) -> dict | None:
    return next((r for r in rows or [] if r["target"] == target and r["connections"] == c), None)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:,.1f}×"


def headline(res: dict) -> dict[str, float | None]:
    """The figures the targets are about (also what before/after compares)."""
    w = _by_name(res.get("latency"), "warden")
    s = _by_name(res.get("stream"), "warden")
    cold = sorted(res.get("cold_start_s") or [])
    out: dict[str, float | None] = {
        "added latency, median (ms)": _get(w, "added_ms", "median"),
        "x-warden-overhead-ms, median": _get(w, "server_overhead_ms", "median"),
        "TTFT added, median (ms)": _get(s, "ttft_added_ms", "median"),
        "idle RSS (MB)": res.get("rss_idle_mb"),
        "RSS peak, 1,000 streams (MB)": _get(res, "streams_memory", "rss_peak_mb"),
        "cold start, median (s)": cold[len(cold) // 2] if cold else None,
    }
    for c in (1, 16, 64, 256):
        r = _load(res.get("load"), "warden", c)
        out[f"req/s at c={c}"] = r["rps"] if r else None
        out[f"p99 at c={c} (ms)"] = r["p99_ms"] if r else None
    return out


def _added_over_direct(rows: list[dict] | None) -> tuple[float | None, float | None]:
    """Warden's added latency median and the direct round trip's median, one pass."""
    return _get(_by_name(rows, "warden"), "added_ms", "median"), \
        _get(_by_name(rows, "direct"), "latency_ms", "median")


def targets(res: dict) -> list[list[Any]]:
    """Issue 19's targets, each a ratio of figures measured in this run."""
    h = headline(res)
    micro_p99 = max((m["us"]["p99"] for m in res.get("micro") or []
                     if m["name"].startswith(("routing plan, auto, full", "governance"))), default=None)
    rows = []

    def add(what: str, goal: str, figure: str, met: bool | None) -> None:
        rows.append([what, goal, figure, "–" if met is None else ("met" if met else "**not met**")])

    for row in peer_targets(res):  # ratios against each peer, 2 workers
        add(*row)
    for key, label in (("latency", "pinned"), ("latency_unpinned", "unpinned")):
        added, direct = _added_over_direct(res.get(key))
        if added is not None and direct:
            add(f"added latency, sequential, median, {label}", "≤ 1.0× the direct round trip",
                f"{added / direct:.1f}× ({added:.3f} ms added, direct {direct:.3f} ms)",
                added <= direct)
    ttft, added = h["TTFT added, median (ms)"], h["added latency, median (ms)"]
    if ttft is not None and added:
        add("streaming TTFT overhead, median", "≤ the non-streamed added latency",
            f"{ttft:.3f} ms vs {added:.3f} ms ({ttft / added:.2f}×)", ttft <= added)
    s = _by_name(res.get("stream"), "warden")
    if s:
        same = all(n == s["chunks_in"] for n in s["chunks_out"])
        add("chunks in = chunks out", "one for one", f"{s['chunks_in']} in, "
            f"{sorted(set(s['chunks_out']))} out", same)
    v = h["idle RSS (MB)"]
    add("idle RSS", "≤ 80 MB", "–" if v is None else f"{v:.1f} MB", None if v is None else v <= 80)
    ab = _cold_ratio(res)
    add("cold start to the first answered request", "≤ 0.6× the round's start (paired A/B)",
        "–" if ab is None else f"{ab['cpu']:.2f}× by CPU-s, {ab['wall']:.2f}× by wall "
        f"({ab['tree_cpu']:.2f} against {ab['base_cpu']:.2f} CPU-s; {ab['base']} as a source tree, "
        f"{ab['rounds']} alternated rounds)", None if ab is None else ab["cpu"] <= 0.6)
    add("routing / governance decision, worst p99", "microseconds",
        "–" if micro_p99 is None else f"{micro_p99:,.1f} µs", None if micro_p99 is None else micro_p99 < 1000)
    return rows


def render(res: dict, before: dict | None, args: argparse.Namespace) -> str:
    m = res["machine"]
    out = ["# Benchmarks\n",
           f"Written by `python -m bench.run` (`make bench`) on {res['started']}"
           f"{' (**quick run**: fewer rounds, short soak)' if res.get('quick') else ''}. "
           "Every ratio compares figures measured in the same run."
           + (f" Some sections were measured again in a later run ({res['partial_rerun']}) "
              "(the method below is that run's)." if res.get("partial_rerun") else "") + "\n",
           "## Targets\n", table(["what", "target", "measured", "status"], targets(res))]

    out += ["## Machine\n", table(["", ""], [[k, v] for k, v in m.items()]
                                  + [["LiteLLM", res.get("litellm_version") or "not measured"],
                                     ["Portkey", res.get("portkey_version") or "not measured"]])]
    out.append(_method(res, args) + peers_method(res))
    out += _latency(res) + _load_section(res) + _stream(res) + _failover(res)
    out += _memory(res) + _cold(res) + _micro(res) + _litellm(res) + peers_section(res)
    if res.get("scaleout"):
        from bench.scaleout import render as scaleout_section

        out.append(scaleout_section(res["scaleout"]))
    if before:
        paths = getattr(args, "previous", None) or []
        previous = [(path, json.loads(path.read_text())) for path in paths if path.exists()]
        out += _before_after(before, res, previous)
    if NOTES.exists():
        out += [NOTES.read_text().rstrip() + "\n"]
    from bench.surfaces import render_all  # its sections replace the hand-run ones (report.merge)

    out += render_all(res.get("surfaces"))
    return "\n".join(out)


def _method(res: dict, args: argparse.Namespace) -> str:
    pin = ("Processes are pinned with `taskset`: the proxy under test (Warden or LiteLLM, "
           "one worker process each) on core 0; the upstream simulator, `wrk` and the "
           "sequential client (this script) on core 1. The direct baseline uses the same "
           "placement, so core 0 sits idle during it. Both proxies share core 0, and an idle "
           "proxy still runs background work (LiteLLM's especially), so while one target is "
           "measured the other proxy is paused (`SIGSTOP` to its process group, `SIGCONT` "
           "after)." if res.get("pinned")
           else "Processes are not pinned (`taskset` or a second core is missing).")
    return f"""## Method

- **Upstream**: `bench/upstream_proc.py`, the project's loopback OpenAI-format simulator
  (`warden.testing.upstream`, bare asyncio + httptools on uvloop) in its own process. A model
  named `slow<ms>-…` streams 50 content chunks `<ms>` apart; any other model answers at once.
- **Warden**: `warden serve` (uvicorn, uvloop, httptools, one worker, default settings,
  embedded SQLite, access log on), one BYOK `openai` credential pointing at the simulator,
  called with the bootstrap admin key. Load and latency use `model: "auto"`: auth (cached key
  lookup), complexity scoring, routing over the catalog's 13 OpenAI models, the call, exact
  cost metering and the batched spend writer are all on the path.
- **LiteLLM**: `litellm[proxy]` in its own virtualenv (`bench/.litellm-venv`, installed by the
  script), `litellm --config … --num_workers 1`, a master key, the same simulator as
  `openai/gpt-4o-mini`, telemetry off, inside `offline-run` (loopback only; the
  simulator's port bridged in, the clients entering its namespace). The round-4 figures
  below were taken before this move, with LiteLLM outside the namespace.
- {pin}
- **Added latency**: rounds of one non-streamed request to direct and to one proxy over
  keep-alive connections (stdlib `http.client`, the same client for all), the order rotated
  each round, one proxy after the other (the other paused); the added latency is
  *proxy − direct* within a round; median and interquartile range.
- **Load**: `wrk --latency` with `bench/post.lua` (POST body and key from the environment),
  `-t2` (`-t1` at c=1), {3 if res.get('quick') else 10} s per point, 10 s timeout; errors =
  non-2xx + socket errors.
- **Streaming**: `stream: true` with `include_usage`; time to the first chunk carrying content,
  gaps between content chunks, content chunks counted on both sides.
- **Failover**: a second Warden (first-byte timeout 0.5 s, default 2 retries per deployment,
  breaker opens after 5 failures, cooldown 300 s so it stays open); two credentials serve the
  same model, primary first. The primary refuses connections, answers 500, or stalls past the
  timeout; the backup is healthy. Time to the first content byte, streamed.
- **Memory**: RSS of the server process (`/proc/<pid>/status` VmRSS) after start and 2 s idle;
  during 1,000 concurrent 10-second streams; sampled through a {args.soak_seconds:.0f} s `wrk -c16` run.
- **Cold start**: spawn of `warden serve` (migrated database, one credential) to the first
  `200` on `POST /v1/chat/completions` (polled every 5 ms).
- **Micro**: in process, `time.perf_counter_ns` around each call after a warm-up.
"""


def _latency(res: dict) -> list[str]:
    rows = []
    for r in res.get("latency") or []:
        a, o = r.get("added_ms"), r.get("server_overhead_ms")
        rows.append([r["name"], r["latency_ms"]["median"], f"{r['latency_ms']['p25']:.3f}–{r['latency_ms']['p75']:.3f}",
                     a and a["median"], a and f"{a['p75'] - a['p25']:.3f}", o and o["median"], o and o["p99"],
                     r["latency_ms"]["n"], r["errors"]])
    if not rows:
        return []
    return ["## 1. Added latency, sequential\n",
            table(["target", "latency median (ms)", "IQR (ms)", "added median (ms)", "added IQR (ms)",
                   "x-warden-overhead-ms median", "… p99", "rounds", "errors"], rows)]


def _load_section(res: dict) -> list[str]:
    rows = []
    for r in res.get("load") or []:
        d = _load(res["load"], "direct", r["connections"])
        rows.append([r["connections"], r["target"], r["rps"], r["p50_ms"], r["p99_ms"], r["errors"],
                     _ratio(r["rps"], d["rps"] if d else None)])
    if not rows:
        return []
    return ["## 2. Throughput and latency under load\n",
            table(["connections", "target", "req/s", "p50 (ms)", "p99 (ms)", "errors", "of direct req/s"], rows)]


def _stream(res: dict) -> list[str]:
    rows = []
    for r in res.get("stream") or []:
        a = r.get("ttft_added_ms")
        outs = sorted(set(r["chunks_out"]))
        rows.append([r["name"], r["ttft_ms"]["median"], a and a["median"], a and f"{a['p75'] - a['p25']:.3f}",
                     r["gap_median_ms"], r["gap_p99_ms"], r["chunks_in"], ", ".join(map(str, outs)),
                     len(r["chunks_out"]), r["incomplete"]])
    if not rows:
        return []
    return ["## 3. Streaming\n",
            "Upstream: 50 content chunks, 2 ms apart.\n",
            table(["target", "TTFT median (ms)", "TTFT added median (ms)", "added IQR", "gap median (ms)",
                   "gap p99 (ms)", "chunks in", "chunks out", "streams", "incomplete"], rows)]


def _failover(res: dict) -> list[str]:
    rows = []
    for r in res.get("failover") or []:
        o = r.get("open_ttfb_ms")
        rows.append([r["mode"], r["first_ttfb_ms"], r["attempts_first"], o and o["median"],
                     r["baseline_ttfb_ms"]["median"], r["breaker_opened_after"],
                     "not countable" if r["requests_to_primary_after_open"] is None and r["mode"] == "refused"
                     else r["requests_to_primary_after_open"], r["errors"]])
    if not rows:
        return []
    return ["## 4. Failover\n",
            "First request: the primary is tried three times (one try and the default two retries, "
            "with 50–200 ms of jittered backoff between them; for the timeout, 0.5 s each), then the "
            "backup: that is most of the first figure. Once the primary's breaker is open, requests "
            "go straight to the backup.\n",
            table(["primary", "first request TTFB (ms)", "attempts", "TTFB, breaker open, median (ms)",
                   "healthy baseline TTFB (ms)", "first request skipping the primary (#)",
                   "requests sent to the open-breaker primary", "errors"], rows)]


def _memory(res: dict) -> list[str]:
    out = ["## 5. Memory\n"]
    rows = [["Warden idle (after start)", res.get("rss_idle_mb")],
            ["Warden after the load runs", res.get("rss_after_load_mb")]]
    if res.get("litellm_rss_idle_mb"):
        rows.append(["LiteLLM idle (after its first request)", res["litellm_rss_idle_mb"]])
    sm = res.get("streams_memory")
    if sm:
        rows += [[f"Warden before {sm['streams']:,} streams", sm["rss_before_mb"]],
                 [f"Warden peak during {sm['streams']:,} concurrent streams "
                  f"({sm['completed']:,} completed in {sm['seconds']:.1f} s)", sm["rss_peak_mb"]],
                 ["Warden after they ended", sm["rss_after_mb"]]]
    out.append(table(["when", "RSS (MB)"], rows))
    d = res.get("drift")
    if d:
        out.append(table(["soak", "requests", "req/s", "errors", "RSS warm start (MB)", "RSS end (MB)",
                          "peak (MB)", "drift (MB/min)"],
                         [[f"{d['seconds']:.0f} s, wrk -c{d['connections']}", d["load"]["requests"],
                           d["load"]["rps"], d["load"]["non_2xx"] + d["load"]["socket_errors"],
                           d["start_mb"], d["end_mb"], d["peak_mb"], d["slope_mb_per_min"]]]))
    return out


def _cold_ratio(res: dict) -> dict | None:
    """This tree's cold start against the round's start, paired in this run (medians)."""
    ab = res.get("cold_start_ab")
    if not ab:
        return None
    base, tree = ab[ab["base"]], ab["tree"]
    med = statistics.median
    return {"base": ab["base"], "rounds": len(tree["cpu_s"]), "tree_cpu": med(tree["cpu_s"]),
            "base_cpu": med(base["cpu_s"]), "cpu": med(tree["cpu_s"]) / med(base["cpu_s"]),
            "wall": med(tree["wall_s"]) / med(base["wall_s"])}


def _cold(res: dict) -> list[str]:
    runs = res.get("cold_start_s")
    if not runs:
        return []
    s = sorted(runs)
    out = ["## 6. Cold start\n",
           "From spawning `warden serve` to the first answered `POST /v1/chat/completions`.\n",
           table(["runs", "median (s)", "min (s)", "max (s)"], [[len(s), s[len(s) // 2], s[0], s[-1]]])]
    ab = res.get("cold_start_ab")
    if ab:
        rows = [[name, statistics.median(v["cpu_s"]), min(v["cpu_s"]), max(v["cpu_s"]),
                 statistics.median(v["wall_s"])] for name, v in ab.items() if name != "base"]
        out += [f"Paired with the round's start ({ab['base']}, a source tree on `PYTHONPATH`, same venv, "
                "each its own data dir with one credential; alternated; CPU-s = utime+stime of the pid, "
                "which survives the serving process's start, read at the first answer; "
                "`bench/coldstart_ab.py`):\n",
                table(["tree", "CPU-s median", "min", "max", "wall median (s)"], rows)]
    return out


def _micro(res: dict) -> list[str]:
    rows = [[m["name"], m["us"]["median"], m["us"]["p99"], m["us"]["n"], m["note"]] for m in res.get("micro") or []]
    if not rows:
        return []
    return ["## 7. Micro benchmarks\n", table(["what", "p50 (µs)", "p99 (µs)", "calls", "note"], rows)]


def _litellm(res: dict) -> list[str]:
    if not any(r.get("name") == "litellm" for r in res.get("latency") or []):
        err = res.get("litellm_error")
        return ["## 8. LiteLLM side by side\n", f"Not measured in this run{': ' + err if err else ''}.\n"]
    w, lt = _by_name(res["latency"], "warden"), _by_name(res["latency"], "litellm")
    ws, ls = _by_name(res.get("stream"), "warden"), _by_name(res.get("stream"), "litellm")
    rows = [["added latency, median (ms)", _get(w, "added_ms", "median"), _get(lt, "added_ms", "median"),
             _ratio(_get(lt, "added_ms", "median"), _get(w, "added_ms", "median"))],
            ["TTFT added, median (ms)", _get(ws, "ttft_added_ms", "median"), _get(ls, "ttft_added_ms", "median"),
             _ratio(_get(ls, "ttft_added_ms", "median"), _get(ws, "ttft_added_ms", "median"))]]
    for c in (1, 16, 64, 256):
        a, b = _load(res.get("load"), "warden", c), _load(res.get("load"), "litellm", c)
        if a and b:
            rows.append([f"req/s at c={c} (errors)", f"{a['rps']:,.0f} ({a['errors']})",
                         f"{b['rps']:,.0f} ({b['errors']})", _ratio(a["rps"], b["rps"])])
            rows.append([f"p99 at c={c} (ms)", a["p99_ms"], b["p99_ms"], _ratio(b["p99_ms"], a["p99_ms"])])
    return ["## 8. LiteLLM side by side\n",
            f"LiteLLM {res.get('litellm_version')}, same simulator, same run; ratio = how many times "
            "better Warden is.\n", table(["figure", "Warden", "LiteLLM", "ratio"], rows)]


def _before_after(before: dict, res: dict, previous: list[tuple[Path, dict]] | None = None) -> list[str]:
    """Figures before any optimisation, after each earlier round (if given), and now."""
    previous = previous or []
    b, a = headline(before), headline(res)
    ps = [headline(r) for _, r in previous]
    rows = [[k, b.get(k), *[p.get(k) for p in ps], a.get(k)] for k in a
            if b.get(k) is not None or a.get(k) is not None]
    text = (f"Before: `bench/before.json`, the same benchmark on the same machine ({before.get('started')}) "
            "before any of the hot-path changes listed below.")
    header = ["figure", "before"]
    for n, (path, r) in enumerate(previous, start=1):
        rerun = f", sections re-measured {r['partial_rerun']}" if r.get("partial_rerun") else ""
        text += f" Round {n}: `bench/{path.name}` ({r.get('started')}{rerun}), after round {n} of changes."
        header.append(f"round {n}")
    now = f"round {len(previous) + 1}" if previous else "after"
    if previous:
        text += f" {now.capitalize()}: this run, after round {len(previous) + 1}."
    return ["## Before and after optimisation\n", text + "\n", table([*header, now], rows)]

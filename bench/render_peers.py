"""The peers part of BENCHMARKS.md (issue 19): Warden with 1 and 2 workers, LiteLLM and
Portkey side by side from one run, their ratios, and the targets about them."""

from __future__ import annotations

from typing import Any

from bench.report import table

PEERS = (("warden", "Warden"), ("warden-2w", "Warden, 2 workers"), ("litellm", "LiteLLM"),
         ("portkey", "Portkey"))


def _row(rows: list[dict] | None, name: str) -> dict | None:
    return next((r for r in rows or [] if r.get("name") == name), None)


def _load(res: dict, target: str, c: int) -> dict | None:
    return next((r for r in res.get("load") or []
                 if r["target"] == target and r["connections"] == c), None)


def _median(row: dict | None, key: str) -> float | None:
    v = (row or {}).get(key)
    return v["median"] if v else None


def _x(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _fmt_x(v: float | None) -> str:
    return "–" if v is None else f"{v:,.1f}×"


def scaling(res: dict, c: int = 64) -> tuple[float | None, float | None]:
    """2 workers against 1 at ``c``: (measured req/s ratio, ratio projected from the
    servers' CPU per request, i.e. if each worker had a core that nothing else used).
    The baseline is the 1-worker Warden run as the 2 workers are (unpinned, with an
    unpinned ``wrk``) when the run has it; older runs only had the pinned one."""
    one = _load(res, "warden-unpinned", c) or _load(res, "warden", c)
    two = _load(res, "warden-2w", c)
    if not one or not two:
        return None, None
    cpu1, cpu2 = one.get("server_cpu_us_per_req"), two.get("server_cpu_us_per_req")
    return _x(two["rps"], one["rps"]), (2 * cpu1 / cpu2 if cpu1 and cpu2 else None)


def peer_targets(res: dict) -> list[tuple[str, str, str, bool | None]]:
    """Load rows for the targets table: (what, target, measured, met)."""
    out: list[tuple[str, str, str, bool | None]] = []
    w = _load(res, "warden", 64)
    for name, label, goal in (("litellm", "LiteLLM", 40.0), ("portkey", "Portkey", 3.0)):
        p = _load(res, name, 64)
        if w and p:
            x = _x(w["rps"], p["rps"])
            out.append((f"throughput at c=64 against {label}", f"≥ {goal:g}×, 0 errors",
                        f"{_fmt_x(x)} ({w['rps']:,.0f} vs {p['rps']:,.0f} req/s; errors "
                        f"{w['errors']} vs {p['errors']})",
                        (x is None or x >= goal) and w["errors"] == 0))
    measured, projected = scaling(res)
    if measured is not None:
        both = "both unpinned" if _load(res, "warden-unpinned", 64) else "1 worker pinned"
        out.append(("2 workers against 1 at c=64, req/s as measured", "≥ 1.6×",
                    f"{measured:.2f}× ({both}; wrk and the simulator share the 2 cores)",
                    measured >= 1.6))
        out.append(("… from server CPU per request (load generator's cost taken out)", "≥ 1.6×",
                    "–" if projected is None else f"{projected:.2f}×",
                    None if projected is None else projected >= 1.6))
    if res.get("warden-2w_error"):
        out.append(("2 workers against 1 at c=64", "≥ 1.6×", "not measured: the 2-worker Warden "
                    "did not start (see section 9)", False))
    return out


def peers_method(res: dict) -> str:
    if not (res.get("portkey_version") or _load(res, "warden-2w", 64)):
        return ""
    return f"""- **Portkey**: `@portkey-ai/gateway` {res.get('portkey_version') or '–'} from
  `bench/portkey/package-lock.json` (`npm ci --prefix bench/.portkey`; `@hono/node-server`
  pinned to 1.12.2, with which its streams work on Node 20), `node build/start-server.js
  --headless`, `NODE_ENV=production`, inside `offline-run` (a network namespace with only
  loopback). That namespace holds a second instance of the same simulator on the same core,
  and `wrk` and the sequential client open their sockets inside it (`nsenter`, `setns`), so
  no relay sits on Portkey's path. Headers `x-portkey-provider: openai` and
  `x-portkey-custom-host: http://127.0.0.1:<sim>/v1`; one process, core 0 like the others.
- **Warden, 2 workers**: `WARDEN_WORKERS=2` with the local Redis (which more than one worker
  requires: budgets, rate limits and caches are shared there), its own data directory,
  **not pinned**, and its `wrk` not pinned either (the simulator stays on core 1), measured
  for load only. Each load point records the CPU-seconds of the server's process tree (`/proc/<pid>/stat`), of
  `wrk` (`getrusage` of the finished child) and of the simulator: server CPU per request does
  not depend on who else holds the cores, so *2 × (1-worker CPU/request) ÷ (2-worker
  CPU/request)* is the scaling with the load generator's cost taken out. Both sides of
  that ratio are measured alike: the 1-worker Warden's baseline point (`warden-unpinned`,
  c=64) runs unpinned with an unpinned `wrk` too, since CPU per request grows when a
  process shares its cores with the load generator (cache and scheduler contention).
- **Unpinned added latency**: the same sequential pass once more with every process (and this
  script) allowed on both cores (`sched_setaffinity` on each thread, restored after).
"""


def peers_section(res: dict) -> list[str]:
    have = [(n, label) for n, label in PEERS
            if _row(res.get("latency"), n) or _load(res, n, 64)]
    if len(have) < 2:
        return []
    rows: list[list[Any]] = []

    def add(figure: str, values: list[Any], lower_better: bool = True) -> None:
        if all(v is None for v in values):
            return  # e.g. a section this run did not measure
        nums = dict(zip([n for n, _ in have], values, strict=True))
        w = nums.get("warden")
        ratios = []
        for peer in ("litellm", "portkey"):
            p = nums.get(peer)
            ok = isinstance(w, (int, float)) and isinstance(p, (int, float))
            ratios.append(_fmt_x(_x(p, w) if lower_better else _x(w, p)) if ok else "–")
        rows.append([figure, *["–" if v is None else v for v in values], *ratios])

    add("added latency, pinned, median (ms)",
        [_median(_row(res.get("latency"), n), "added_ms") for n, _ in have])
    add("added latency, unpinned, median (ms)",
        [_median(_row(res.get("latency_unpinned"), n), "added_ms") for n, _ in have])
    stream = [_row(res.get("stream"), n) for n, _ in have]
    add("TTFT added, median (ms)", [_median(s, "ttft_added_ms") for s in stream])
    add("streams with every chunk (of measured)", [_fidelity(s) for s in stream])
    for c in (1, 16, 64, 256):
        pts = [_load(res, n, c) for n, _ in have]
        add(f"req/s at c={c}", [p and p["rps"] for p in pts], lower_better=False)
        add(f"… errors at c={c}", [p and p["errors"] for p in pts])
        add(f"… p50 / p99 at c={c} (ms)",
            [p and f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f}" for p in pts])
    add("server CPU per request at c=64 (µs)",
        [(_load(res, n, 64) or {}).get("server_cpu_us_per_req") for n, _ in have])
    idle = {"warden": res.get("rss_idle_mb"), "warden-2w": res.get("warden2_rss_idle_mb"),
            "litellm": res.get("litellm_rss_idle_mb"), "portkey": res.get("portkey_rss_idle_mb")}
    after = {"warden": res.get("rss_after_load_mb")}
    after.update({n: res.get(f"{n}_rss_after_load_mb") for n in ("warden-2w", "litellm", "portkey")})
    add("RSS idle (MB, all processes)", [idle.get(n) for n, _ in have])
    add("RSS after the load runs (MB)", [after.get(n) for n, _ in have])
    out = ["## 9. Peers side by side (Warden, Warden 2 workers, LiteLLM, Portkey)\n",
           "One run, one simulator program, the same client; "
           f"LiteLLM {res.get('litellm_version') or '–'}, "
           f"Portkey {res.get('portkey_version') or '–'}. Ratio = how many times better Warden "
           "(1 worker) is; the 2-worker column is unpinned (see Method).\n",
           table(["figure", *[label for _, label in have], "Warden vs LiteLLM",
                  "Warden vs Portkey"], rows)]
    cpu = [[r["connections"], r["target"], r["rps"], r.get("server_cpu_s"), r.get("wrk_cpu_s"),
            r.get("upstream_cpu_s"), r.get("server_cpu_us_per_req")]
           for r in res.get("load") or [] if "server_cpu_s" in r]
    if cpu:
        out += ["CPU-seconds spent during each load point (method: see *Warden, 2 workers*).\n",
                table(["connections", "target", "req/s", "server CPU (s)", "wrk CPU (s)",
                       "simulator CPU (s)", "server CPU per request (µs)"], cpu)]
    for name in ("litellm", "portkey", "warden-2w"):
        if res.get(f"{name}_error"):
            out.append(f"{name}: not measured: {res[f'{name}_error']}\n")
    return out


def _fidelity(s: dict | None) -> str | None:
    if not s:
        return None
    full = sum(1 for n in s["chunks_out"] if n == s["chunks_in"])
    return f"{full}/{len(s['chunks_out'])} ({s['chunks_in']} chunks)"

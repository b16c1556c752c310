"""``python -m bench.run``: every benchmark of issue 9 in one run, then BENCHMARKS.md.

Process layout (2 cores): the proxy under test (Warden or LiteLLM) on core 0;
the upstream simulator, ``wrk`` and this script (the sequential client) on core 1.
Every number is compared with a baseline measured in the same run.

    python -m bench.run                 # full run (memory soak 5 min)
    python -m bench.run --quick         # ~3 minutes: fewer rounds, 30 s soak
    BENCH_SOAK_SECONDS=60 python -m bench.run --skip-litellm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import Any

from bench import coldstart, failover, latency, load, memory, micro, peers, report
from bench.clients import Target
from bench.machine import describe
from bench.procs import CAN_PIN, ROOT, rss_mb
from bench.targets import (
    ROUND_START,
    MODEL,
    add_credential,
    direct_target,
    ensure_litellm,
    litellm_version,
    start_litellm,
    start_upstream,
    start_warden,
    warden_target,
)

PROXY_CPU, OTHER_CPU = "0", "1"
CONCURRENCY = (1, 16, 64, 256)
STREAM_MODEL = "slow2-" + MODEL  # simulator: 50 content chunks, 2 ms apart
SLOW_MODEL = "slow200-" + MODEL  # simulator: 50 content chunks, 200 ms apart (~10 s a stream)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    p.add_argument("--quick", action="store_true", default=quick, help="short run (BENCH_QUICK=1)")
    p.add_argument("--soak-seconds", type=float,
                   default=float(os.environ["BENCH_SOAK_SECONDS"]) if "BENCH_SOAK_SECONDS" in os.environ else None,
                   help="memory drift run length (default 300; 30 with --quick)")
    p.add_argument("--skip-litellm", action="store_true",
                   default=os.environ.get("BENCH_SKIP_LITELLM", "") not in ("", "0"))
    p.add_argument("--skip-portkey", action="store_true",
                   default=os.environ.get("BENCH_SKIP_PORTKEY", "") not in ("", "0"))
    p.add_argument("--only", default="", help="comma list: micro,latency,stream,load,surfaces,failover,memory,cold,scaleout")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=None, help="also save raw results here")
    p.add_argument("--render-only", type=Path, default=None, metavar="RESULTS_JSON",
                   help="measure nothing: rewrite the report from a saved results.json")
    p.add_argument("--replace", type=Path, default=None, metavar="RESULTS_JSON",
                   help="with --render-only: take the sections this other run measured from it")
    p.add_argument("--before", type=Path, default=ROOT / "bench/before.json",
                   help="results of an earlier run to compare against (before/after table)")
    p.add_argument("--previous", type=Path, nargs="*",
                   default=[ROOT / "bench/round1.json", ROOT / "bench/round2.json"],
                   help="results after each earlier optimisation round (middle columns), if present")
    args = p.parse_args(argv)
    if args.soak_seconds is None:
        args.soak_seconds = 30.0 if args.quick else 300.0
    return args


def one_at_a_time(targets: list[Target], procs: dict[str, Any]) -> Iterator[Target]:
    """Each target in turn, with every other proxy's processes paused meanwhile."""
    for target in targets:
        with peers.paused_except(procs, target.name):
            yield target


def merge_by_target(passes: list[list[dict]]) -> list[dict]:
    """Rows of several passes (each: direct + one proxy): the direct row of the first
    pass, then each proxy's row (its added figures are against its own pass's direct)."""
    rows = [r for r in passes[0] if r["name"] == "direct"] if passes else []
    return rows + [r for rows_ in passes for r in rows_ if r["name"] != "direct"]


def plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {k: plain(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render_only is not None:
        render_saved(args)
        return
    only = set(filter(None, args.only.split(","))) or {
        "micro", "latency", "stream", "load", "surfaces", "failover", "memory", "cold", "scaleout"}
    q = args.quick
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = ROOT / "bench/results" / stamp
    logs.mkdir(parents=True, exist_ok=True)
    if CAN_PIN:
        os.sched_setaffinity(0, {int(OTHER_CPU)})  # this script is the sequential client
    res: dict[str, Any] = {"machine": describe(), "quick": q, "pinned": CAN_PIN,
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    def say(msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    litellm_ok = False
    if not args.skip_litellm and only & {"latency", "stream", "load"}:
        say("ensuring LiteLLM in bench/.litellm-venv (first run installs it)")
        litellm_ok = ensure_litellm(logs / "litellm-install.log") is not None
        res["litellm_version"] = litellm_version() if litellm_ok else None
    portkey_ok = (not args.skip_portkey and bool(only & {"latency", "stream", "load"})
                  and peers.ensure_portkey_for(res, logs, say))

    if "micro" in only:
        say("micro benchmarks")
        res["micro"] = [{"name": n, "us": plain(s), "note": note}
                        for n, s, note in micro.run_micro(2_000 if q else 20_000)]

    procs = []
    try:
        up, up_port = start_upstream(logs, cpus=OTHER_CPU)
        procs.append(up)
        wproc, wport = start_warden(logs, logs / "warden-data", cpus=PROXY_CPU)
        procs.append(wproc)
        time.sleep(2.0)
        res["rss_idle_mb"] = rss_mb(wproc.pid)
        add_credential(wport, up_port)
        direct, warden = direct_target(up_port), warden_target(wport)
        proxies: list[Target] = [warden]
        lproc = None
        if litellm_ok:
            say("starting LiteLLM")
            try:
                lproc, ltarget = start_litellm(logs, up_port, cpus=PROXY_CPU,
                                               extra_models=[STREAM_MODEL])
                procs.append(lproc)
                proxies.append(ltarget)
                res["litellm_rss_idle_mb"] = rss_mb(peers.serving_pid(lproc))
            except (RuntimeError, TimeoutError) as exc:
                res["litellm_error"] = str(exc)[:300]
        extra, more, w2 = peers.start_extra(logs, up_port, warden.key or "", portkey_ok=portkey_ok,
                                            workers2="load" in only, proxy_cpus=PROXY_CPU,
                                            other_cpus=OTHER_CPU, res=res, say=say, started=procs)
        proxies += more
        # Sequential figures: one proxy at a time against the direct baseline, the other
        # proxies paused, since they share core 0 (see ``Proc.paused``).
        proc_of = {"warden": wproc, "litellm": lproc, **extra}
        if "latency" in only:
            say("added latency, sequential")
            rounds = 200 if q else 1000
            res["latency"] = merge_by_target([
                plain(latency.added_latency(direct, [p], rounds=rounds, warmup=50,
                                            time_limit=120 if q else 300))
                for p in one_at_a_time(proxies, proc_of)])
            say("added latency, sequential, unpinned (no taskset)")
            with peers.unpinned([up, *proc_of.values()]):
                res["latency_unpinned"] = merge_by_target([
                    plain(latency.added_latency(direct, [p], rounds=rounds, warmup=50,
                                                time_limit=120 if q else 300))
                    for p in one_at_a_time(proxies, proc_of)])
        if "stream" in only:
            say("streaming")
            s_direct = Target("direct", up_port, STREAM_MODEL, key=direct.key)
            s_proxies = [Target("warden", wport, f"openai/{STREAM_MODEL}", key=warden.key)]
            s_proxies += [replace(p, model=STREAM_MODEL) for p in proxies[1:]]
            res["stream"] = merge_by_target([
                plain(latency.streaming(s_direct, [p], rounds=20 if q else 100, warmup=5,
                                        time_limit=120 if q else 300))
                for p in one_at_a_time(s_proxies, proc_of)])
        if "load" in only and load.have_wrk():
            say("load (wrk)")
            secs = 3 if q else 10
            rows = []
            for c in CONCURRENCY:
                for t in one_at_a_time([direct, *proxies, *([w2] if w2 else [])], proc_of):
                    # The 2-worker Warden and its wrk are unpinned: see bench/peers.py.
                    rows.append(peers.load_point(t, c, secs, cpus=None if t is w2 else OTHER_CPU,
                                                 log=logs / "wrk.log", server=proc_of.get(t.name),
                                                 upstream=up))
                    r = rows[-1]
                    say(f"  c={c} {t.name}: {r['rps']:.0f} req/s, errors {r['errors']}")
            if w2 is not None:  # 1 worker as the 2 workers run (unpinned, wrk too): their baseline
                for t in one_at_a_time([warden], proc_of):
                    with peers.unpinned([wproc]):
                        rows.append(peers.load_point(t, 64, secs, cpus=None, log=logs / "wrk.log",
                                                     server=wproc, upstream=up))
                rows[-1]["target"] = "warden-unpinned"
                say(f"  c=64 warden-unpinned: {rows[-1]['rps']:.0f} req/s, errors {rows[-1]['errors']}")
            res["load"] = rows
        if lproc is not None:
            res["litellm_rss_after_load_mb"] = rss_mb(peers.serving_pid(lproc))
            lproc.stop()
        for name, proc in extra.items():
            res[f"{name}_rss_after_load_mb"] = peers.tree_rss_mb(proc)
            proc.stop()
        res["rss_after_load_mb"] = rss_mb(wproc.pid)
        if "surfaces" in only:
            say("surfaces: /v1/responses, /v1/embeddings, /mcp, /ui, each beside its baseline")
            from bench.served import Served
            from bench.surfaces import run_all

            res["surfaces"] = run_all(logs, q, Served(up_port, wport, "bench.run's Warden (access log on)"),
                                      pause=wproc.paused, say=say)
        if "memory" in only:
            say("1,000 concurrent slow streams")
            slow = Target("warden", wport, f"openai/{SLOW_MODEL}", key=warden.key)
            res["streams_memory"] = plain(memory.concurrent_streams(wproc.pid, slow, 1000, 120))
            say(f"memory drift over {args.soak_seconds:.0f} s")
            res["drift"] = plain(memory.drift(wproc.pid, warden, args.soak_seconds, 16, OTHER_CPU))
        wproc.stop()
        if "cold" in only:
            say("cold start")
            res["cold_start_s"] = [coldstart.first_answer_s(logs / "warden-data", "auto", logs,
                                                            cpus=PROXY_CPU)
                                   for _ in range(2 if q else 5)]
            say(f"cold start, paired with the round's start ({ROUND_START})")
            from bench.coldstart_ab import paired

            ab = paired([ROUND_START], ROOT / "src", 2 if q else 5, say=lambda m: say("  " + m))
            res["cold_start_ab"] = {"base": ROUND_START, **{k: {m: ab[k][m] for m in ("cpu_s", "wall_s")}
                                                             for k in ab}}
        if "failover" in only:
            say("failover")
            fproc, fport = start_warden(logs, logs / "failover-data", cpus=PROXY_CPU, name="warden-failover",
                                        upstream_first_byte_timeout=0.5, breaker_cooldown=300)
            procs.append(fproc)
            res["failover"] = plain(failover.run_failover(fport, requests=6 if q else 12, logs=logs))
            res["failover_settings"] = {"upstream_first_byte_timeout": 0.5, "max_retries": 2,
                                        "breaker_failures": 5, "breaker_cooldown": 300}
            fproc.stop()
    finally:
        for p in procs:
            p.stop()
    if "scaleout" in only:  # its own processes: two instances on PostgreSQL + Redis
        say("scale-out: two instances on PostgreSQL + Redis")
        from bench import scaleout

        try:
            res["scaleout"] = scaleout.run(logs / "scaleout", q)
        except Exception as exc:  # noqa: BLE001 - no PostgreSQL/Redis here: keep the rest of the run
            res["scaleout_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (logs / "results.json").write_text(json.dumps(res, indent=1, default=str))
    if args.json:
        shutil.copy(logs / "results.json", args.json)
    before = json.loads(args.before.read_text()) if args.before.exists() else None
    from bench.render import render

    report.write(args.out, render(res, before, args))
    say(f"wrote {args.out} (raw results and logs in {logs})")


def render_saved(args: argparse.Namespace) -> None:
    from bench.render import render

    res = json.loads(args.render_only.read_text())
    if args.replace is not None:
        newer = json.loads(args.replace.read_text())
        sections = ("micro", "latency", "stream", "load", "surfaces", "scaleout", "failover", "failover_settings",
                    "streams_memory", "drift", "cold_start_s", "rss_idle_mb", "rss_after_load_mb",
                    "litellm_rss_idle_mb", "litellm_version", "latency_unpinned", "portkey_version",
                    "portkey_rss_idle_mb", "warden2_rss_idle_mb", "portkey_rss_after_load_mb",
                    "warden-2w_rss_after_load_mb", "litellm_rss_after_load_mb")
        res.update({k: v for k, v in newer.items() if k in sections})
        res["partial_rerun"] = newer.get("started")
    before = json.loads(args.before.read_text()) if args.before.exists() else None
    report.write(args.out, render(res, before, args))


if __name__ == "__main__":
    main()

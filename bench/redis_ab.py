"""``python -m bench.redis_ab``: paired, interleaved A/B of Warden variants on Redis.

Each variant is a Warden started with its own ``PYTHONPATH`` prefix (a copy of
``src`` with or without a change, or a directory holding an extra package such
as hiredis) and its own Redis db, all running at once. Per variant:

* Redis round trips per request: ``MONITOR`` lines of its db over N sequential
  chat requests (commands scripts run inside Redis counted apart), less the
  same-length idle window before.
* CPU per request: the server's process tree (``/proc/<pid>/stat``, workers
  included) over a ``wrk`` run, the variants measured in alternating order
  (rotated each round) while the others are paused (SIGSTOP).
* Added latency: ``bench.latency`` rounds, one request to each variant and one
  direct call per round.

``--key member`` (default) uses a key with its own rpm/tpm under a workspace
budget and workspace rpm/tpm (never refusing), as ``bench.scaleout`` does;
``--key admin`` the admin key, which has no limits (as ``bench.run``).

    python -m bench.redis_ab --variant base=/tmp/a_src --variant new=src [--workers 1|2]
        [--rounds 6 --seconds 5 --connections 32 --latency-rounds 300] [--memory NAME=PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import redis

from bench import latency, load
from bench.clients import Conn, Target
from bench.peers import tree_cpu_s
from bench.procs import ROOT, Proc
from bench.scaleout import configure
from bench.targets import ADMIN_KEY, add_credential, direct_target, start_upstream, start_warden

REDIS = "redis://127.0.0.1:6379"
FIRST_DB = 12  # 12, 13, 14: not the tests' 15, scaleout's 9 or bench.run's 0
_MON = re.compile(r'^(\d+\.\d+) \[(\d+) ([^\]]+)\] "([^"]+)"')


def _count(lines: list[str], t0: float, t1: float) -> dict[int, Counter]:
    out: dict[int, Counter] = {}
    for line in lines:
        m = _MON.match(line)
        if m and t0 <= float(m.group(1)) < t1:
            kind = "lua" if m.group(3) == "lua" else "trip"
            out.setdefault(int(m.group(2)), Counter())[kind] += 1
    return out


def _bodies(t: Target) -> dict[str, bytes]:
    """A chat request, and one with max_tokens (its token estimate then differs from the
    usage, so each tokens-per-minute counter is corrected after the answer)."""
    plain = t.body()
    return {"chat": plain, "max_tokens": orjson.dumps({**orjson.loads(plain), "max_tokens": 256})}


def round_trips(targets: list[Target], dbs: list[int], n: int, logs: Path) -> dict[str, dict]:
    mon_log = logs / "monitor.log"
    mon = subprocess.Popen(["redis-cli", "monitor"], stdout=open(mon_log, "w"),  # noqa: SIM115
                           stderr=subprocess.STDOUT)
    time.sleep(0.5)
    windows = []
    try:
        for t in targets:
            for kind, body in _bodies(t).items():
                conn = Conn(t)
                conn.post(body)  # warm the connection (and any cache)
                t0 = time.time()
                for _ in range(n):
                    if conn.post(body)[0] != 200:
                        raise RuntimeError(f"{t.name}: request failed")
                t1 = time.time()
                conn.close()
                time.sleep(t1 - t0)  # an idle window as long, for the background rate
                windows.append((f"{t.name} {kind}", t0, t1, time.time()))
    finally:
        time.sleep(0.3)
        mon.terminate()
        mon.wait(5)
    lines = mon_log.read_text(errors="replace").splitlines()
    out = {}
    for db, (name, t0, t1, t2) in zip([d for d in dbs for _ in range(2)], windows, strict=True):
        busy, idle = _count(lines, t0, t1).get(db, Counter()), _count(lines, t1, t2).get(db, Counter())
        out[name] = {k: round((busy[k] - idle[k]) / n, 2) for k in ("trip", "lua")}
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.redis_ab", description=__doc__.splitlines()[0])
    p.add_argument("--variant", action="append", required=True, metavar="NAME=PYTHONPATH")
    p.add_argument("--memory", action="append", default=[], metavar="NAME=PYTHONPATH",
                   help="a variant without Redis (1 worker, in-process state)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--key", choices=("member", "admin"), default="member")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--latency-rounds", type=int, default=300)
    p.add_argument("--trips", type=int, default=100, help="sequential requests counted")
    args = p.parse_args()
    logs = ROOT / "bench/results" / ("redis-ab-" + time.strftime("%Y%m%d-%H%M%S"))
    pinned = args.workers == 1
    if pinned:
        os.sched_setaffinity(0, {1})
    procs: list[Proc] = []
    specs = [(v, True) for v in args.variant] + [(v, False) for v in args.memory]
    try:
        up, up_port = start_upstream(logs, cpus="1" if pinned else None)
        procs.append(up)
        targets, servers, dbs = [], [], []
        for i, (spec, on_redis) in enumerate(specs):
            name, path = spec.split("=", 1)
            db = FIRST_DB + i
            settings: dict[str, object] = {}
            if on_redis:
                r = redis.Redis.from_url(f"{REDIS}/{db}")
                r.flushdb()
                r.close()
                settings = {"redis_url": f"{REDIS}/{db}", "redis_prefix": f"ab{i}:",
                            "workers": args.workers}
            env_path = ":".join(str(ROOT / x) if not x.startswith("/") else x for x in path.split(":"))
            os.environ["PYTHONPATH"] = env_path  # start() passes os.environ on
            proc, port = start_warden(logs, logs / f"{name}-data", name=name,
                                      cpus="0" if pinned else None, **settings)
            os.environ.pop("PYTHONPATH")
            procs.append(proc)
            time.sleep(1.5)
            if args.key == "member":
                key = configure(port, up_port)
            else:
                add_credential(port, up_port)
                key = ADMIN_KEY
            targets.append(Target(name, port, "auto", key))
            servers.append(proc)
            dbs.append(db)
        for t in targets:
            c = Conn(t)
            status, _, body, _ = c.post(t.body())
            c.close()
            if status != 200:
                raise RuntimeError(f"{t.name}: {status} {body[:300]!r}")
        trips = round_trips(targets, dbs, args.trips, logs)
        for name, got in trips.items():
            print(f"{name}: Redis round trips/request {got['trip']}, commands inside scripts {got['lua']}")
        if args.latency_rounds:
            for res in latency.added_latency(direct_target(up_port), targets, rounds=args.latency_rounds,
                                             warmup=30, time_limit=300):
                if res.added_ms is not None:
                    print(f"{res.name}: added latency median {res.added_ms.median:.3f} ms "
                          f"(IQR {res.added_ms.iqr:.3f})")
        wrk_cpus = "1" if pinned else None
        for t in targets:
            load.run_wrk(t, args.connections, 2, cpus=wrk_cpus)  # warm-up
        per: dict[str, list[float]] = {t.name: [] for t in targets}
        rps: dict[str, list[float]] = {t.name: [] for t in targets}
        for rnd in range(args.rounds):
            order = list(range(len(targets)))
            order = order[rnd % len(order):] + order[:rnd % len(order)]
            for i in order:
                t, proc = targets[i], servers[i]
                others = [s for s in servers if s is not proc]
                for o in others:
                    os.killpg(o.popen.pid, 19)  # SIGSTOP
                try:
                    c0 = tree_cpu_s(proc.pid)
                    r = load.run_wrk(t, args.connections, args.seconds, cpus=wrk_cpus)
                    used = tree_cpu_s(proc.pid) - c0
                finally:
                    for o in others:
                        os.killpg(o.popen.pid, 18)  # SIGCONT
                per[t.name].append(1e6 * used / r.requests if r.requests else float("nan"))
                rps[t.name].append(r.rps)
                print(f"round {rnd} {t.name}: {per[t.name][-1]:.0f} µs CPU/request, "
                      f"{r.rps:.0f} req/s, errors {r.errors}", flush=True)
        for t in targets:
            v = per[t.name]
            print(f"{t.name}: CPU/request median {statistics.median(v):.0f} µs "
                  f"(min {min(v):.0f}, max {max(v):.0f}, n {len(v)}); "
                  f"req/s median {statistics.median(rps[t.name]):.0f}")
        print(f"load average {os.getloadavg()[0]:.2f}; logs {logs}")
    finally:
        for proc in procs:
            proc.stop()


if __name__ == "__main__":
    main()

"""``python -m bench.scaleout``: two Warden instances on one PostgreSQL and one Redis.

Both instances (``warden-a`` on core 0, ``warden-b`` on core 1 when pinning is
possible) share a fresh database ``warden_bench`` and Redis db 9 (flushed), with
a workspace budget, workspace rate limits and key rate limits set high enough
never to refuse, so every request reserves, settles and acquires in Redis. One
simulator; load from ``wrk`` (one per instance at c/2 each, run at once). The
same run measures one instance alone (the other paused) and an embedded
SQLite + in-process state instance, so each ratio compares like with like.

Redis commands per request come from ``MONITOR`` (lines of db 9 only, so other
users of the server do not count) over N sequential requests, less the same
window's idle rate; ``INFO commandstats`` deltas are server-wide, shown beside.
PostgreSQL transactions per request: ``pg_stat_database`` deltas (backends
flush their counters up to ~10 s late, so each window ends with a wait).

    python -m bench.scaleout [--quick] [--write]   # prints the Markdown section
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import re
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis

from bench import latency, load
from bench.clients import Conn, Target
from bench.procs import CAN_PIN, ROOT, Proc, free_port, start, wait_port
from bench.report import replace_section, table
from bench.targets import (
    add_credential,
    api,
    direct_target,
    start_upstream,
    warden_cmd,
    warden_env,
)

PG_ADMIN = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DB = "warden_bench"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
PREFIX = "wbench:"
MASTER_KEY = base64.b64encode(b"b" * 32).decode()
CONCURRENCY = (16, 64)
HIGH = 2_000_000_000  # rate limits (PositiveInt32) that never refuse
PG_FLUSH_S = 11.0  # PostgreSQL 15 backends report stats when idle, at most ~10 s late
# Request types counted. For the first two the token estimate (prompt, 11) happens to
# equal the simulator's usage (5 + 6), so no tokens-per-minute correction follows; with
# max_tokens the estimate is larger and each TPM counter is corrected after the answer.
KINDS = {"chat": "chat, non-streamed", "stream": "chat, streamed",
         "max_tokens": "chat, non-streamed, max_tokens 256"}
TITLE = "## Scale-out: two instances on PostgreSQL + Redis"


# --- the fixtures: a fresh database, an empty Redis db, three instances ----------------


def _pg_url(db: str, driver: str = "postgresql") -> str:
    return re.sub(r"^postgresql(\+\w+)?://", f"{driver}://", PG_ADMIN).rsplit("/", 1)[0] + f"/{db}"


async def _pg(sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def reset_stores() -> None:
    asyncio.run(_pg(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
    asyncio.run(_pg(f"CREATE DATABASE {DB}"))
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    r.close()


def _start(logs: Path, name: str, cpus: str | None, **settings: object) -> tuple[Proc, int]:
    port = free_port()
    proc = start(name, warden_cmd(), logs=logs, cpus=cpus,
                 env=warden_env(logs / f"{name}-data", port, **settings))
    wait_port(port, proc)
    deadline = time.monotonic() + 60
    while api(port, "GET", "/readyz")[0] != 200:  # migrated and connected
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} never ready; see {proc.log}")
        time.sleep(0.2)
    return proc, port


def configure(port: int, up_port: int) -> str:
    """Credential, budget and rate limits; returns a member key with its own limits."""
    add_credential(port, up_port)
    ws = api(port, "GET", "/api/budgets")[1]["workspace_id"]  # type: ignore[index]
    for method, path, body in [
        ("PUT", "/api/budgets", {"scope": "workspace", "period": "month", "limit_usd": "1000000"}),
        ("PUT", f"/api/workspaces/{ws}/limits", {"rpm_limit": HIGH, "tpm_limit": HIGH}),
        ("POST", "/api/keys", {"name": "bench", "rpm_limit": HIGH, "tpm_limit": HIGH}),
    ]:
        status, data = api(port, method, path, body)
        if status not in (200, 201):
            raise RuntimeError(f"{method} {path}: {status} {data}")
    return data["key"]  # type: ignore[index]


# --- counting: Redis MONITOR + commandstats, pg_stat_database ---------------------------

_MON = re.compile(r'^(\d+\.\d+) \[(\d+) ([^\]]+)\] "([^"]+)"(?: "([^"]*)")?')


def _script_names() -> dict[str, str]:
    from warden.state import _redis_scripts as lua

    return {hashlib.sha1(v.encode()).hexdigest(): k for k, v in vars(lua).items()
            if k.isupper() and isinstance(v, str)}


def _commandstats(r: redis.Redis) -> Counter:
    stats = r.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()
                    if k not in ("cmdstat_info", "cmdstat_monitor")})


async def _pg_counters() -> dict[str, int]:
    """The database's transaction and row counters, and each table's scans ("scan:<table>")."""
    rows = await _pg("SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
                     f"tup_returned FROM pg_stat_database WHERE datname = '{DB}'")
    conn = await asyncpg.connect(_pg_url(DB))
    try:
        scans = await conn.fetch("SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) AS n "
                                 "FROM pg_stat_user_tables")
    finally:
        await conn.close()
    return {**(dict(rows[0]) if rows else {}), **{f"scan:{r['relname']}": r["n"] for r in scans}}


def _monitor_window(lines: list[str], t0: float, t1: float, db: int, names: dict[str, str]) -> Counter:
    """Commands clients sent to db ``db`` in [t0, t1); scripts by name, Lua's own calls apart."""
    out: Counter = Counter()
    for line in lines:
        m = _MON.match(line)
        if not m or int(m.group(2)) != db or not t0 <= float(m.group(1)) < t1:
            continue
        cmd = m.group(4).upper()
        if m.group(3) == "lua":
            out[f"(inside Lua) {cmd}"] += 1
        elif cmd in ("EVALSHA", "EVAL"):
            sha = m.group(5) or ""
            out[f"{cmd} {names.get(sha, names.get(hashlib.sha1(sha.encode()).hexdigest(), '?'))}"] += 1
        else:
            out[cmd] += 1
    return out


def count_round_trips(target: Target, n: int, *, logs: Path) -> dict[str, Any]:
    """An idle window, then N sequential chat requests, then N streamed: per-request
    Redis commands (idle rate removed) and PostgreSQL transactions and row changes."""
    db = int(REDIS_URL.rsplit("/", 1)[1]) if REDIS_URL.rsplit("/", 1)[1].isdigit() else 0
    r = redis.Redis.from_url(REDIS_URL)
    mon_log = logs / "redis-monitor.log"
    host, port = re.match(r"redis://([^:/]+):?(\d*)", REDIS_URL).groups()  # type: ignore[union-attr]
    mon = subprocess.Popen(["redis-cli", "-h", host, "-p", port or "6379", "monitor"],
                           stdout=open(mon_log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    time.sleep(PG_FLUSH_S)  # the counters of the work before (load runs) settle first
    windows: dict[str, tuple[float, float, Counter, dict[str, int]]] = {}
    try:
        for kind in ("idle", *KINDS):
            stats0, pg0 = _commandstats(r), asyncio.run(_pg_counters())
            conn = Conn(target)  # a fresh one: keep-alive would not outlive the flush wait
            t0 = time.time()
            for _ in range(n if kind != "idle" else 0):
                if kind == "chat":
                    status = conn.post(target.body())[0]
                elif kind == "max_tokens":  # the token estimate then differs from the usage
                    status = conn.post(orjson.dumps({**orjson.loads(target.body()), "max_tokens": 256}))[0]
                else:
                    s = conn.stream(target.body(stream=True))
                    status = s.status if s.done else 0
                if status != 200:
                    raise RuntimeError(f"{kind} request failed: {status}")
            if kind == "idle":
                time.sleep(3.0)
            t1 = time.time()
            conn.close()
            time.sleep(PG_FLUSH_S)  # the flush wait is part of the idle rate as well
            pg1 = asyncio.run(_pg_counters())
            stats = _commandstats(r) - stats0
            windows[kind] = (t0, t1, stats, {k: v - pg0.get(k, 0) for k, v in pg1.items()})
    finally:
        time.sleep(0.3)
        mon.terminate()
        mon.wait(5)
        r.close()
    lines = mon_log.read_text(errors="replace").splitlines()
    names = _script_names()
    it0, it1, istats, ipg = windows["idle"]
    idle_span = it1 - it0 + PG_FLUSH_S
    idle_mon = _monitor_window(lines, it0, it1 + PG_FLUSH_S, db, names)
    out: dict[str, Any] = {"requests": n, "idle_window_s": round(idle_span, 1),
                           "idle_commands": sum(idle_mon.values()),
                           "idle_pg_xact_per_s": round((ipg.get("xact_commit", 0) + ipg.get("xact_rollback", 0))
                                                       / idle_span, 2)}
    for kind in KINDS:
        t0, t1, stats, pg = windows[kind]
        scale = (t1 - t0) / idle_span  # idle commands expected within the request window
        mon_c = _monitor_window(lines, t0, t1, db, names)
        by = {k: (v - idle_mon.get(k, 0) * scale) / n for k, v in sorted(mon_c.items())}
        by = {k: round(v, 2) for k, v in by.items() if abs(v) >= 0.005}
        span = t1 - t0 + PG_FLUSH_S
        out[kind] = {
            "commands_per_request": round(sum(v for k, v in by.items() if not k.startswith("(")), 2),
            "by_command": by,
            "commandstats_per_request": round(
                (sum(stats.values()) - sum(istats.values()) * span / idle_span) / n, 2),
            "pg_per_request": {k: round((v - ipg.get(k, 0) * span / idle_span) / n, 2)
                               for k, v in pg.items()},
            "pg_raw": pg, "pg_idle_raw": ipg,
        }
    return out


# --- the run ----------------------------------------------------------------------------


def _pair_wrk(targets: list[Target], c: int, secs: float, log: Path) -> dict[str, Any]:
    with ThreadPoolExecutor(len(targets)) as pool:
        got = list(pool.map(lambda t: load.run_wrk(t, c // len(targets), secs, cpus=None, log=log),
                            targets))
    return {"rps": sum(g.rps for g in got), "p50_ms": max(g.p50_ms or 0 for g in got),
            "p99_ms": max(g.p99_ms or 0 for g in got), "errors": sum(g.errors for g in got),
            "per_instance_rps": [g.rps for g in got]}


def run(logs: Path, quick: bool) -> dict[str, Any]:
    logs.mkdir(parents=True, exist_ok=True)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))  # client unpinned, like wrk
    reset_stores()
    shared = {"database_url": _pg_url(DB, "postgresql+asyncpg"), "redis_url": REDIS_URL,
              "redis_prefix": PREFIX, "master_key": MASTER_KEY}
    procs: list[Proc] = []
    res: dict[str, Any] = {"quick": quick, "pinned": CAN_PIN, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "load_before": os.getloadavg()}
    try:
        up, up_port = start_upstream(logs)
        procs.append(up)
        a, a_port = _start(logs, "warden-a", "0", **shared)
        procs.append(a)
        b, b_port = _start(logs, "warden-b", "1", **shared)  # finds the schema migrated
        procs.append(b)
        s, s_port = _start(logs, "warden-sqlite", "0")
        procs.append(s)
        key = configure(a_port, up_port)
        s_key = configure(s_port, up_port)
        ta, tb = Target("warden-a", a_port, "auto", key), Target("warden-b", b_port, "auto", key)
        ts = Target("warden-sqlite", s_port, "auto", s_key)
        for t in (ta, tb, ts):  # b sees what a configured (shared database, broadcast caches)
            c = Conn(t)
            status, _, body, _ = c.post(t.body())
            c.close()
            if status != 200:
                raise RuntimeError(f"{t.name}: {status} {body[:300]!r}")
        direct = direct_target(up_port)

        rounds = 200 if quick else 1000
        res["latency"] = [asdict(x) for x in latency.added_latency(
            direct, [ta, tb, ts], rounds=rounds, warmup=30, time_limit=90 if quick else 300)]

        secs = 3 if quick else 10
        rows = []
        wlog = logs / "wrk.log"
        with s.paused():
            for c in CONCURRENCY:
                rows.append({"target": "pair", "connections": c, **_pair_wrk([ta, tb], c, secs, wlog)})
                with b.paused():
                    r = load.run_wrk(ta, c, secs, cpus=None, log=wlog)
                    rows.append({"target": "one", "connections": c, **_wrk_row(r)})
        with a.paused(), b.paused():
            for c in CONCURRENCY:
                r = load.run_wrk(ts, c, secs, cpus=None, log=wlog)
                rows.append({"target": "sqlite", "connections": c, **_wrk_row(r)})
            with s.paused():
                r = load.run_wrk(direct, CONCURRENCY[-1], secs, cpus=None, log=wlog)
                rows.append({"target": "direct", "connections": CONCURRENCY[-1], **_wrk_row(r)})
        res["load"] = rows

        with s.paused():
            res["counts"] = count_round_trips(ta, 50 if quick else 200, logs=logs)
    finally:
        for p in procs:
            p.stop()
        os.sched_setaffinity(0, affinity)
    res["load_after"] = os.getloadavg()
    return res


def _wrk_row(r: Any) -> dict[str, Any]:
    return {"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors}


# --- the Markdown -----------------------------------------------------------------------


def render(res: dict | None) -> str:
    if not res:
        return ""
    lat = {r["name"]: r for r in res.get("latency") or []}
    lrows = [[n, r["latency_ms"]["median"], r["added_ms"] and r["added_ms"]["median"],
              r["added_ms"] and f"{r['added_ms']['p25']:.3f}–{r['added_ms']['p75']:.3f}",
              r["server_overhead_ms"] and r["server_overhead_ms"]["median"], r["latency_ms"]["n"],
              r["errors"]] for n, r in lat.items()]
    by = {(r["target"], r["connections"]): r for r in res.get("load") or []}
    trows = []
    for c in CONCURRENCY:
        pair, one, lite = by.get(("pair", c)), by.get(("one", c)), by.get(("sqlite", c))
        for name, r in (("pair (a + b, c/2 each)", pair), ("one (a, b paused)", one),
                        ("one, SQLite + memory state", lite)):
            if r:
                trows.append([c, name, r["rps"], r["p50_ms"], r["p99_ms"], r["errors"],
                              _x(r["rps"], one and one["rps"]),
                              ", ".join(f"{v:,.0f}" for v in r.get("per_instance_rps", []))])
    d = by.get(("direct", CONCURRENCY[-1]))
    counts = res.get("counts") or {}
    crow, brow = [], []
    for kind, label in KINDS.items():
        k = counts.get(kind)
        if not k:
            continue
        pg = k["pg_per_request"]
        scans = ", ".join(f"{t.removeprefix('scan:')} {v:g}" for t, v in pg.items()
                          if t.startswith("scan:") and v >= 0.05)
        crow.append([label, k["commands_per_request"], k["commandstats_per_request"],
                     pg.get("xact_commit"), pg.get("xact_rollback"), pg.get("tup_inserted"),
                     pg.get("tup_updated"), scans or "–"])
        lua_total = sum(v for c, v in k["by_command"].items() if c.startswith("("))
        brow += [[label, cmd, v] for cmd, v in k["by_command"].items() if not cmd.startswith("(")]
        brow.append([label, "(commands the scripts run inside Redis)", round(lua_total, 2)])
    la, lb = res.get("load_before") or [0] * 3, res.get("load_after") or [0] * 3
    out = [TITLE + "\n",
           f"Measured {res.get('started')} (`bench/scaleout.py`)"
           f"{' (quick: fewer rounds, 3 s wrk runs)' if res.get('quick') else ''}; load average "
           f"{la[0]:.1f} before, {lb[0]:.1f} after (2 cores shared with other work: indicative).\n",
           "Method: two `warden serve` processes on one PostgreSQL 15 database and one Redis 7 db "
           f"({'warden-a pinned to core 0, warden-b to core 1' if res.get('pinned') else 'unpinned'}"
           "; the simulator, `wrk`, PostgreSQL, Redis and the client unpinned). A workspace budget, "
           "workspace rate limits and the key's own rate limits are set, high enough never to refuse, "
           "so each request reserves and settles its budget and takes its rate-limit tokens in Redis. "
           "`warden-sqlite` is the embedded default (SQLite, in-process state) pinned to core 0, "
           "measured in the same run. Added latency: sequential rounds, one request to each target "
           "per round, against the direct call of the same round. Throughput: `wrk` for the pair is "
           "two processes at c/2, one per instance, run at once (req/s summed, p99 the worse); "
           "\"one\" is warden-a with warden-b paused (SIGSTOP); the other instances are paused "
           "while one is measured.\n",
           table(["target", "latency median (ms)", "added median (ms)", "added IQR (ms)",
                  "x-warden-overhead-ms median", "rounds", "errors"], lrows)]
    if trows:
        out.append(table(["connections", "instances", "req/s", "p50 (ms)", "p99 (ms)", "errors",
                          "of one PG+Redis instance", "per instance req/s"], trows))
    if d:
        out.append(f"The simulator alone (direct, c={CONCURRENCY[-1]}) answers {d['rps']:,.0f} req/s "
                   "on the same machine: the ceiling for any pair here.\n")
    if crow:
        out += [f"Per request, over {counts.get('requests')} sequential requests to warden-a (the idle "
                f"rate of the same instances over {counts.get('idle_window_s')} s removed; "
                f"{counts.get('idle_commands')} idle Redis commands, {counts.get('idle_pg_xact_per_s')} idle PostgreSQL "
                "transactions a second from the two instances' pollers). Redis commands: `MONITOR` lines for "
                "this db sent by the instance, i.e. round trips (each EVALSHA is one; the commands a script "
                "runs inside Redis are counted apart); `INFO commandstats` is the server-wide delta, "
                "which counts the commands inside scripts too (and anyone else's on this server). "
                "PostgreSQL: `pg_stat_database` deltas for the database (commits, rollbacks, rows).\n",
                table(["request", "Redis round trips", "commandstats", "PG commits", "PG rollbacks",
                       "rows inserted", "rows updated", "table scans"], crow),
                table(["request", "Redis command (script)", "per request"], brow)]
    return "\n".join(out)


def _x(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:,.2f}×"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--write", action="store_true", help="also replace the section in BENCHMARKS.md")
    args = p.parse_args(argv)
    logs = ROOT / "bench/results" / (time.strftime("%Y%m%d-%H%M%S") + "-scaleout")
    res = run(logs, args.quick)
    import json

    (logs / "results.json").write_text(json.dumps(res, indent=1, default=str))
    section = render(res)
    print(section)
    if args.write:
        replace_section(section, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()

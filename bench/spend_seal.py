"""What sealing the spend ledger in the audit chain costs, now that it is done after
the fact (store/spend_sealer.py).

    .venv/bin/python -m bench.spend_seal [--base /tmp/e_base/src] [--rounds 5] [--requests 300]

- **Spend commit, 1 row** (the one a reply's last byte waits for): the spend writer of
  the tree before seals (``--base``: ``git archive HEAD src | tar -x -C /tmp/e_base``)
  against this tree's, each in a child process of its own (``PYTHONPATH``), on its own
  database; sequential requests, each queues its row and awaits its commit
  (``WARDEN_SPEND_COMMIT_WAIT``): the median time from ``record`` to the commit, and
  the child's CPU per request (``time.process_time``: event loop and inserter thread).
  The two alternate within each round (paired); medians over rounds, lowest and
  highest round, and the paired difference. Without ``--base`` this part is skipped.
- **Sealer**: this tree's :class:`SpendSealer` sealing a backlog of committed rows in
  runs of 5,000 (3 workspaces): wall and CPU per sealed row; and an idle run.
- **Stall** (``--stall-base SRC``, SQLite): a sealer run over ``--stall-rows`` rows
  while 1-row spend commits go on back to back, as replies' commits do under load:
  the longest and the median commit during the run, in the tree ``SRC`` and this one
  (each a child process, alternated over ``--rounds``).

On a migrated SQLite file and, when ``WARDEN_BENCH_DATABASE_URL`` answers, PostgreSQL
(databases ``<name>_base`` / ``<name>_new`` beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.spend_commit import row
from bench.usage_query import DEFAULT_URL, prepare
from warden.store import migrate
from warden.store.db import Database
from warden.store.spend import SpendWriter

REPO = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def started_writer(url: str) -> AsyncIterator[tuple[Database, SpendWriter]]:
    """A migrated database and a started spend writer that commits each row it is given
    (``WARDEN_SPEND_COMMIT_WAIT``); both closed after."""
    db = Database(url)
    await migrate.upgrade(db)
    try:
        writer = SpendWriter(db, commit_wait=5.0)
        writer.start()
        yield db, writer
        await writer.close()
    finally:
        await db.close()


async def child(url: str, n: int) -> dict[str, float]:
    """In the child: median ms from record to commit, CPU µs per request."""
    async with started_writer(url) as (_, writer):
        for i in range(50):  # warm-up: connections, compiled statements
            await writer.record(row(i))  # type: ignore[misc]
        samples = []
        cpu0 = time.process_time()
        for i in range(n):
            t0 = time.perf_counter()
            await writer.record(row(i))  # type: ignore[misc]
            samples.append((time.perf_counter() - t0) * 1000)
        cpu = (time.process_time() - cpu0) / n * 1e6
    return {"ms": statistics.median(samples), "cpu_us": cpu}


async def stall_child(url: str, rows: int) -> dict[str, float]:
    """In the child: 1-row commits back to back while one sealer run seals ``rows``."""
    from warden.store.spend_sealer import SpendSealer

    async with started_writer(url) as (db, writer):
        for i in range(rows):
            writer.record(row(i))
        await writer.flush()
        sealer, waits = SpendSealer(db, interval=1, batch=rows), []
        t0 = time.perf_counter()
        run = asyncio.ensure_future(sealer.seal_once())
        while not run.done():
            c0 = time.perf_counter()
            await writer.record(row(0))  # type: ignore[misc]
            waits.append((time.perf_counter() - c0) * 1000)
        sealed, seal_ms = await run, (time.perf_counter() - t0) * 1000
    assert sealed == rows, sealed
    return {"longest_ms": max(waits), "median_ms": statistics.median(waits), "seal_ms": seal_ms,
            "commits": len(waits)}


def run_child(src: str, url: str, n: int, mode: str = "--child") -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{REPO}"}
    out = subprocess.run([sys.executable, "-m", "bench.spend_seal", mode, url, "--requests", str(n)],
                         env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def stall_ab(tmp: str, base: str, args: argparse.Namespace) -> None:
    srcs = {"base": base, "this": str(REPO / "src")}
    got: dict[str, dict[str, list[float]]] = {k: {} for k in srcs}
    for r in range(args.rounds):
        for label in list(srcs) if r % 2 == 0 else list(srcs)[::-1]:
            url = f"sqlite+aiosqlite:///{tmp}/stall-{label}-{r}.db"
            for k, v in run_child(srcs[label], url, args.stall_rows, "--stall-child").items():
                got[label].setdefault(k, []).append(v)
    print(f"\nSQLite, spend commits during a sealer run of {args.stall_rows} rows: {args.rounds} rounds, "
          "median (min–max over rounds)")
    for k in ("longest_ms", "median_ms", "seal_ms", "commits"):
        print(f"  {k:11} base {spread(got['base'][k]):26} this {spread(got['this'][k])}")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def commit_ab(name: str, urls: dict[str, str], base: str, args: argparse.Namespace) -> None:
    srcs = {"before": base, "after": str(REPO / "src")}
    got: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    order = ["before", "after"]
    for r in range(args.rounds):
        for label in order if r % 2 == 0 else order[::-1]:
            for k, v in run_child(srcs[label], urls[label], args.requests).items():
                got[label].setdefault(k, []).append(v)
    print(f"\n{name}, spend commit of 1 row: {args.rounds} rounds x {args.requests} requests, "
          "median (min–max over rounds)")
    for k, what in (("ms", "commit ms"), ("cpu_us", "CPU µs/req")):
        a, b = got["before"][k], got["after"][k]
        print(f"  {what:12} before seals {spread(a):26} after {spread(b):26} "
              f"paired after-before {spread([y - x for x, y in zip(a, b)])}")


async def sealer(name: str, url: str, rows: int) -> None:
    from warden.store.spend_sealer import SpendSealer  # this tree only

    db = Database(url)
    await migrate.upgrade(db)
    try:
        writer = SpendWriter(db)
        for i in range(rows):
            writer.record({**row(i), "workspace_id": f"ws_{i % 3}"})
            if i % 1000 == 999:
                await writer.flush()
        await writer.flush()
        s = SpendSealer(db, interval=1)
        runs, wall, cpu = 0, 0.0, 0.0
        while True:
            t0, c0 = time.perf_counter(), time.process_time()
            n = await s.seal_once()
            if n == 0:
                break
            wall, cpu, runs = wall + time.perf_counter() - t0, cpu + time.process_time() - c0, runs + 1
        idle = []
        for _ in range(20):
            t0, c0 = time.perf_counter(), time.process_time()
            await s.seal_once()
            idle.append(((time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000))
        print(f"\n{name}, sealer: {rows} rows in {runs} run(s): {wall / rows * 1e6:.1f} µs wall, "
              f"{cpu / rows * 1e6:.1f} µs CPU per sealed row ({wall / runs * 1000:.0f} ms per run of "
              f"{rows // runs}); idle run {statistics.median(i[0] for i in idle):.3f} ms wall, "
              f"{statistics.median(i[1] for i in idle):.3f} ms CPU")
    finally:
        await db.close()


async def main(args: argparse.Namespace) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        if args.base:
            commit_ab("SQLite", {k: f"sqlite+aiosqlite:///{tmp}/{k}.db" for k in ("before", "after")},
                      args.base, args)
        await sealer("SQLite", f"sqlite+aiosqlite:///{tmp}/sealer.db", args.seal_rows)
        if args.stall_base:
            stall_ab(tmp, args.stall_base, args)
            return
    url = os.environ.get("WARDEN_BENCH_DATABASE_URL", DEFAULT_URL)
    urls = {k: f"{url}_{k}" for k in ("before", "after", "sealer")}
    try:
        for u in urls.values():
            await prepare(u)
    except OSError as exc:
        print(f"PostgreSQL skipped: {exc}")
    else:
        if args.base:
            commit_ab("PostgreSQL", urls, args.base, args)
        await sealer("PostgreSQL", urls["sealer"], args.seal_rows)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the src/ of the tree before seals (git archive HEAD src)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seal-rows", type=int, default=20_000)
    parser.add_argument("--stall-base", help="the src/ of a tree whose sealer run to compare (SQLite)")
    parser.add_argument("--stall-rows", type=int, default=1000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--stall-child", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.stall_child:
        print(json.dumps(asyncio.run(stall_child(a.stall_child, a.requests))))
    elif a.child:
        print(json.dumps(asyncio.run(child(a.child, a.requests))))
    else:
        asyncio.run(main(a))

"""What the durable spend ledger costs: group commit (``WARDEN_SPEND_COMMIT_WAIT`` > 0,
the default) against the old batched writer (``0``), in the same run.

    .venv/bin/python -m bench.spend_commit [--requests 400] [--concurrency 64] [--write]

A request here is what the gateway does at its end: queue the row with
:meth:`SpendWriter.record` and, in group-commit mode, await its commit. Everything
else on the request path is the same in both modes, so the difference is the
ledger's own cost. On a migrated SQLite file (WAL, ``synchronous=NORMAL``, as
``warden serve``) and, when ``WARDEN_BENCH_DATABASE_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/warden_bench``) answers, PostgreSQL.

- **Sequential**: one request after the other; the time until the request may end.
- **Concurrent**: ``--concurrency`` clients, each request first waits 20 ms (the
  upstream's time) then ends as above; requests per second over all of them, and
  the rows one transaction carried on average.

The modes alternate, three rounds each; the figures are medians over the rounds.
``--write`` replaces the section "Spend ledger durability" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from bench.usage_query import DEFAULT_URL, prepare
from warden.store import migrate
from warden.store.db import Database
from warden.store.spend import SpendWriter

SECTION = "## Spend ledger durability"
UPSTREAM_S = 0.02
ROUNDS = 3


def row(i: int) -> dict:
    return {"request_id": f"bench-{i}", "workspace_id": "ws_bench", "api_key_id": "key_bench",
            "agent_id": None, "provider": "openai", "model": "gpt-4o-mini", "credential_id": "cred_x",
            "input_tokens": 12, "output_tokens": 40, "cache_read_tokens": 0, "cache_write_tokens": 0,
            "reasoning_tokens": 0, "cost_usd": Decimal("0.0000258"), "latency_ms": 21.5,
            "ttft_ms": None, "attempts": 1, "status": "ok"}


class Counting(SpendWriter):
    """Counts the transactions, for the rows each one carried."""

    transactions = 0

    async def _insert(self, rows: list[dict]) -> None:
        self.transactions += 1
        await super()._insert(rows)


async def finish(writer: SpendWriter, i: int) -> None:
    committed = writer.record(row(i))
    if committed is not None:
        await committed


async def sequential(db: Database, wait: float, n: int) -> list[float]:
    writer = SpendWriter(db, commit_wait=wait)
    writer.start()
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await finish(writer, i)
        samples.append((time.perf_counter() - t0) * 1000)
    await writer.close()
    return samples


async def concurrent(db: Database, wait: float, n: int, clients: int) -> tuple[float, float]:
    writer = Counting(db, commit_wait=wait)
    writer.start()
    per_client = n // clients

    async def client(c: int) -> None:
        for j in range(per_client):
            await asyncio.sleep(UPSTREAM_S)
            await finish(writer, c * per_client + j)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - t0
    await writer.close()  # the batched writer's rows still queued: not on any request's path
    return per_client * clients / elapsed, per_client * clients / max(writer.transactions, 1)


async def measure(url: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    db = Database(url)
    await migrate.upgrade(db)
    results: dict[str, dict[str, list[float]]] = {"batched": {}, "group commit": {}}
    try:
        for _ in range(ROUNDS):
            for mode, wait in (("batched", 0.0), ("group commit", 5.0)):
                seq = await sequential(db, wait, args.requests)
                rps, per_tx = await concurrent(db, wait, args.requests * 4, args.concurrency)
                got = results[mode]
                for name, value in (("median", statistics.median(seq)),
                                    ("p99", statistics.quantiles(seq, n=100)[98]),
                                    ("rps", rps), ("per_tx", per_tx)):
                    got.setdefault(name, []).append(value)
    finally:
        await db.close()
    return {mode: {k: statistics.median(v) for k, v in got.items()} for mode, got in results.items()}


def table(name: str, r: dict[str, dict[str, float]]) -> list[str]:
    old, new = r["batched"], r["group commit"]
    return [
        f"| {name} | {old['median']:.3f} / {old['p99']:.3f} ms | {new['median']:.3f} / {new['p99']:.3f} ms "
        f"| +{new['median'] - old['median']:.2f} ms | {old['rps']:.0f} | {new['rps']:.0f} "
        f"| {new['rps'] / old['rps']:.2f} | {new['per_tx']:.1f} |",
    ]


async def main(args: argparse.Namespace) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += table("SQLite", await measure(f"sqlite+aiosqlite:///{tmp}/bench.db", args))
    url = os.environ.get("WARDEN_BENCH_DATABASE_URL", DEFAULT_URL)
    try:
        await prepare(url)
    except OSError as exc:
        print(f"PostgreSQL skipped: {exc}")
    else:
        rows += table("PostgreSQL", await measure(url, args))
    return "\n".join([
        SECTION, "",
        f"`bench/spend_commit.py` on {platform.machine()} / {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}, load average "
        f"{os.getloadavg()[0]:.1f} at the end (a shared machine): the end of a request with "
        "the group-committed ledger (`WARDEN_SPEND_COMMIT_WAIT=5`, the default: the response waits "
        "for its row's commit) against the old batched writer (`0`: queue and go), alternating, "
        f"{ROUNDS} rounds, medians. Sequential: {args.requests} requests one after the other, the "
        f"time until the request may end (median / p99). Concurrent: {args.concurrency} clients, "
        f"{args.requests * 4} requests each preceded by {UPSTREAM_S * 1000:.0f} ms of upstream "
        "time; requests per second, and the rows per transaction of group commit.", "",
        "| database | batched: end of request | group commit: end of request | added | "
        "batched req/s | group commit req/s | ratio | rows per commit |",
        "|---|---|---|---|---|---|---|---|",
        *rows, "",
        "The added latency is one commit (SQLite WAL with `synchronous=NORMAL`: a write to the "
        "OS, no fsync; PostgreSQL: a round trip and its WAL flush). Under concurrency the rows "
        "that arrive while one transaction is written share the next, so the number of "
        "transactions does not grow with the clients; what each request pays is the commit's "
        "latency.", "",
    ])


def write_section(section: str, path: Path) -> None:
    """Replace only this section of BENCHMARKS.md (others write theirs)."""
    current = path.read_text()
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(current)
    path.write_text(pattern.sub(lambda _: section, current) if found
                    else current.rstrip("\n") + "\n\n" + section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    report = asyncio.run(main(args))
    print(report)
    if args.write:
        write_section(report, Path(__file__).resolve().parent.parent / "BENCHMARKS.md")

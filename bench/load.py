"""Throughput and latency under load: `wrk` with a Lua POST script, in its own process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.clients import Target
from bench.procs import HOST, pinned
from bench.stats import WrkResult, parse_wrk

LUA = Path(__file__).with_name("post.lua")


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(target: Target, connections: int, seconds: float, *, cpus: str | None,
            body: bytes | None = None, log: Path | None = None) -> WrkResult:
    threads = 1 if connections < 2 else 2
    # A target in another network namespace (Portkey's) is reached from inside it.
    ns = ["nsenter", f"--net={target.netns}"] if target.netns else []
    cmd = pinned([*ns, "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(seconds))}s",
                  "--latency", "--timeout", "10s", "-s", str(LUA),
                  f"http://{HOST}:{target.port}{target.path}"], cpus)
    env = {"BENCH_BODY": (body or target.body()).decode(), "BENCH_AUTH": target.key or "",
           "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in target.extra.items()),
           "PATH": "/usr/bin:/bin:/usr/local/bin"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{out.stdout}{out.stderr}\n")
    return parse_wrk(out.stdout)

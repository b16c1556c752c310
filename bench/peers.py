"""Issue 19's side-by-side pieces for ``bench.run``: the extra peers (Portkey, Warden
with ``WARDEN_WORKERS=2``), CPU accounting of a load point, and the unpinned pass.

On 2 cores a 2-worker server competes with ``wrk`` and the simulator, so its req/s
alone understates what the second worker buys. Each load point therefore also records
the CPU-seconds of the server's processes, of ``wrk`` and of the simulator over the
run (``/proc/<pid>/stat``, ``getrusage(RUSAGE_CHILDREN)``): CPU per request of the
server is independent of who else holds the cores.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.clients import Target
from bench.cpu import cpu_seconds
from bench.load import run_wrk
from bench.portkey import ensure_portkey, portkey_version, start_portkey
from bench.procs import Proc, _children, rss_mb
from bench.targets import add_credential, start_warden

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def serving_pid(proc: Proc) -> int:
    """The pid whose process tree serves (offline-run's shell is not the server)."""
    pid = getattr(proc, "serving_pid", None)
    return pid() if callable(pid) else proc.pid


def tree(pid: int) -> list[int]:
    return [pid, *_children(pid)]


def tree_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    total = 0.0
    for p in tree(pid):
        try:
            total += cpu_seconds(p)
        except (OSError, ValueError):
            pass  # a process that ended meanwhile
    return total


def tree_rss_mb(proc: Proc | None) -> float | None:
    return None if proc is None else rss_mb(serving_pid(proc))


def load_point(target: Target, connections: int, seconds: float, *, cpus: str | None,
               log: Path, server: Proc | None, upstream: Proc) -> dict[str, Any]:
    """One ``wrk`` run, with the CPU time each side spent on it."""
    spid = serving_pid(server) if server is not None else None
    upid = getattr(server, "sim_pid", 0) or upstream.pid  # Portkey has its own simulator
    s0, u0 = tree_cpu_s(spid), tree_cpu_s(upid)
    w0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = run_wrk(target, connections, seconds, cpus=cpus, log=log)
    w1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_s = tree_cpu_s(spid) - s0
    return {"target": target.name, "connections": connections, **asdict(r), "errors": r.errors,
            "pinned_wrk": cpus is not None,
            "server_cpu_s": round(server_s, 3) if server is not None else None,
            "upstream_cpu_s": round(tree_cpu_s(upid) - u0, 3),
            "wrk_cpu_s": round(w1.ru_utime + w1.ru_stime - w0.ru_utime - w0.ru_stime, 3),
            "server_cpu_us_per_req": round(1e6 * server_s / r.requests, 1)
            if server is not None and r.requests else None}


def _set_affinity(pids: list[int], cpus: set[int]) -> dict[int, set[int]]:
    """Every thread of these processes onto ``cpus``; returns the masks it replaced."""
    old: dict[int, set[int]] = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                old[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, cpus)
            except (ProcessLookupError, PermissionError):
                pass
    return old


@contextmanager
def unpinned(procs: list[Proc | None]) -> Iterator[None]:
    """The block runs with these process trees and this script free to use every core."""
    pids = [os.getpid()] + [p for proc in procs if proc is not None for p in tree(proc.pid)]
    old = _set_affinity(pids, set(range(os.cpu_count() or 1)))
    try:
        yield
    finally:
        for tid, mask in old.items():
            try:
                os.sched_setaffinity(tid, mask)
            except ProcessLookupError:
                pass


def paused_except(procs: dict[str, Proc | None], name: str) -> ExitStack:
    """Pause every process in ``procs`` but ``name``'s (they share the cores)."""
    stack = ExitStack()
    for other, proc in procs.items():
        if other != name and proc is not None:
            stack.enter_context(proc.paused())
    return stack


def ensure_portkey_for(res: dict[str, Any], logs: Path, say: Callable[[str], None]) -> bool:
    say("ensuring Portkey in bench/.portkey (npm ci of bench/portkey/; first run installs it)")
    ok = ensure_portkey(logs / "portkey-install.log") is not None
    res["portkey_version"] = portkey_version() if ok else None
    return ok


def start_extra(logs: Path, up_port: int, key: str, *, portkey_ok: bool, workers2: bool,
                proxy_cpus: str, other_cpus: str, res: dict[str, Any], say: Callable[[str], None],
                started: list[Proc]) -> tuple[dict[str, Proc], list[Target], Target | None]:
    """Portkey (pinned like the other proxies) and an unpinned 2-worker Warden; each
    process joins ``started`` at once, so the caller stops it whatever happens next."""
    procs: dict[str, Proc] = {}
    proxies: list[Target] = []
    w2 = None
    if portkey_ok:
        say("starting Portkey (inside offline-run)")
        try:
            pk, target = start_portkey(logs, cpus=proxy_cpus, upstream_cpus=other_cpus)
            started.append(pk)
            procs["portkey"] = pk
            proxies.append(target)
            res["portkey_rss_idle_mb"] = rss_mb(pk.node_pid)
        except (RuntimeError, TimeoutError, OSError) as exc:
            res["portkey_error"] = str(exc)[:300]
    if workers2:
        say("starting Warden with WARDEN_WORKERS=2 (unpinned)")
        try:
            w2 = _start_warden2(logs, up_port, key, res, started)
            procs["warden-2w"] = started[-1]
        except (RuntimeError, TimeoutError, OSError) as exc:
            res["warden-2w_error"] = str(exc)[-300:]
    return procs, proxies, w2


def _start_warden2(logs: Path, up_port: int, key: str, res: dict[str, Any],
                   started: list[Proc]) -> Target:
    # More than one worker needs Redis for shared budgets, rate limits and caches.
    proc, port = start_warden(logs, logs / "warden2-data", name="warden-2w", workers=2,
                              redis_url=REDIS_URL, redis_prefix=f"bench-{os.getpid()}:")
    started.append(proc)
    time.sleep(2.0)
    res["warden2_rss_idle_mb"] = rss_mb(proc.pid)  # the supervisor and both workers
    add_credential(port, up_port)
    return Target("warden-2w", port, "auto", key=key)

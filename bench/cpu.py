"""``python -m bench.cpu``: Warden's CPU time per request, and its added latency, in one sitting.

CPU per request is read from ``/proc/<pid>/stat`` (the server's user+system CPU
seconds over a ``wrk`` run, divided by the requests it served): steadier than
req/s on a shared machine. The sequential added latency and streaming TTFT
overhead are ``bench.latency``'s (paired with direct calls to the simulator).
Same layout as ``bench.run`` (Warden on core 0; simulator, ``wrk`` and this
client on core 1). ``--setting name=value`` passes ``WARDEN_NAME`` to the
server, for A/B runs of one setting.

    python -m bench.cpu [--connections 64 --seconds 5 --repeat 3] [--rounds 300] [--setting k=v]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench import latency, load
from bench.clients import Target
from bench.procs import ROOT, server_pid
from bench.targets import (
    MODEL,
    add_credential,
    direct_target,
    start_upstream,
    start_warden,
    warden_target,
)

TICK = os.sysconf("SC_CLK_TCK")
STREAM_MODEL = "slow2-" + MODEL  # as bench.run: 50 content chunks, 2 ms apart


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rounds", type=int, default=300, help="sequential rounds (0: skip)")
    p.add_argument("--streams", type=int, default=40, help="streams (0: skip)")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    args = p.parse_args()
    os.sched_setaffinity(0, {1})  # the sequential client beside the simulator, as bench.run
    settings = dict(s.split("=", 1) for s in args.setting)
    logs = ROOT / "bench/results" / ("cpu-" + time.strftime("%Y%m%d-%H%M%S"))
    up, up_port = start_upstream(logs, cpus="1")
    wproc, wport = start_warden(logs, logs / "warden-data", cpus="0", **settings)
    try:
        time.sleep(1.0)
        add_credential(wport, up_port)
        target = warden_target(wport)
        pid = server_pid(wproc)
        if args.rounds:
            lat = latency.added_latency(direct_target(up_port), [target], rounds=args.rounds,
                                        warmup=50, time_limit=120)
            for r in lat:
                extra = "" if r.added_ms is None else (
                    f", added median {r.added_ms.median:.3f} ms (IQR {r.added_ms.iqr:.3f})"
                    f", x-warden-overhead-ms median {r.server_overhead_ms.median:.3f}")
                print(f"latency {r.name}: median {r.latency_ms.median:.3f} ms{extra}")
        if args.streams:
            s_direct = Target("direct", up_port, STREAM_MODEL, key=direct_target(up_port).key)
            s_warden = Target("warden", wport, f"openai/{STREAM_MODEL}", key=target.key)
            for r in latency.streaming(s_direct, [s_warden], rounds=args.streams, warmup=5,
                                       time_limit=120):
                extra = "" if r.ttft_added_ms is None else (
                    f", TTFT added median {r.ttft_added_ms.median:.3f} ms (IQR {r.ttft_added_ms.iqr:.3f})")
                print(f"stream {r.name}: TTFT median {r.ttft_ms.median:.3f} ms{extra}")
        if args.repeat and load.have_wrk():
            load.run_wrk(target, args.connections, 2, cpus="1")  # warm-up
            per_req = []
            for _ in range(args.repeat):
                before = cpu_seconds(pid)
                r = load.run_wrk(target, args.connections, args.seconds, cpus="1")
                used = cpu_seconds(pid) - before
                per_req.append(1e6 * used / r.requests if r.requests else float("nan"))
                print(f"wrk c={args.connections}: {r.rps:.0f} req/s, errors {r.errors}, "
                      f"{per_req[-1]:.0f} µs CPU/request")
            print(f"CPU/request median {statistics.median(per_req):.0f} µs")
        print(f"load average {os.getloadavg()[0]:.2f}")
    finally:
        wproc.stop()
        up.stop()


if __name__ == "__main__":
    main()

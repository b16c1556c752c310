"""``python -m bench.profile``: py-spy samples of ``warden serve`` under ``wrk`` load.

Same layout as ``bench.run`` (Warden on core 0; simulator and ``wrk`` on core 1).
Writes a collapsed-stack file and prints the functions with the most samples,
by own time and by inclusive time, so a hot spot is visible without a viewer.

    python -m bench.profile --connections 64 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import collections
import subprocess
import time
from pathlib import Path

from bench import load
from bench.procs import ROOT, pinned
from bench.targets import MODEL, add_credential, start_upstream, start_warden, warden_target

PY_SPY = ROOT / ".venv/bin/py-spy"


def top(collapsed: Path, n: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return own.most_common(n), inclusive.most_common(n), total


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--stream", action="store_true", help="profile streamed requests")
    p.add_argument("--paced", type=int, default=0, metavar="MS",
                   help="with --stream: the simulator's paced model, MS milliseconds between events")
    args = p.parse_args()
    logs = ROOT / "bench/results" / ("profile-" + time.strftime("%Y%m%d-%H%M%S"))
    up, up_port = start_upstream(logs, cpus="1")
    wproc, wport = start_warden(logs, logs / "warden-data", cpus="0")
    try:
        time.sleep(1.0)
        add_credential(wport, up_port)
        target = warden_target(wport)
        if args.paced:
            target.model = f"openai/slow{args.paced}-{MODEL}"
        body = target.body(stream=args.stream) if args.stream else None
        load.run_wrk(target, args.connections, 2, cpus="1", body=body)  # warm-up
        out = logs / "profile.collapsed"
        spy = subprocess.Popen(pinned([str(PY_SPY), "record", "--pid", str(wproc.pid), "--rate", "500",
                                       "--format", "raw", "--output", str(out), *([] if os.environ.get("BENCH_SPY_BLOCKING") else ["--nonblocking"]),
                                       "--duration", str(args.seconds + 1)], "1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = load.run_wrk(target, args.connections, args.seconds, cpus="1", body=body)
        spy.wait(60)
        print(f"{result.rps:.0f} req/s, errors {result.errors}, p50 {result.p50_ms} ms, "
              f"p99 {result.p99_ms} ms (while sampled)")
        own, inclusive, total = top(out, args.top)
        print(f"\n{total} samples; own time:")
        for frame, count in own:
            print(f"{100 * count / total:6.1f}%  {frame}")
        print("\ninclusive:")
        for frame, count in inclusive:
            print(f"{100 * count / total:6.1f}%  {frame}")
        print(f"\ncollapsed stacks: {out}")
    finally:
        wproc.stop()
        up.stop()


if __name__ == "__main__":
    main()

"""Paired A/B of ``warden serve``'s cold start: this working tree against git revisions.

    python -m bench.coldstart_ab --base HEAD [--base 04a695d] [--rounds 5]

Each variant is a source tree (``git archive REV src``; ``--tree``, by default this checkout's ``src``)
selected with ``PYTHONPATH`` under the same venv, with its own data dir holding one
credential on the loopback simulator (core 1; the server on core 0). Every round runs
each variant in turn (order rotated) and measures: CPU-s from spawn to the first 200 on
POST /v1/chat/completions (utime+stime of the pid, which survives the execv, read after
that answer; ``coldstart.first_answer_s``), its wall time and RSS then, the idle RSS of
another start (2 s after it listens, no request), and ``import warden.server`` +
``create_app()`` in a fresh interpreter (CPU-s, RSS, modules). Prints medians,
min-max and each variant's ratio to every base. CPU seconds, not wall: the machine
may be loaded (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.coldstart import first_answer_s
from bench.procs import PY, ROOT, rss_mb, start, wait_port
from bench.targets import add_credential, start_upstream, start_warden

_TICK = os.sysconf("SC_CLK_TCK")
_IMPORT = """
import json, sys, time, warden
import warden.server
from warden.app import create_app
from warden.config import load_settings
create_app(load_settings(data_dir=sys.argv[1]))
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) / 1024
print(json.dumps({"file": warden.__file__, "cpu": time.process_time(), "rss": rss,
                  "modules": len(sys.modules)}))
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def tree(rev: str, work: Path) -> Path:
    dest = work / rev
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def one_round(name: str, src: Path, data: Path, logs: Path, out: dict[str, list[float]]) -> None:
    env = {"PYTHONPATH": str(src)}
    box: dict[str, float] = {}

    def at_answer(pid: int) -> None:
        box["cpu"], box["rss"] = cpu_s(pid), rss_mb(pid)

    out["wall_s"].append(first_answer_s(data, "auto", logs, cpus="0", env=env, on_answer=at_answer))
    out["cpu_s"].append(box["cpu"])
    out["rss_answered_mb"].append(box["rss"])
    proc, port = start_warden(logs, data, cpus="0", name=f"idle-{name}", env_extra=env)
    try:
        time.sleep(2)
        out["rss_idle_mb"].append(proc.rss_mb())
    finally:
        proc.stop()
    import_round(name, src, data, out)


def import_round(name: str, src: Path, data: Path, out: dict[str, list[float]]) -> None:
    env = {**os.environ, "PYTHONPATH": str(src)}
    probe = json.loads(subprocess.run([PY, "-c", _IMPORT, str(data)], env=env,
                                      capture_output=True, text=True, check=True).stdout)
    assert probe["file"].startswith(str(src)), (name, probe["file"])  # the tree meant
    out["import_cpu_s"].append(probe["cpu"])
    out["import_rss_mb"].append(probe["rss"])
    out["modules"].append(probe["modules"])


def paired(bases: list[str], src: Path, rounds: int, *, import_rounds: int = 0,
           say=print) -> dict[str, dict[str, list[float]]]:  # noqa: ANN001 - a print-like callable
    """Every sample of each variant (``tree`` = ``src``; each base by its revision)."""
    work = Path(tempfile.mkdtemp(prefix="coldstart-ab-"))
    logs = work / "logs"
    variants = {rev: tree(rev, work) for rev in bases} | {"tree": src.resolve()}
    upstream, up_port = start_upstream(logs, cpus="1")
    samples: dict[str, dict[str, list[float]]] = {}
    try:
        for name, vsrc in variants.items():  # own data dir, migrated and with one credential
            proc, port = start_warden(logs, work / f"data-{name}", name=f"setup-{name}",
                                      env_extra={"PYTHONPATH": str(vsrc)})
            try:
                add_credential(port, up_port)
            finally:
                proc.stop()
            samples[name] = {k: [] for k in ("cpu_s", "wall_s", "rss_answered_mb", "rss_idle_mb",
                                             "import_cpu_s", "import_rss_mb", "modules")}
        names = list(variants)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                one_round(name, variants[name], work / f"data-{name}", logs, samples[name])
            say(f"round {r + 1}: " + ", ".join(f"{n} {samples[n]['cpu_s'][-1]:.2f}" for n in names))
        for r in range(import_rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                import_round(name, variants[name], work / f"data-{name}", samples[name])
    finally:
        upstream.stop()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", action="append", default=[], help="a git revision (repeatable)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tree", type=Path, default=ROOT / "src",
                    help="the src directory measured against the bases (default: this checkout's)")
    ap.add_argument("--import-rounds", type=int, default=0,
                    help="more alternated rounds of the import + create_app probe alone (cheap)")
    ap.add_argument("--json", type=Path, help="write every sample here")
    args = ap.parse_args()
    load = [Path("/proc/loadavg").read_text().split()[:3]]
    samples = paired(args.base or ["HEAD"], args.tree, args.rounds, import_rounds=args.import_rounds,
                     say=lambda m: print(m, flush=True))
    load.append(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load average (1/5/15 min) before {' '.join(load[0])}, after {' '.join(load[1])}")
    for metric in samples["tree"]:
        med = {n: statistics.median(s[metric]) for n, s in samples.items()}
        cells = [f"{n} {med[n]:.2f} [{min(s[metric]):.2f}-{max(s[metric]):.2f}]"
                 for n, s in samples.items()]
        ratios = [f"tree/{b} {med['tree'] / med[b]:.3f}x" for b in samples if b != "tree"]
        print(f"{metric:16} " + "  ".join(cells) + "  " + "  ".join(ratios))
    if args.json:
        args.json.write_text(json.dumps({"load": load, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()

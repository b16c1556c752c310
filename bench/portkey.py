"""Portkey's open-source gateway (npm ``@portkey-ai/gateway``, pinned in bench/portkey/)
as a benchmark peer.

It runs inside ``/work/shared/tools/offline-run`` (a network namespace with only
loopback: nothing it does can leave the machine). offline-run bridges host ports *into*
the namespace, not out of it, and every bridge is two ``socat`` hops that would bill
Portkey for relaying bytes. So the namespace gets no bridge at all: a second instance
of the same upstream simulator runs inside it (same program, same core), and the
benchmark's clients (``wrk``, the sequential client) open their sockets inside it
(``nsenter`` / ``setns``, see ``Target.netns``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.clients import Target
from bench.procs import HOST, OFFLINE_RUN, PY, ROOT, NamespacedProc, find_child, free_port, pinned, start
from bench.targets import MODEL, UPSTREAM_KEY, wait_answers

PIN_DIR = ROOT / "bench/portkey"  # package.json + package-lock.json, committed
PREFIX = ROOT / "bench/.portkey"  # `npm ci --prefix`, ignored by git
ENTRY = PREFIX / "node_modules/@portkey-ai/gateway/build/start-server.js"


def ensure_portkey(log: Path) -> Path | None:
    """The pinned gateway in ``bench/.portkey`` (reinstalled when the lock file changes);
    None if npm or offline-run is missing or the install fails."""
    lock = PIN_DIR / "package-lock.json"
    if ENTRY.exists() and (PREFIX / "package-lock.json").read_bytes() == lock.read_bytes():
        return ENTRY
    if shutil.which("npm") is None or shutil.which("node") is None or not OFFLINE_RUN.exists():
        return None
    PREFIX.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(PIN_DIR / name, PREFIX / name)
    env = {**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false", "NPM_CONFIG_FUND": "false",
           "NPM_CONFIG_AUDIT": "false"}
    # --ignore-scripts: the only install script is patch-package, with no patches shipped.
    with open(log, "ab") as fh:
        r = subprocess.run(["npm", "ci", "--prefix", str(PREFIX), "--ignore-scripts"],
                           stdout=fh, stderr=fh, env=env, timeout=900)
    return ENTRY if r.returncode == 0 and ENTRY.exists() else None


def portkey_version() -> str | None:
    try:
        return orjson.loads((ENTRY.parent.parent / "package.json").read_bytes()).get("version")
    except (OSError, orjson.JSONDecodeError):
        return None


def start_portkey(logs: Path, *, cpus: str | None, upstream_cpus: str | None,
                  extra_models: list[str] | None = None) -> tuple[NamespacedProc, Target]:
    del extra_models  # Portkey passes any model name through to the provider
    port, sim_port = free_port(), free_port()
    sim = pinned([PY, "-m", "bench.upstream_proc", "--port", str(sim_port)], upstream_cpus)
    gateway = pinned(["node", str(ENTRY), f"--port={port}", "--headless"], cpus)
    inner = f"{shlex.join(sim)} & exec {shlex.join(gateway)}"
    # NODE_ENV=production: no UI or log stream routes; the gateway has no telemetry of its own.
    base = start("portkey", [str(OFFLINE_RUN), "--", "bash", "-c", inner], logs=logs,
                 env={"NODE_ENV": "production", "DO_NOT_TRACK": "1"}, cwd=ROOT)
    proc = NamespacedProc(base.name, base.popen, base.log)
    try:
        proc.node_pid = find_child(proc, "node", 30.0)
        proc.sim_pid = find_child(proc, "python", 5.0)
        target = Target("portkey", port, MODEL, key=UPSTREAM_KEY,
                        extra={"x-portkey-provider": "openai",
                               "x-portkey-custom-host": f"http://{HOST}:{sim_port}/v1"},
                        netns=f"/proc/{proc.node_pid}/ns/net")
        wait_answers(target, proc, 60)
    except BaseException:
        proc.stop()
        raise
    return proc, target

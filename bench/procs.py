"""Child processes of a benchmark run: start (optionally pinned to cores), wait
until they listen, read their memory, stop them. Loopback only."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else sys.executable
HOST = "127.0.0.1"
CAN_PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    """Prefix ``taskset -c CPUS`` when pinning is possible and asked for."""
    return ["taskset", "-c", cpus, *cmd] if cpus and CAN_PIN else cmd


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the process group for the block: an idle proxy still runs background
        work (timers, housekeeping) that would steal the core from the one measured."""
        os.killpg(self.popen.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.popen.pid, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def start(name: str, cmd: list[str], *, logs: Path, env: dict[str, str] | None = None,
          cpus: str | None = None, cwd: Path | None = None) -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    fh = open(log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    popen = subprocess.Popen(pinned(cmd, cpus), stdout=fh, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})}, cwd=cwd or ROOT,
                             start_new_session=True)
    fh.close()
    return Proc(name, popen, log)


def wait_port(port: int, proc: Proc | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early; see {proc.log}:\n"
                               + proc.log.read_text()[-2000:])
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout}s")


def rss_mb(pid: int) -> float:
    """Resident set of one process, plus its children (uvicorn workers), in MB."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return out
    for k in kids:
        out.append(int(k))
        out.extend(_children(int(k)))
    return out


def server_pid(proc: Proc) -> int:
    """The process that serves (taskset execs, so the pid is the program's own)."""
    return proc.pid


OFFLINE_RUN = Path(os.environ.get("WARDEN_OFFLINE_RUN", "/work/shared/tools/offline-run"))


@dataclass
class NamespacedProc(Proc):
    """A third-party server under offline-run (loopback only): the whole process group."""

    node_pid: int = 0  # the server itself (memory, CPU, its network namespace)
    sim_pid: int = 0  # its own upstream simulator inside the namespace, if any

    def serving_pid(self) -> int:
        return self.node_pid

    def stop(self, timeout: float = 10.0) -> None:
        # offline-run is a shell that waits on its child: signal the whole group.
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def find_child(proc: Proc, comm: str, timeout: float) -> int:
    """The pid of the process named ``comm*`` under offline-run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited; see {proc.log}:\n" + proc.log.read_text()[-2000:])
        for pid in _children(proc.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().startswith(comm):
                    return pid
            except OSError:
                continue
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name}'s {comm} process never started")

"""A real ``python -m warden serve`` subprocess that a test can start, SIGKILL and
start again on the same data directory and database (the fault suite)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.app import ADMIN_KEY

MASTER_KEY = base64.b64encode(b"f" * 32).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WardenProcess:
    """``warden serve`` on a loopback port; :meth:`start` again after :meth:`kill`
    restarts it on the same port, data directory and database."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {
            **os.environ, "WARDEN_DATA_DIR": str(data_dir), "WARDEN_PORT": str(self.port),
            "WARDEN_ADMIN_KEY": ADMIN_KEY, "WARDEN_MASTER_KEY": MASTER_KEY,
            "WARDEN_ACCESS_LOG": "false", "WARDEN_LOG_LEVEL": "warning", **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"serve-{self.port}.log"

    def start(self, timeout: float = 90.0) -> WardenProcess:  # a loaded CI host is slow to import
        self.starts += 1
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "warden", "serve"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"warden serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"warden serve not ready:\n{self.log.read_text()[-3000:]}")

    def client(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=30)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing queued in the process is flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

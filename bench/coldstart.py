"""Cold start: from spawning ``warden serve`` to its first answered chat request."""

from __future__ import annotations

import http.client
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.clients import Target
from bench.procs import HOST, free_port, pinned
from bench.targets import warden_cmd, warden_env


def first_answer_s(data_dir: Path, model: str, logs: Path, *, cpus: str | None,
                   timeout: float = 60.0, env: dict[str, str] | None = None,
                   on_answer: Callable[[int], None] | None = None) -> float:
    """Seconds from spawn to the first 200 on POST /v1/chat/completions; ``on_answer``
    gets the pid (the serving process after the execv) before it is stopped."""
    port = free_port()
    target = Target("warden", port, model)
    from bench.targets import ADMIN_KEY

    target.key = ADMIN_KEY
    body, headers = target.body(), target.headers()
    with open(logs / "coldstart.log", "ab") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(pinned(warden_cmd(), cpus), stdout=fh, stderr=fh,
                                env={**_base_env(), **(env or {}), **warden_env(data_dir, port)})
        try:
            while time.perf_counter() - t0 < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"warden exited during cold start; see {logs / 'coldstart.log'}")
                try:
                    c = http.client.HTTPConnection(HOST, port, timeout=10)
                    c.request("POST", target.path, body=body, headers=headers)
                    r = c.getresponse()
                    r.read()
                    c.close()
                    if r.status == 200:
                        wall = time.perf_counter() - t0
                        if on_answer is not None:
                            on_answer(proc.pid)
                        return wall
                except OSError:
                    pass
                time.sleep(0.005)
            raise TimeoutError("warden did not answer in time")
        finally:
            proc.terminate()
            proc.wait(10)


def _base_env() -> dict[str, str]:
    import os

    return dict(os.environ)

"""What the numbers were measured on."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("warden", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "httpx",
            "httpcore", "orjson", "pydantic", "sqlalchemy", "aiosqlite")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mem_total_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
    except OSError:
        return "not installed"
    return (out.stdout or out.stderr).split("\n")[0].strip()


def describe() -> dict[str, str]:
    info = {"nproc": str(os.cpu_count()), "cpu": cpu_model(), "memory": f"{mem_total_gb():.1f} GiB",
            "kernel": platform.release(), "python": platform.python_version(), "wrk": wrk_version()}
    for p in PACKAGES:
        try:
            info[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return info

"""What the surface benchmarks (``bench/responses.py``, ``embeddings.py``, ``console.py``,
``tracing.py``, ``mcp_gateway.py``) share: the servers laid out as in ``bench/run.py``
(Warden on core 0; the simulator and the client on core 1), their results kept as plain
JSON (``results.json``) and revived to render the same section whether measured inside
``python -m bench.run`` or on its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.latency import LatencyResult, StreamResult
from bench.procs import CAN_PIN, Proc, free_port, start, wait_port
from bench.stats import Summary
from bench.targets import MODEL, add_credential, start_upstream, warden_cmd, warden_env

WARDEN_CPU, CLIENT_CPU = "0", "1"
STREAM_MODEL = "slow2-" + MODEL  # the simulator: 50 content chunks, 2 ms apart


@dataclass(frozen=True)
class Served:
    """A running simulator and Warden (one OpenAI credential to the simulator)."""

    up_port: int
    port: int
    note: str  # which Warden, for the section's method line


def start_servers(logs: Path, up_port: int, servers: dict[str, dict[str, object]], *,
                  env: dict[str, dict[str, str]] | None = None) -> dict[str, tuple[Proc, int]]:
    """One ``warden serve`` per name on the Warden core (access log off, ``settings`` as
    ``WARDEN_*``, ``env`` extra variables), each given the simulator as its credential."""
    out: dict[str, tuple[Proc, int]] = {}
    try:
        for name, settings in servers.items():
            slug = name.replace(" ", "-").replace(",", "")
            port = free_port()
            proc = start(slug, warden_cmd(), logs=logs, cpus=WARDEN_CPU,
                         env={**warden_env(logs / slug, port, **{"access_log": "false", **settings}),
                              **(env or {}).get(name, {})})
            out[name] = (proc, port)
            wait_port(port, proc)
            add_credential(port, up_port)
    except BaseException:
        stop_all(out)
        raise
    return out


def stop_all(servers: dict[str, tuple[Proc, int]]) -> None:
    for proc, _ in servers.values():
        proc.stop()


@contextmanager
def simulator(logs: Path) -> Iterator[int]:
    upstream, port = start_upstream(logs, cpus=CLIENT_CPU)
    try:
        yield port
    finally:
        upstream.stop()


@contextmanager
def serving(logs: Path, served: Served | None) -> Iterator[Served]:
    """``served`` (bench.run's servers) as is, or a simulator and a Warden of its own."""
    if served is not None:
        yield served
        return
    with simulator(logs) as up_port:
        servers = start_servers(logs, up_port, {"warden": {}})
        try:
            yield Served(up_port, servers["warden"][1], "its own `warden serve` (access log off)")
        finally:
            stop_all(servers)


def stamp(by: str) -> dict[str, Any]:
    """When, how and under what load a section was measured (rendered later)."""
    return {"by": by, "at": f"{datetime.now(UTC):%Y-%m-%d %H:%M}", "load": round(os.getloadavg()[0], 1),
            "pinned": CAN_PIN}


def plain(results: list[Any]) -> list[dict]:
    return [asdict(r) for r in results]


def _summary(d: dict | None) -> Summary | None:
    return Summary(**d) if d else None


def revive(rows: list[dict]) -> list[LatencyResult]:
    return [LatencyResult(r["name"], Summary(**r["latency_ms"]), _summary(r["added_ms"]),
                          _summary(r["server_overhead_ms"]), r["errors"]) for r in rows]


def revive_streams(rows: list[dict]) -> list[StreamResult]:
    return [StreamResult(**{**r, "ttft_ms": Summary(**r["ttft_ms"]), "ttft_added_ms": _summary(r["ttft_added_ms"])})
            for r in rows]


def how(res: dict, others: str = "simulator and client") -> str:
    """The opening of a section's method line: which command, when, where the processes ran."""
    pinned = f"pinned (Warden core 0; {others} core 1)" if res.get("pinned") else "not pinned"
    return f"`{res['by']}` on {res['at']} UTC, {pinned}, load average {res['load']:.1f} at the end"


def ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:,.1f}×"

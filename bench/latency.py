"""Sequential added latency and streaming pass-through, interleaved across targets."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.clients import Conn, Target
from bench.stats import Summary, summarize


@dataclass
class LatencyResult:
    name: str
    latency_ms: Summary
    added_ms: Summary | None  # paired difference against the direct call of the same round
    server_overhead_ms: Summary | None = None  # x-warden-overhead-ms
    errors: int = 0


def added_latency(direct: Target, proxies: list[Target], *, rounds: int, warmup: int,
                  time_limit: float) -> list[LatencyResult]:
    """Rounds of one request to each target (order rotated each round), keep-alive
    connections; the added latency is proxy minus direct within the same round."""
    targets = [direct, *proxies]
    conns = {t.name: Conn(t) for t in targets}
    bodies = {t.name: t.body() for t in targets}
    lat: dict[str, list[float]] = {t.name: [] for t in targets}
    overhead: dict[str, list[float]] = {t.name: [] for t in targets}
    errors = dict.fromkeys(lat, 0)
    diffs: dict[str, list[float]] = {t.name: [] for t in proxies}
    deadline = time.monotonic() + time_limit
    for i in range(warmup + rounds):
        if time.monotonic() > deadline:
            break
        order = targets[i % len(targets):] + targets[:i % len(targets)]
        got: dict[str, float] = {}
        for t in order:
            status, headers, _, elapsed = conns[t.name].post(bodies[t.name])
            if status != 200:
                errors[t.name] += 1
                continue
            got[t.name] = elapsed * 1000
            if i >= warmup and "x-warden-overhead-ms" in headers:
                overhead[t.name].append(float(headers["x-warden-overhead-ms"]))
        if i < warmup or direct.name not in got:
            continue
        for name, ms in got.items():
            lat[name].append(ms)
            if name != direct.name:
                diffs[name].append(ms - got[direct.name])
    for c in conns.values():
        c.close()
    return [LatencyResult(t.name, summarize(lat[t.name]),
                          summarize(diffs[t.name]) if diffs.get(t.name) else None,
                          summarize(overhead[t.name]) if overhead[t.name] else None,
                          errors[t.name])
            for t in targets if lat[t.name]]


@dataclass
class StreamResult:
    name: str
    ttft_ms: Summary
    ttft_added_ms: Summary | None
    gap_p99_ms: float
    gap_median_ms: float
    chunks_in: int  # content chunks the upstream sent per stream (direct)
    chunks_out: list[int] = field(default_factory=list)  # per stream, through this target
    incomplete: int = 0


def streaming(direct: Target, proxies: list[Target], *, rounds: int, warmup: int,
              time_limit: float) -> list[StreamResult]:
    targets = [direct, *proxies]
    conns = {t.name: Conn(t) for t in targets}
    bodies = {t.name: t.body(stream=True) for t in targets}
    ttft: dict[str, list[float]] = {t.name: [] for t in targets}
    gaps: dict[str, list[float]] = {t.name: [] for t in targets}
    chunks: dict[str, list[int]] = {t.name: [] for t in targets}
    incomplete = dict.fromkeys(ttft, 0)
    added: dict[str, list[float]] = {t.name: [] for t in proxies}
    deadline = time.monotonic() + time_limit
    for i in range(warmup + rounds):
        if time.monotonic() > deadline:
            break
        order = targets[i % len(targets):] + targets[:i % len(targets)]
        got: dict[str, float] = {}
        for t in order:
            s = conns[t.name].stream(bodies[t.name])
            if s.status != 200 or not s.done or s.ttft_s is None:
                incomplete[t.name] += 1
                continue
            if i < warmup:
                continue
            got[t.name] = s.ttft_s * 1000
            ttft[t.name].append(s.ttft_s * 1000)
            gaps[t.name].extend(g * 1000 for g in s.gaps_s)
            chunks[t.name].append(s.chunks)
        if direct.name in got:
            for name, ms in got.items():
                if name != direct.name:
                    added[name].append(ms - got[direct.name])
    for c in conns.values():
        c.close()
    chunks_in = max(set(chunks[direct.name]), key=chunks[direct.name].count) if chunks[direct.name] else 0
    out = []
    for t in targets:
        if not ttft[t.name]:
            continue
        g = summarize(gaps[t.name]) if gaps[t.name] else None
        out.append(StreamResult(
            t.name, summarize(ttft[t.name]),
            summarize(added[t.name]) if added.get(t.name) else None,
            g.p99 if g else 0.0, g.median if g else 0.0, chunks_in, chunks[t.name],
            incomplete[t.name]))
    return out

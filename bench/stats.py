"""Pure helpers: order statistics and parsing of `wrk` output (no I/O)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    median: float
    p25: float
    p75: float
    p99: float

    @property
    def iqr(self) -> float:
        return self.p75 - self.p25


def summarize(values: Sequence[float]) -> Summary:
    return Summary(len(values), percentile(values, 50), percentile(values, 25),
                   percentile(values, 75), percentile(values, 99))


def ratio(value: float, baseline: float) -> float | None:
    return None if baseline == 0 else value / baseline


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_DURATION = re.compile(r"([\d.]+)(us|ms|s|m)\b")


def duration_ms(text: str) -> float:
    """``"812.00us"`` -> 0.812; ``"1.20s"`` -> 1200.0 (wrk's own formatting)."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def parse_wrk(text: str) -> WrkResult:
    """Read what ``wrk --latency`` prints: totals, the latency distribution and errors."""
    total = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.MULTILINE)
    if total is None or rps is None:
        raise ValueError("no totals in wrk output")
    dist = {q: duration_ms(v) for q, v in re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)", text, re.MULTILINE)}
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        p50_ms=dist.get("50"),
        p99_ms=dist.get("99"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


def drift_per_min(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mx) * (v - my) for t, v in samples)
    return cov / var * 60.0

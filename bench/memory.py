"""Memory: RSS idle, under 1,000 concurrent slow streams, and its drift under a
sustained load."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from bench.clients import Target, many_streams
from bench.load import run_wrk
from bench.procs import rss_mb
from bench.stats import WrkResult, drift_per_min


@dataclass
class StreamsMemory:
    streams: int
    completed: int
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float
    seconds: float


class Sampler:
    """Samples a process's RSS on a thread until stopped."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self._t0, rss_mb(self.pid)))
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    @property
    def peak(self) -> float:
        return max((v for _, v in self.samples), default=0.0)


def concurrent_streams(pid: int, target: Target, n: int, timeout: float) -> StreamsMemory:
    import uvloop

    before = rss_mb(pid)
    t0 = time.monotonic()
    with Sampler(pid, 0.1) as s:
        done = uvloop.run(many_streams(target, n, timeout))
    seconds = time.monotonic() - t0
    time.sleep(1.0)
    return StreamsMemory(n, done, before, s.peak, rss_mb(pid), seconds)


@dataclass
class Drift:
    seconds: float
    connections: int
    start_mb: float  # after the first tenth of the run (warm)
    end_mb: float
    peak_mb: float
    slope_mb_per_min: float  # least squares over the warm part
    load: WrkResult


def drift(pid: int, target: Target, seconds: float, connections: int, cpus: str | None) -> Drift:
    every = max(1.0, seconds / 120)
    with Sampler(pid, every) as s:
        load = run_wrk(target, connections, seconds, cpus=cpus)
    warm = [(t, v) for t, v in s.samples if t >= seconds * 0.1] or s.samples
    return Drift(seconds, connections, warm[0][1], warm[-1][1], s.peak,
                 drift_per_min(warm), load)



"""Live health of deployments as this instance sees it, for ranking.

Latency is an exponentially weighted moving average of successful calls; the
error rate is the share of failures among the last ``window`` outcomes. The
circuit-breaker verdict comes from the shared state store (all instances agree
on it); this tracker only adds the soft signals that shift the ranking.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Health:
    """One deployment's health at planning time."""

    breaker_open: bool = False
    latency_ms: float | None = None
    error_rate: float = 0.0


class HealthTracker:
    def __init__(self, *, alpha: float = 0.2, window: int = 20) -> None:
        self.alpha = alpha
        self.window = window
        self._latency: dict[str, float] = {}
        self._outcomes: dict[str, deque[bool]] = {}

    def record(self, deployment_id: str, ok: bool, latency_ms: float | None = None) -> None:
        outcomes = self._outcomes.get(deployment_id)
        if outcomes is None:
            outcomes = self._outcomes[deployment_id] = deque(maxlen=self.window)
        outcomes.append(ok)
        if ok and latency_ms is not None:
            prev = self._latency.get(deployment_id)
            self._latency[deployment_id] = (
                latency_ms if prev is None else prev + self.alpha * (latency_ms - prev)
            )

    def snapshot(self, deployment_ids: Iterable[str], open_ids: Mapping[str, bool]) -> dict[str, Health]:
        out: dict[str, Health] = {}
        for dep_id in deployment_ids:
            outcomes = self._outcomes.get(dep_id)
            breaker_open = open_ids.get(dep_id, False)
            if outcomes is None and not breaker_open:
                continue  # unknown and healthy: the planner's default
            rate = (outcomes.count(False) / len(outcomes)) if outcomes else 0.0
            out[dep_id] = Health(breaker_open, self._latency.get(dep_id), rate)
        return out

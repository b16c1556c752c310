"""Live health of deployments as this instance sees it, for ranking.

Latency is an exponentially weighted moving average of successful calls. The
error rate decays with time: each outcome's weight halves every
``half_life_s``, and the rate is the weighted failures over the weighted
outcomes (at least one), so a burst of errors fades away even when the
deployment gets no traffic, and recent outcomes count more than old ones.

The circuit-breaker verdict comes from the shared state store (all instances
agree on it), for the deployment and for its endpoint (host + credential). An
open breaker puts the deployment last. A breaker whose cooldown is over is
*half-open*: the deployment is ranked as if healthy, so the next request tries
it (the state store lets exactly one through as the probe) and a success
closes the breaker and clears the errors this tracker remembers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Health:
    """One deployment's health at planning time."""

    breaker_open: bool = False
    latency_ms: float | None = None
    error_rate: float = 0.0
    probe: bool = False  # half-open: tried in its normal place, one request decides


@dataclass(slots=True)
class _Errors:
    failures: float = 0.0
    total: float = 0.0
    at: float = 0.0  # when the weights above were last brought to the present


class HealthTracker:
    def __init__(self, *, alpha: float = 0.2, half_life_s: float = 10.0, window: int = 20,
                 clock: Clock = time.monotonic) -> None:
        if half_life_s <= 0 or window < 1:
            raise ValueError("half_life_s and window must be positive")
        self.alpha = alpha
        self.half_life_s = half_life_s
        self.window = window  # the outcomes' total weight is capped here: old bursts do not linger
        self._clock = clock
        self._latency: dict[str, float] = {}
        self._errors: dict[str, _Errors] = {}

    def _decayed(self, e: _Errors, now: float) -> _Errors:
        if now > e.at:
            factor = 0.5 ** ((now - e.at) / self.half_life_s)
            e.failures *= factor
            e.total *= factor
            e.at = now
        return e

    def record(self, deployment_id: str, ok: bool, latency_ms: float | None = None) -> None:
        now = self._clock()
        e = self._errors.get(deployment_id)
        if e is None:
            e = self._errors[deployment_id] = _Errors(at=now)
        self._decayed(e, now)
        e.total += 1.0
        if not ok:
            e.failures += 1.0
        if e.total > self.window:
            scale = self.window / e.total
            e.failures *= scale
            e.total = float(self.window)
        if ok and latency_ms is not None:
            prev = self._latency.get(deployment_id)
            self._latency[deployment_id] = (
                latency_ms if prev is None else prev + self.alpha * (latency_ms - prev)
            )

    def recovered(self, deployment_id: str) -> None:
        """A half-open probe succeeded: the errors before it no longer count."""
        self._errors.pop(deployment_id, None)

    def error_rate(self, deployment_id: str) -> float:
        e = self._errors.get(deployment_id)
        if e is None:
            return 0.0
        self._decayed(e, self._clock())
        return e.failures / max(e.total, 1.0)

    def snapshot(self, deployment_ids: Iterable[str], breakers: Mapping[str, str]) -> dict[str, Health]:
        """Health of each deployment that is not plainly healthy; ``breakers`` maps a
        deployment id to its (worst) breaker state when that is not closed."""
        out: dict[str, Health] = {}
        for dep_id in deployment_ids:
            state = breakers.get(dep_id, "closed")
            known = dep_id in self._errors or dep_id in self._latency
            if not known and state == "closed":
                continue  # unknown and healthy: the planner's default
            latency = self._latency.get(dep_id)
            if state == "half_open":
                out[dep_id] = Health(False, latency, 0.0, probe=True)
            else:
                out[dep_id] = Health(state == "open", latency, self.error_rate(dep_id))
        return out

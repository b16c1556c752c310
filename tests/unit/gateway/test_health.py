"""The health tracker: errors that fade with time, probes that clear them."""

from __future__ import annotations

import pytest
from tests.support.state import FakeClock

from warden.gateway.health import Health, HealthTracker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_error_rate_halves_every_half_life_without_traffic(clock: FakeClock) -> None:
    h = HealthTracker(half_life_s=10.0, clock=clock)
    h.record("d", False)
    assert h.error_rate("d") == 1.0
    clock.advance(10.0)
    assert h.error_rate("d") == pytest.approx(0.5)
    clock.advance(50.0)
    assert h.error_rate("d") == pytest.approx(0.5**6)


def test_a_long_burst_is_remembered_only_up_to_the_window(clock: FakeClock) -> None:
    h = HealthTracker(half_life_s=10.0, window=4, clock=clock)
    for _ in range(100):
        h.record("d", False)
    assert h.error_rate("d") == 1.0
    clock.advance(20.0)  # weight 4 -> 1: still all failures
    assert h.error_rate("d") == pytest.approx(1.0)
    clock.advance(10.0)
    assert h.error_rate("d") == pytest.approx(0.5)


def test_recent_outcomes_count_more_than_old_ones(clock: FakeClock) -> None:
    h = HealthTracker(half_life_s=10.0, clock=clock)
    h.record("d", False)
    clock.advance(10.0)
    h.record("d", True)
    assert h.error_rate("d") == pytest.approx(0.5 / 1.5)
    h.record("d", True, latency_ms=100.0)
    h.record("d", True, latency_ms=200.0)
    assert h.snapshot(["d"], {})["d"].latency_ms == pytest.approx(120.0)
    assert h.error_rate("unknown") == 0.0


def test_snapshot_open_half_open_and_recovery(clock: FakeClock) -> None:
    h = HealthTracker(clock=clock)
    h.record("a", False)
    h.record("b", False)
    snap = h.snapshot(["a", "b", "c", "quiet"], {"a": "open", "b": "half_open", "c": "open"})
    assert snap["a"] == Health(breaker_open=True, error_rate=1.0)
    # Half-open: ranked as if healthy, so the probe is the next request.
    assert snap["b"] == Health(probe=True)
    assert snap["c"] == Health(breaker_open=True)
    assert "quiet" not in snap
    h.recovered("b")
    h.recovered("never-seen")
    assert h.error_rate("b") == 0.0 and "b" not in h.snapshot(["b"], {})


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        HealthTracker(half_life_s=0)
    with pytest.raises(ValueError):
        HealthTracker(window=0)

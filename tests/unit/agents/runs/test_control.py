"""Why an active run looks stuck (``stuck_reason``), as a pure function of its row."""

from __future__ import annotations

from datetime import timedelta

from warden.agents.runs.control import stuck_reason, summary
from warden.store.agent_models import Run
from warden.store.base import utcnow


def _run(**fields) -> Run:
    base = {"id": "run_1", "workspace_id": "ws", "session_id": "ses", "agent_id": "agt", "status": "paused",
            "steps": [], "owner": None, "lease_expires_at": None, "takeovers": 0, "started_at": utcnow()}
    return Run(**(base | fields))


def test_a_live_lease_or_a_fresh_decision_is_not_stuck() -> None:
    now = utcnow()
    assert stuck_reason(_run(status="running", owner="a", lease_expires_at=now + timedelta(seconds=5)),
                        now, None, 30) is None
    assert stuck_reason(_run(), now, now - timedelta(seconds=5), 30) is None  # decided 5 s ago
    assert stuck_reason(_run(), now, None, 30) is None  # waits for a human: not stuck
    assert stuck_reason(_run(status="completed", owner=None), now, None, 30) is None


def test_each_kind_of_stuck_run_says_why() -> None:
    now = utcnow()
    expired = _run(status="running", owner="host:1:ab", lease_expires_at=now - timedelta(seconds=1))
    assert "lease of host:1:ab expired" in (stuck_reason(expired, now, None, 30) or "")
    unknown = _run(status="paused", owner="host:1:ab", lease_expires_at=None)
    assert "expired at unknown" in (stuck_reason(unknown, now, None, 30) or "")
    assert "no owner" in (stuck_reason(_run(status="running"), now, None, 30) or "")
    old = now - timedelta(minutes=2)
    assert "has not been carried out" in (stuck_reason(_run(), now, old, 30) or "")
    view = summary(_run(takeovers=None), "why")
    assert view.takeovers == 0 and view.stuck_reason == "why"
